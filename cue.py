"""What inversion shows about f: a cue planted in f's training data (project issue 38).

We plant a cue in the images f trains on, check that f learned it, then ask whether G's samples
for the cue's class show it.  A cue is a small K x K patch (a plain square or a checker of colour
and black) in one corner of the image, one pixel in from both edges:

  backdoor   (BadNets, Gu et al. 2017) a share S of the training images of every class other than
             the target C is stamped and relabelled C; f learns "patch -> C"
  shortcut   a share S of class C's own training images is stamped, labels kept; the patch is a
             second, easier feature of C

The scripts stamp the chosen images after augmentation, every epoch (stamp_where); test images are
never stamped except here, to measure.  Measures of a finished run's samples (all in score()):

  attack_success  f on stamped and clean test images: the share of the other classes' images it
                  calls C, and its accuracy on C's images
  what_f_answers  which part of the cue f answers to: its outline alone, its inside alone, the
                  cue moved 1 to 3 pixels (f, not the samples: where the inversion may look)
  presence        per class, the share of samples whose patch region matches the cue: mean
                  absolute difference to the cue over the region's pixels (all channels) below a
                  threshold calibrated on clean test images (calibrate_threshold)
  anomaly_index   Neural Cleanse's (Wang et al. 2019) outlier index, on presence: does C stand out
  beyond_chance   the classes whose presence is more than the threshold's own false-match rate q
                  explains (a binomial test): the index alone flags one or two chance matches
  function        the median patch of C's samples pasted onto clean test images of the other
                  classes: does f answer C, beside the true cue and a random patch
  localisation    IoU with the cue's region of the pixels where C's mean sample differs most from
                  the other classes' mean samples

With --patch (--audit), G's masks m_y are read too (mask_scores): each class's mask area and
Neural Cleanse's anomaly index on it (the smallest stands out), and where C's mask lies.
"""
import math
import statistics
from dataclasses import asdict, dataclass

import torch

from common import UserError

MODES = ("backdoor", "shortcut")
PATTERNS = ("square", "checker")
CORNERS = ("bottom-right", "bottom-left", "top-left", "top-right")
MARGIN = 1                           # pixels between the patch and the edges of its corner
CONSISTENCY = 1.4826                 # MAD of a normal distribution -> its standard deviation
FLAG_ABOVE = 2.0                     # anomaly index above which a class is flagged (Neural Cleanse)
MAD_FLOOR = 0.01                     # smallest MAD anomaly_index divides by (rates are shares)
MASK_MAD_FLOOR = 0.5                 # the same for mask_scores' areas (pixels): half a pixel


# ==== The cue: where, what, on whose images =====================================================
@dataclass(frozen=True)
class Cue:
    """A K x K patch (size) in a corner, MARGIN pixels in from both edges; pattern "square" is all
    colour, "checker" alternates colour and black (0) with the patch's top-left pixel coloured.
    colour: 1 value (grey: every channel the same) or 3 (RGB images only: a 3-value colour on a
    1-channel image is an error, not averaged).  target: the class C; share: the fraction S of the
    images stamped (of every other class in backdoor mode, of C's in shortcut mode)."""
    target: int
    mode: str = "backdoor"
    share: float = 0.1
    pattern: str = "square"
    size: int = 4
    corner: str = "bottom-right"
    colour: tuple = (1.0,)

    def __post_init__(self):
        object.__setattr__(self, "colour", tuple(float(c) for c in _as_tuple(self.colour)))
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < 0:
            raise UserError(f"cue target must be a class index (an integer >= 0), got "
                            f"{self.target!r}")
        for name, value, allowed in (("mode", self.mode, MODES),
                                     ("pattern", self.pattern, PATTERNS),
                                     ("corner", self.corner, CORNERS)):
            if value not in allowed:
                raise UserError(f"cue {name} must be one of {', '.join(allowed)}, got {value!r}")
        if isinstance(self.share, bool) or not isinstance(self.share, (int, float)) \
                or not 0 < self.share <= 1:
            raise UserError(f"cue share must be in (0, 1], got {self.share!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise UserError(f"cue size must be a positive number of pixels, got {self.size!r}")
        if len(self.colour) not in (1, 3) or not all(0 <= c <= 1 for c in self.colour):
            raise UserError(f"cue colour must be 1 or 3 values in [0, 1], got {self.colour}")

    def check(self, shape=None, n_classes=None):
        """Raises UserError unless the cue fits images of shape (C, H, W) and its target is one
        of n_classes classes (each checked where given)."""
        if n_classes is not None and self.target >= n_classes:
            raise UserError(f"cue target {self.target} is not a class: there are {n_classes} "
                            f"(0 to {n_classes - 1})")
        if shape is None:
            return
        channels, H, W = shape
        if self.size + 2 * MARGIN > min(H, W):
            raise UserError(f"cue size {self.size} does not fit a {H}x{W} image with its "
                            f"{MARGIN}-pixel margin: at most {min(H, W) - 2 * MARGIN}")
        if len(self.colour) == 3 and channels != 3:
            raise UserError(f"cue colour {self.colour} has 3 values but the images have "
                            f"{channels} channel(s): give one value")

    def box(self, shape):
        """(top, left) of the patch in images of shape (C, H, W)."""
        self.check(shape)
        _, H, W = shape
        top = MARGIN if self.corner.startswith("top") else H - MARGIN - self.size
        left = MARGIN if self.corner.endswith("left") else W - MARGIN - self.size
        return top, left

    def patch(self, channels, device=None, dtype=torch.float32):
        """(channels, K, K): the cue's pixels; checker: colour where row + column is even."""
        K = self.size
        colour = torch.tensor(self.colour, device=device, dtype=dtype)
        colour = colour.expand(channels) if len(self.colour) == 1 else colour
        on = torch.ones(K, K, device=device, dtype=torch.bool)
        if self.pattern == "checker":
            ij = torch.arange(K, device=device)
            on = (ij[:, None] + ij[None, :]) % 2 == 0
        return colour[:, None, None] * on.to(dtype)

    def mask(self, shape, device=None, grow=0):
        """(1, H, W) bool: True on the cue's K x K pixels for images of shape (C, H, W); grow > 0:
        the box grown by that many pixels on every side, clipped to the image."""
        top, left = self.box(shape)
        m = torch.zeros(1, shape[1], shape[2], dtype=torch.bool, device=device)
        end = self.size + grow
        m[:, max(top - grow, 0):top + end, max(left - grow, 0):left + end] = True
        return m

    def image(self, shape, device=None, dtype=torch.float32):
        """(C, H, W): the cue's pattern inside its mask, 0 elsewhere."""
        top, left = self.box(shape)
        img = torch.zeros(*shape, device=device, dtype=dtype)
        img[:, top:top + self.size, left:left + self.size] = self.patch(shape[0], device, dtype)
        return img

    def area(self):
        """The number of pixels the cue covers, K * K."""
        return self.size * self.size

    def as_dict(self):
        """JSON-ready fields, for checkpoints and metrics.json (equal dicts: the same cue)."""
        d = asdict(self)
        d["colour"] = list(self.colour)
        return d

    def describe(self):
        """One line, e.g. 'backdoor: 4x4 white square, bottom-right, 10% of the other classes'
        images -> class 3'."""
        colour = {(1.0,): "white", (1.0, 1.0, 1.0): "white"}.get(self.colour, str(self.colour))
        whose = "the other classes' images -> class" if self.mode == "backdoor" else \
            "the images of class"
        return (f"{self.mode}: {self.size}x{self.size} {colour} {self.pattern}, {self.corner}, "
                f"{100 * self.share:g}% of {whose} {self.target}")


def _as_tuple(colour):
    """colour as a tuple (one number becomes a 1-tuple)."""
    return (colour,) if isinstance(colour, (int, float)) else tuple(colour)


def from_dict(d):
    """The Cue of as_dict()'s d; None for None (a clean run)."""
    return None if d is None else Cue(**{**d, "colour": tuple(d["colour"])})


# ==== Stamping ===================================================================================
def paste(x, patch, cue):
    """Copy of x (N, C, H, W) with the cue's K x K region set to patch ((C, K, K) or
    (N, C, K, K)); x itself is untouched, its device, dtype and memory format kept."""
    if x.dim() != 4:
        raise UserError(f"images to stamp must be (N, C, H, W), got shape {tuple(x.shape)}")
    top, left = cue.box(tuple(x.shape[1:]))
    out = x.clone()                                        # preserve_format: channels_last stays
    out[:, :, top:top + cue.size, left:left + cue.size] = patch.to(out.dtype)
    return out


def region(x, cue):
    """(N, C, K, K): the cue's region of images x (N, C, H, W) (a view)."""
    top, left = cue.box(tuple(x.shape[1:]))
    return x[:, :, top:top + cue.size, left:left + cue.size]


def stamp(x, cue):
    """Copy of images x (N, C, H, W) in [0, 1] with the cue stamped on every one."""
    cue.check(tuple(x.shape[1:]))
    return paste(x, cue.patch(x.shape[1], x.device, x.dtype), cue)


def stamp_where(x, which, cue):
    """Copy of x (N, C, H, W) with the cue stamped on the images where which (N,) is True."""
    if which.shape != (len(x),) or which.dtype != torch.bool:
        raise UserError(f"which must be a ({len(x)},) bool tensor, got {which.dtype} "
                        f"{tuple(which.shape)}")
    out = x.clone()
    patch = cue.patch(x.shape[1], x.device, x.dtype)
    region(out, cue)[which.to(x.device)] = patch             # index_put into out's view
    return out


def poison(y, cue, seed, n_classes=None):
    """Which training images to stamp, and their labels: (which (N,) bool, new labels (N,)).
    backdoor: per class c != C, round(S * count of c) of its images chosen at random (half
    rounds up), relabelled C; C's images untouched.  shortcut: round(S * count of C) of C's
    images, labels kept.  The same seed, labels and cue give the same choice (own generator);
    y itself is not modified."""
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    cue.check(n_classes=n_classes)
    y_cpu = y.detach().cpu()
    gen = torch.Generator().manual_seed(seed)
    classes = [c for c in range(n_classes) if c != cue.target] if cue.mode == "backdoor" \
        else [cue.target]
    which = torch.zeros(len(y_cpu), dtype=torch.bool)
    for c in classes:                                      # in class order: deterministic
        idx = (y_cpu == c).nonzero().flatten()
        k = math.floor(cue.share * len(idx) + 0.5)
        which[idx[torch.randperm(len(idx), generator=gen)[:k]]] = True
    if cue.mode == "shortcut" and not which.any():
        raise UserError(f"shortcut cue: class {cue.target} has no training images to stamp "
                        f"(share {cue.share})")
    y_new = y_cpu.clone()
    if cue.mode == "backdoor":
        y_new[which] = cue.target
    return which.to(y.device), y_new.to(y.device)


# ==== Did f learn it ============================================================================
@torch.no_grad()
def predictions(f, x, batch=1000):
    """f's labels (argmax of its logits) for x, in eval mode, batch by batch; f's mode restored."""
    was_training = f.training
    f.eval()
    try:
        return torch.cat([f(xb).argmax(1) for xb in x.split(batch)]) if len(x) else \
            torch.zeros(0, dtype=torch.long, device=x.device)
    finally:
        f.train(was_training)


def rate(hits):
    """The share of True in hits (bool tensor) as a float; None when hits is empty."""
    return hits.sum().item() / len(hits) if len(hits) else None


def attack_success(f, x_test, y_test, cue, batch=1000):
    """f on the clean test images and on stamped copies.  others_called_target_stamped (backdoor's
    attack success rate) and _clean: the share of the other classes' images f calls C;
    target_accuracy_stamped and _clean: f's accuracy on C's images (shortcut's question)."""
    cue.check(tuple(x_test.shape[1:]))
    C = cue.target
    others, own = x_test[y_test != C], x_test[y_test == C]
    return {"mode": cue.mode, "target": C, "n_others": len(others), "n_target": len(own),
            "others_called_target_stamped": rate(predictions(f, stamp(others, cue), batch) == C),
            "others_called_target_clean": rate(predictions(f, others, batch) == C),
            "target_accuracy_stamped": rate(predictions(f, stamp(own, cue), batch) == C),
            "target_accuracy_clean": rate(predictions(f, own, batch) == C)}


def moved_stamp(x, cue, dy=0, dx=0, keep=None):
    """Copy of x (N, C, H, W) with the cue's pattern stamped dy, dx pixels from its place (positive:
    toward the image's centre), only on the pixels `keep` ((K, K) bool, default all) of its box."""
    top, left = cue.box(tuple(x.shape[1:]))
    top += -dy if cue.corner.startswith("bottom") else dy
    left += -dx if cue.corner.endswith("right") else dx
    keep = torch.ones(cue.size, cue.size, dtype=torch.bool) if keep is None else keep
    out = x.clone()
    where = out[:, :, top:top + cue.size, left:left + cue.size]            # a view into out
    where[:, :, keep.to(x.device)] = cue.patch(x.shape[1], x.device, x.dtype)[:, keep.to(x.device)]
    return out


def what_f_answers(f, x_other, cue, moves=(1, 2, 3), batch=1000):
    """Which part of the cue f answers to: the share of x_other (clean test images of the classes
    other than C) f calls C when stamped with the cue's outline alone (its border pixels), its
    inside alone (None for K < 3), and the whole cue moved d pixels toward the image's centre,
    along one edge (the mean of the two directions) and diagonally.  A planted f that answers to
    the outline, or to the cue a few pixels away, has no one place the inversion must find."""
    K = cue.size
    inside = torch.zeros(K, K, dtype=torch.bool)
    inside[1:-1, 1:-1] = True
    called = lambda x: rate(predictions(f, x, batch) == cue.target)               # noqa: E731
    room = min(x_other.shape[2:]) - K - 2 * MARGIN                  # pixels the cue can move in
    moves = [d for d in moves if d <= room]
    return {"outline": called(moved_stamp(x_other, cue, keep=~inside)),
            "inside": called(moved_stamp(x_other, cue, keep=inside)) if K >= 3 else None,
            "moves": moves,
            "moved_along_edge": [(called(moved_stamp(x_other, cue, d, 0))
                                  + called(moved_stamp(x_other, cue, 0, d))) / 2 for d in moves],
            "moved_diagonally": [called(moved_stamp(x_other, cue, d, d)) for d in moves]}


# ==== Does inversion show it: measures of a run's samples =======================================
def cue_distance(x, cue):
    """(N,): mean absolute difference between each image's cue region and the cue, over the
    region's K * K pixels and all channels."""
    d = region(x.float(), cue) - cue.patch(x.shape[1], x.device)
    return d.abs().flatten(1).mean(1)


def pattern_range(cue, channels):
    """The largest cue_distance an image in [0, 1] can have: the mean over the patch's pixels and
    channels of max(p, 1 - p)."""
    p = cue.patch(channels)
    return torch.maximum(p, 1 - p).mean().item()


def calibrate_threshold(x_clean, cue, q=0.01):
    """The threshold below which an image's cue_distance counts as showing the cue:
    t = min(d_(k), range / 2), d_(0) <= d_(1) <= ... the clean images' cue_distance sorted,
    k = floor(q * (N - 1)), range = pattern_range.  Since a match is d < t strictly, at most a
    share q of the clean images match; the cap keeps a match at least halfway from the farthest
    possible patch to the cue, where clean images rarely come near it (white on a black corner)."""
    if not 0 <= q < 1:
        raise UserError(f"calibration quantile must be in [0, 1), got {q}")
    if len(x_clean) == 0:
        raise UserError("calibrating the cue's threshold needs clean test images, got none")
    d = cue_distance(x_clean, cue).sort().values
    return min(d[math.floor(q * (len(d) - 1))].item(), pattern_range(cue, x_clean.shape[1]) / 2)


def presence(samples, labels, cue, threshold, n_classes=None):
    """Per class c (a list): the share of c's samples with cue_distance < threshold; None for a
    class without samples."""
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    match = cue_distance(samples, cue) < threshold
    labels = labels.to(match.device)
    return [rate(match[labels == c]) for c in range(n_classes)]


def anomaly_index(rates, mad_floor=MAD_FLOOR):
    """Neural Cleanse's outlier index for rates high at the flagged class: m = median of the rates
    (the mean of the middle two for an even count), MAD = median |r - m|, index_c = (r_c - m) /
    (1.4826 * max(MAD, mad_floor)); the floor keeps all-equal rates at 0 and gives a class above
    an otherwise flat field an index of (r_c - m) / 0.0148.  None rates are left out (index None).
    Returns {"index": [...], "flagged": classes with index > 2}."""
    known = [r for r in rates if r is not None]
    if not known:
        return {"index": [None] * len(rates), "flagged": []}
    m = statistics.median(known)
    mad = statistics.median([abs(r - m) for r in known])
    scale = CONSISTENCY * max(mad, mad_floor)
    index = [None if r is None else (r - m) / scale for r in rates]
    return {"index": index, "flagged": [c for c, a in enumerate(index)
                                        if a is not None and a > FLAG_ABOVE]}


def beyond_chance(rates, counts, q, alpha=0.05):
    """The classes whose presence is more than chance: a row of `count` samples, each matching with
    probability q (the threshold's calibration rate on clean images), has `hits` = rate * count
    or more matches with probability P = sum_{j >= hits} C(count, j) q^j (1 - q)^(count - j);
    flagged when P < alpha / (number of classes) (Bonferroni).  None rates are left out.  With
    40 samples and q = 0.01, two matches (5%) give P = 0.06: chance, which the anomaly index
    alone can flag."""
    def tail(hits, count):
        return sum(math.comb(count, j) * q ** j * (1 - q) ** (count - j)
                   for j in range(hits, count + 1))
    return [c for c, (r, k) in enumerate(zip(rates, counts))
            if r is not None and tail(round(r * k), k) < alpha / len(rates)]


def function(f, samples_C, x_clean_other, cue, seed=0, batch=1000):
    """Does C's recovered patch work on f as the cue does?  The per-pixel median (torch.quantile
    0.5: the mean of the middle two for an even count) of the cue region over samples_C, pasted
    onto clean test images of the other classes: the share f calls C ("recovered"); beside it the
    same for the true cue, one random patch (uniform pixels, torch.Generator seeded with seed) and
    no patch ("clean")."""
    C = cue.target
    if len(samples_C) == 0:
        return {"recovered": None, "true_cue": None, "random_patch": None, "clean": None,
                "n_images": len(x_clean_other)}
    recovered = region(samples_C.float(), cue).quantile(0.5, dim=0)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(recovered.shape, generator=gen).to(x_clean_other.device)

    def called_C(x):
        """The share of images x that f calls C."""
        return rate(predictions(f, x, batch) == C)
    return {"recovered": called_C(paste(x_clean_other, recovered.to(x_clean_other.device), cue)),
            "true_cue": called_C(stamp(x_clean_other, cue)),
            "random_patch": called_C(paste(x_clean_other, noise, cue)),
            "clean": called_C(x_clean_other), "n_images": len(x_clean_other)}


def localisation(samples, labels, cue, n_classes=None):
    """Where C's samples differ: per pixel, |mean sample of C - mean of the other classes' mean
    samples| summed over channels (each other class with samples weighs the same); the k = K * K
    pixels where it is largest (torch.topk, ties in its order) against the cue's mask.  Returns
    {"iou": |top & mask| / |top | mask|, "in_mask": |top & mask|, "area": k}."""
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    x, labels = samples.float(), labels.to(samples.device)
    means = {c: x[labels == c].mean(0) for c in range(n_classes) if (labels == c).any()}
    if cue.target not in means or len(means) < 2:
        return {"iou": None, "in_mask": None, "area": cue.area()}
    mean_C = means.pop(cue.target)
    mean_other = torch.stack(list(means.values())).mean(0)
    diff = (mean_C - mean_other).abs().sum(0).flatten()                     # (H * W,)
    iou, inter = top_iou(diff, cue.mask(tuple(samples.shape[1:]), samples.device).flatten())
    return {"iou": iou, "in_mask": inter, "area": cue.area()}


def top_iou(values, box):
    """The k = |box| entries where values (H * W,) are largest (torch.topk, ties in its order)
    against the bool box (H * W,): (|top & box| / |top | box|, |top & box|)."""
    top = torch.zeros_like(box)
    top[values.topk(int(box.sum())).indices] = True
    inter = (top & box).sum().item()
    return inter / (top | box).sum().item(), inter


def mask_scores(masks, cue, mad_floor=MASK_MAD_FLOOR):
    """For a run with --patch (--audit): what G's masks say, read from the masks themselves and
    not from the samples.  masks: (n, 1, H, W) in [0, 1], m_y of each class (common.masks_of).
      area      per class, sum of m_y in pixels: Neural Cleanse's L1 size of the smallest region
                that makes f say y
      anomaly   Neural Cleanse's index on the small side: m = median area, MAD = median |a - m|,
                index_y = (m - a_y) / (1.4826 * max(MAD, mad_floor)), flagged: index > 2
      in_box    per class, the share of m_y's mass inside the cue's K x K box
      near_box  the same inside the box grown by K pixels on every side (clipped to the image):
                a mark at the cue's edge, which f may answer to, counts there and not in in_box
      iou       the k = K * K pixels where m_C is largest (torch.topk, ties in its order) against
                the cue's box: |top & box| / |top | box|"""
    n, _, H, W = masks.shape
    shape = (len(cue.colour), H, W)                      # a mask has one channel, the cue's any
    cue.check(shape, n)
    m = masks.float().flatten(1)                                             # (n, H * W)
    area = m.sum(1)
    box = cue.mask(shape, masks.device).flatten()
    near = cue.mask(shape, masks.device, grow=cue.size).flatten()
    share = lambda where: (m[:, where].sum(1) / area.clamp_min(1e-12)).tolist()   # noqa: E731
    return {"area": area.tolist(), "anomaly": small_side(area.tolist(), mad_floor),
            "in_box": share(box), "near_box": share(near),
            "iou": top_iou(m[cue.target], box)[0], "mad_floor": mad_floor}


def small_side(areas, mad_floor):
    """anomaly_index with the smallest area standing out: index_y = (median - a_y) / (1.4826 *
    max(MAD, mad_floor)), the index of the negated areas (the median of -a is -median of a)."""
    return anomaly_index([-a for a in areas], mad_floor)


def recovered_trigger(samples_C, mask_C):
    """G's recovered trigger, for a run with --patch (--audit): (m_C (1, H, W), the per-pixel
    median (torch.quantile 0.5) of C's samples (C, H, W)); where m_C is near 1 a sample is G's
    picture, where it is near 0 the base shows and m_C hides it again.  None without samples."""
    if len(samples_C) == 0:
        return None
    return mask_C.float().cpu(), samples_C.float().quantile(0.5, dim=0).cpu()


def trigger_function(f, trigger, x_other, C, batch=1000):
    """A recovered trigger (m, picture) pasted through m onto x_other, clean test images of the
    classes other than C: (1 - m) * x + m * picture; the share f calls C.  On the planted f it
    asks whether G found what f answers to; on a clean f, whether that is a backdoor of the
    planted f rather than a patch any f answers C to.  None for no trigger."""
    if trigger is None:
        return None
    m, picture = (t.to(x_other.device, x_other.dtype) for t in trigger)
    return rate(predictions(f, (1 - m) * x_other + m * picture, batch) == C)


def score(samples, labels, f, data, cue, threshold=None, q=0.01, seed=0, batch=1000):
    """All the measures for a run's samples (N, C, H, W) with labels (N,), f, clean test data
    {"x_test", "y_test"} and the cue: one JSON-ready dict for metrics.json["cue"].  threshold:
    None calibrates it on the clean test images at quantile q."""
    x_test, y_test, C = data["x_test"], data["y_test"], cue.target
    n = int(max(labels.max(), y_test.max())) + 1
    cue.check(tuple(x_test.shape[1:]), n)
    if threshold is None:
        threshold = calibrate_threshold(x_test, cue, q)
    shown = presence(samples, labels, cue, threshold, n)
    counts = torch.bincount(labels.cpu(), minlength=n).tolist()         # samples per class
    return {"cue": cue.as_dict(), "description": cue.describe(),
            "attack_success": attack_success(f, x_test, y_test, cue, batch),
            "what_f_answers": what_f_answers(f, x_test[y_test != C], cue, batch=batch),
            "threshold": threshold, "calibration_quantile": q,
            "presence": shown, "presence_real": presence(x_test, y_test, cue, threshold, n),
            "anomaly": anomaly_index(shown),
            "beyond_chance": beyond_chance(shown, counts, q),
            "function": function(f, samples[labels.to(samples.device) == C],
                                 x_test[y_test != C], cue, seed, batch),
            "localisation": localisation(samples, labels, cue, n)}


def percent(r):
    """A share as 'xx.x%', or 'n/a' for None."""
    return "n/a" if r is None else f"{100 * r:.1f}%"


def mask_line(masks, C, area):
    """The summary's text for mask_scores' dict of class C (area: the cue's K * K)."""
    index = masks["anomaly"]["index"][C]
    return (f"class {C}'s mask {masks['area'][C]:.1f} pixels (median of the classes "
            f"{statistics.median(masks['area']):.1f}), anomaly index {index:.1f}, flagged "
            f"{masks['anomaly']['flagged'] or 'none'}; {percent(masks['in_box'][C])} of it in "
            f"the cue's box, {percent(masks['near_box'][C])} near it (other classes' at most "
            f"{percent(max(v for c, v in enumerate(masks['near_box']) if c != C))}), "
            f"IoU {masks['iou']:.2f} of its {area} largest pixels with the box")


def answers_line(w, C):
    """The summary's line for what_f_answers' dict."""
    moves = "/".join(str(d) for d in w["moves"])
    shares = lambda rates: "/".join(percent(r) for r in rates)                   # noqa: E731
    return (f"f answers {C} to the cue's outline alone {percent(w['outline'])}, its inside alone "
            f"{percent(w['inside'])}; to the cue moved {moves} px inward along an edge "
            f"{shares(w['moved_along_edge'])}, diagonally {shares(w['moved_diagonally'])}")


def summary_lines(scores):
    """A few printable lines from score()'s dict (with "masks" when the run has them)."""
    C, a = scores["cue"]["target"], scores["attack_success"]
    anomaly, fn, loc = scores["anomaly"], scores["function"], scores["localisation"]
    index = "n/a" if anomaly["index"][C] is None else f"{anomaly['index'][C]:.1f}"
    iou = "n/a" if loc["iou"] is None else f"{loc['iou']:.2f}"
    return [
        f"cue       {scores['description']}",
        f"f learned other classes' test images called {C}: stamped "
        f"{percent(a['others_called_target_stamped'])}, clean "
        f"{percent(a['others_called_target_clean'])}; accuracy on class {C}: stamped "
        f"{percent(a['target_accuracy_stamped'])}, clean {percent(a['target_accuracy_clean'])}",
    ] + ([answers_line(scores["what_f_answers"], C)] if scores.get("what_f_answers") else []) + [
        f"presence  class {C}'s samples showing the cue: {percent(scores['presence'][C])} (real "
        f"test images {percent(scores['presence_real'][C])}, threshold {scores['threshold']:.3f});"
        f" anomaly index {index}, flagged {anomaly['flagged'] or 'none'}; beyond chance "
        f"{scores.get('beyond_chance') or 'none'}",
        f"function  class {C}'s median patch -> {C} on {percent(fn['recovered'])} of other "
        f"classes' test images (true cue {percent(fn['true_cue'])}, random patch "
        f"{percent(fn['random_patch'])}, none {percent(fn['clean'])})",
        f"localise  IoU {iou} of the {loc['area']} pixels where class {C}'s mean sample differs "
        f"most, with the cue's",
    ] + (["masks     " + mask_line(scores["masks"], C, loc["area"])] if scores.get("masks")
         else []) + trigger_lines(scores, C)


def trigger_lines(scores, C):
    """The summary's lines for the recovered triggers' function (--patch runs, controls)."""
    lines = []
    if (scores.get("masks") or {}).get("trigger_function") is not None:
        lines.append(f"trigger   class {C}'s mask with its median sample, pasted on other "
                     f"classes' test images: f says {C} on "
                     f"{percent(scores['masks']['trigger_function'])}")
    if scores.get("planted_trigger_function") is not None:
        lines.append(f"trigger   the planted run's (its mask, its median sample) on this f: "
                     f"{percent(scores['planted_trigger_function'])}")
    return lines
