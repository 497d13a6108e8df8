"""Measuring an inversion as a user would see it: do the samples look like their class to a
classifier that never trained G, do they differ from one another, how far are they from the data,
and did G capture what f knows?  Each script calls report() once at the end of its run; alone,
this file re-scores a finished run from the files in its --out-dir:

    python measure.py runs/FashionMNIST                 # --data-dir, --device as for the scripts

It writes into the run's folder judge.pt (cached, and with it the score of the student on real
images, below), judge2.pt (the second judge, cached), metrics.json, nearest.png, intensity.png
and losses.png, and prints a summary.
metrics.json["inversion"], for the samples of samples.pt:
  target_accuracy      the fraction f labels as asked (per class too); mean_confidence
  judge_accuracy       the same for the judge: a batch-norm ReLU CNN with average pooling, trained
                       on the same data, never used to train G.  Fooling images score high on
                       target and low here
  diversity_ratio      mean pairwise pixel distance within a class over that of real test images
  feature_cosine       mean cosine of f's features within a class (what L_cos lowers); _real:
                       the same for real test images; feature_cosine_judge(_real): in the
                       judge's features
  recall, coverage     variety where a change of colour cannot flatter it: per class, in the judge's
                       features, samples against as many real test images.  recall (Kynkaanniemi
                       et al. 2019, k = 3): the share of real images inside some sample's ball (its
                       radius the distance to the sample's 3rd nearest sample); coverage (Naeem et
                       al. 2020, k = 5): the share of real images whose ball among the real (5th
                       nearest) holds a sample; _real: one half of the test set against the other
  precision, density   fidelity, read beside them and measured the same way: precision
                       (Kynkaanniemi et al. 2019, k = 3): the share of samples inside some real
                       image's ball among the real (3rd nearest); density (Naeem et al. 2020,
                       k = 5): per sample, how many real images' balls (5th nearest) it lies in,
                       over 5, averaged (about 1 for samples drawn as the real are, more where
                       they crowd); _real: as for recall
  second_judge         judge_accuracy, recall, precision, coverage, density (with _real) as
                       above, in the features of a second judge of another family (residual
                       blocks, strided, global average pooling; out/judge2.pt): a lever counts
                       only where both judges agree
  own_generator_share  with K > 1 generators: per class, the share of each sample's 3 nearest
                       samples (judge's features) made by its own generator; _chance: the share
                       of its class's other samples that are its own (near 1: one picture per
                       generator and class, recall's balls inside it)
  frechet_distance     between the judge's features of the samples and of half of the test images
                       (every label halved, at random from SEED); _real: as many test images of
                       each label as there are samples, from the other half, against the same half
                       (the floor at the samples' size); frechet_reference: stand-ins made of
                       training images (plain, with pixel noise, class means) at the samples' size,
                       against the same half
  nn_distance          mean L2 pixel distance of a sample to its nearest training image
  pieces               grey images: 8-connected pieces above 0.5 per image, the share in one
                       piece, specks (pieces of at most 3 pixels); samples and real test images
  ripple               mean |second difference| of neighbouring pixels down each column and
                       along each row; samples and real test images: stripes across an image
                       raise "down" above the real images' (checkerboards raise both)
metrics.json["inversion_by_margin"]: target, judge, diversity, recall, precision, coverage and
density at several arg-max margins (the margin trades the judge's accuracy against variety), each
margin on fresh samples drawn from the same seed.
Every random draw in measuring starts from SEED, so measuring the same samples twice gives the
same numbers.
metrics.json["distillation"]: distillation from G's samples, how the field scores a generator
trained against a frozen classifier (data-free only where G was: --data-free; the statistics
priors read the training images through f): a fresh student (the judge's architecture)
trained only on G's samples to match f's outputs, tested on the real test images; beside it the
same student, same steps, trained the same way on real training images (it does not depend on
G: its score is kept in judge.pt and reused while f, the student's settings and the device are
the same).
f's own test accuracy (teacher_f) and the students' budget (steps, batch size, images_seen)
beside them.
"""
import argparse
import contextlib
import hashlib
import importlib
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage                        # scipy: in requirements.txt (SVHN needs it too)

import common
import cue

SCRIPTS = {"MNIST": "mnist_inversion", "FashionMNIST": "fashion_inversion",
           "SVHN": "svhn_inversion", "CIFAR10": "cifar10_inversion"}
MARGINS = (None, 0.5, 1.0, 2.0, 4.0)              # inversion_by_margin; None: the draw's own margin
SEED = 0                                          # every random draw in measuring starts from it


# ==== The judge, and training a classifier for measuring =========================================
class Judge(nn.Module):
    """Batch-norm ReLU CNN with average pooling (the scripts' f use LeakyReLU, dropout, fully
    connected layers)."""

    def __init__(self, channels=1, n_classes=10, width=32):
        super().__init__()

        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                    nn.ReLU()]
        self.features = nn.Sequential(
            *block(channels, width), nn.AvgPool2d(2),                       # (w, S/2, S/2)
            *block(width, 2 * width), nn.AvgPool2d(2),                      # (2w, S/4, S/4)
            *block(2 * width, 4 * width), *block(4 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())                          # (4w,)
        self.head = nn.Linear(4 * width, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


class Residual(nn.Module):
    """Two 3x3 convolutions with batch norm, added to the input (a 1x1 convolution where the
    shape changes): the residual block of He et al. 2016."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                   nn.BatchNorm2d(c_out)))

    def forward(self, x):
        return F.relu(self.body(x) + self.skip(x))


class SecondJudge(nn.Module):
    """The second judge, of another family than the first: residual blocks with strided
    down-sampling and global average pooling.  A lever counts only where both judges agree."""

    def __init__(self, channels=1, n_classes=10, width=32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(), Residual(width, width),                              # (w, S, S)
            Residual(width, 2 * width, stride=2),                           # (2w, S/2, S/2)
            Residual(2 * width, 4 * width, stride=2),                       # (4w, S/4, S/4)
            nn.AdaptiveAvgPool2d(1), nn.Flatten())                          # (4w,)
        self.head = nn.Linear(4 * width, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


def fit(model, draw, steps, lr, name):
    """Train model on `steps` batches (x, target) = draw() (target: labels or probabilities), Adam
    with a one-cycle learning rate; a progress line every 15 s.  Returns the model in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    t0 = last = time.time()
    model.train()
    for i in range(steps):
        x, target = draw()
        loss = F.cross_entropy(model(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if time.time() - last > 15:
            last = time.time()
            print(f"  {name} step {i + 1}/{steps}: loss {loss.item():.4f}, "
                  f"{common.eta(t0, i + 1, steps)}")
    return model.eval()


def batches(x, target, size, spec, args):
    """draw() for fit: a random batch of x with its targets, augmented as f's batches are."""
    def draw():
        idx = torch.randint(0, len(x), (size,), device=x.device)
        return (common.augment(x[idx], flip=spec["flip"]) if args.augment else x[idx]), target[idx]
    return draw


def trained_judge(spec, data, args, out, device, second=False):
    """The judge from out/judge.pt (second: SecondJudge, out/judge2.pt), or trained as f is (same
    data, epochs, batch size, learning rate, augmentation; never adversarially) and saved there.
    (judge, test accuracy, seconds training)."""
    judge = (SecondJudge if second else Judge)(data["x_train"].shape[1], len(spec["classes"]),
                                               args.judge_width)
    judge = common.place(judge, device)
    signature = {"dataset": spec["dataset"], "arch": common.architecture(judge),
                 "training": common.f_training(args, adversarial=False)}   # never adversarial
    path = out / ("judge2.pt" if second else "judge.pt")
    if path.exists() and not args.retrain:
        ckpt = common.load_checkpoint(path, "judge", signature)
        common.load_weights(judge, ckpt["model"], path)
        return judge.eval(), ckpt["test_accuracy"], 0.0
    t0, B = time.time(), args.classifier_batch_size
    steps = args.classifier_epochs * max(1, len(data["x_train"]) // B)
    draw = batches(data["x_train"], data["y_train"], B, spec, args)
    name = "second judge" if second else "judge"
    fit(judge, draw, steps, args.classifier_lr, name)
    accuracy = common.accuracy(judge, data["x_test"], data["y_test"])
    print(f"{name}: test accuracy {accuracy:.4f}, {time.time() - t0:.0f}s")
    common.save_checkpoint(path, {"kind": "judge", **signature, "model": judge.state_dict(),
                                  "test_accuracy": accuracy})
    return judge, accuracy, time.time() - t0


def real_student_key(f, args, B, device) -> str:
    """What the student on real training images depends on: f's weights (its targets), how the
    student trains, the device.  Its score is kept in judge.pt under this key and reused."""
    h = hashlib.sha256()
    for name, t in sorted(f.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    how = {k: getattr(args, k) for k in ("distill_steps", "judge_width", "classifier_lr",
                                         "augment", "train_subset", "fake_data", "seed")}
    how |= {"validation": True} if getattr(args, "validation", False) else {}
    h.update(json.dumps({**how, "batch_size": B, "device": device.type}, sort_keys=True).encode())
    return h.hexdigest()


def distillation(spec, G, f, data, args, device, judge_file, f_accuracy):
    """Data-free distillation: fresh students (Judge) trained for --distill-steps batches to match
    f's softmax outputs, on G's samples (conditioned as in training) or on real training images;
    both tested on the real test images, beside f's own accuracy there (teacher_f) and the
    students' budget (steps, batch size, images seen).  judge_file: judge.pt, where the
    real-image student's score is kept for later runs with the same f (it does not depend on
    G)."""
    n, B = len(spec["classes"]), args.classifier_batch_size
    f_probs = lambda x: torch.softmax(f(x), 1)                                      # noqa: E731
    real = batches(data["x_train"], data["y_train"], B, spec, args)

    @torch.no_grad()
    def from_G():
        p, _, H = common.sample_conditioning(B, n, device)
        x = G(torch.randn(B, G.latent_dim, device=device), p, H)
        x = common.augment(x, flip=spec["flip"]) if args.augment else x
        return x, f_probs(x)

    @torch.no_grad()
    def from_data():
        x, _ = real()
        return x, f_probs(x)
    ckpt = common.load_checkpoint(judge_file, "judge", {})
    key, known = real_student_key(f, args, B, device), ckpt.get("real_students", {})
    scores = {}
    for name, draw in (("from_generator", from_G), ("from_training_images", from_data)):
        if name == "from_training_images" and key in known:
            scores[name] = known[key]
            print(f"student from training images: test accuracy {known[key]:.4f}, kept in "
                  f"{judge_file} (the same f and student: not trained again)")
            continue
        torch.manual_seed(args.seed)
        student = common.place(Judge(data["x_train"].shape[1], n, args.judge_width), device)
        fit(student, draw, args.distill_steps, args.classifier_lr,
            f"student {name.replace('_', ' ')}")
        scores[name] = common.accuracy(student, data["x_test"], data["y_test"])
    if key not in known:
        real_score = {key: scores["from_training_images"]}
        common.save_checkpoint(judge_file, {**ckpt, "real_students": {**known, **real_score}})
    return {**scores, "teacher_f": f_accuracy, "steps": args.distill_steps, "batch_size": B,
            "images_seen": args.distill_steps * B, "student": common.architecture(student),
            "real_student_kept": key in known}


# ==== Numbers ====================================================================================
def mean_pairwise_distance(x):
    """Mean L2 distance over pairs i != j of the flattened images (0 for a collapsed batch)."""
    return torch.pdist(x.flatten(1).double()).mean().item() if len(x) > 1 else 0.0


def mean_pairwise_cosine(phi):
    """L_cos, measured: mean cosine similarity over pairs i != j of feature vectors (N, D)."""
    return common.cosine_term(phi).item() if len(phi) > 1 else 0.0


def frechet_distance(a, b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (N, D)."""
    a, b = a.double(), b.double()
    S_a, S_b = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(S_a)
    root_a = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T          # S_a^(1/2)
    middle = torch.linalg.eigvalsh(root_a @ S_b @ root_a).clamp_min(0)    # eig of S_a^½ S_b S_a^½
    mean_part = (a.mean(0) - b.mean(0)).square().sum()
    return (mean_part + S_a.trace() + S_b.trace() - 2 * middle.sqrt().sum()).clamp_min(0).item()


def knn_radius(a, k):
    """Per row of a (N, D): the distance to its k-th nearest other row (the row itself is 0th)."""
    return distances(a, a).kthvalue(k + 1, dim=1).values


def distances(a, b):
    """Euclidean distances of rows, from differences (the same on every CPU), in float64."""
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")


def recall(real, fake, k=3):
    """Kynkaanniemi et al. 2019: the share of real points inside some fake point's ball, its
    radius that fake point's distance to its k-th nearest fake neighbour.  One picture per class
    (recoloured or not) makes those balls tiny: recall near 0."""
    return (distances(real, fake) <= knn_radius(fake, k)[None, :]).any(1).double().mean().item()


def coverage(real, fake, k=5):
    """Naeem et al. 2020: the share of real points whose ball (radius: the distance to the k-th
    nearest real neighbour) holds at least one fake point."""
    return (distances(real, fake).min(1).values <= knn_radius(real, k)).double().mean().item()


def precision(real, fake, k=3):
    """Kynkaanniemi et al. 2019: the share of fake points inside some real point's ball, its
    radius that real point's distance to its k-th nearest real neighbour.  Samples off the real
    data (blurred, fooling, too spread) score low however varied they are."""
    return (distances(fake, real) <= knn_radius(real, k)[None, :]).any(1).double().mean().item()


def density(real, fake, k=5):
    """Naeem et al. 2020: (1 / (k M)) sum_j sum_i 1[fake_j inside real_i's ball] over the M fake
    points, the ball's radius real_i's distance to its k-th nearest real neighbour.  About 1 for
    fakes drawn as the real are; a real outlier's wide ball adds only 1/k for a fake inside it,
    where in precision it would make that fake count in full."""
    inside = distances(fake, real) <= knn_radius(real, k)[None, :]
    return inside.double().sum(1).mean().item() / k


def variety(fake_feats, fake_labels, real_feats, real_labels, n_classes, k_max=5):
    """Recall, precision, coverage and density per class in the judge's features, samples against
    as many real test images (one half of the test set); beside each (_real) the other half
    against it (interleaved halves: a test set may be sorted by class), at the same size m, the
    fewest of the three.  A class with m <= 5 (too few for the balls) is None; the means are over
    the classes measured.  No random draw."""
    A, B = (real_feats[0::2], real_labels[0::2]), (real_feats[1::2], real_labels[1::2])
    measures = {"recall": recall, "precision": precision, "coverage": coverage,
                "density": density}
    per_class = {key: [] for name in measures for key in (name, f"{name}_real")}
    for c in range(n_classes):
        fake, a, b = fake_feats[fake_labels == c], A[0][A[1] == c], B[0][B[1] == c]
        m = min(len(fake), len(a), len(b))
        fake, a, b = fake[:m], a[:m], b[:m]
        for name, measured in measures.items():
            per_class[name].append(measured(a, fake) if m > k_max else None)
            per_class[f"{name}_real"].append(measured(a, b) if m > k_max else None)

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None
    return {**{key: mean(v) for key, v in per_class.items()},
            **{f"per_class_{key}": per_class[key] for key in measures}}


def own_generator(feats, labels, K, n_classes, k=3):
    """With K generators (sample j of each class from generator j mod K, as the scripts draw
    samples.pt): per class, the share of each sample's k nearest other samples in the judge's
    features that its own generator made, beside chance (the share of the class's other samples
    that are its own).  Near 1: each generator draws one picture per class and recall's balls
    stay inside it.  (share, chance), means over the classes with more than k samples; K = 1:
    (None, None)."""
    if K < 2:
        return None, None
    shares, chances = [], []
    for c in range(n_classes):
        a = feats[labels == c]
        m = len(a)
        if m <= k:
            continue
        owner = torch.arange(m, device=a.device) % K
        d = distances(a, a).fill_diagonal_(float("inf"))
        near = d.topk(k, dim=1, largest=False).indices           # (m, k), never the sample itself
        shares.append((owner[near] == owner[:, None]).double().mean().item())
        chances.append(((owner[:, None] == owner[None, :]).sum().item() - m) / (m * (m - 1)))
    if not shares:
        return None, None
    return sum(shares) / len(shares), sum(chances) / len(chances)


def nearest_neighbours(x, x_train, batch=256, candidates=8):
    """For each image in x: the L2 distance to its nearest training image, and that image's index.
    The matrix-product form of the distance (fast, but rounded: an image's distance to itself can
    come out as 0.008) picks candidates; their distances are then taken from the pixel
    differences, so a sample that is a training image is at exactly 0 on every CPU."""
    train, dists, idxs = x_train.flatten(1), [], []
    for chunk in x.flatten(1).split(batch):
        cand = torch.cdist(chunk, train).topk(min(candidates, len(train)), largest=False).indices
        d = (chunk[:, None] - train[cand]).norm(dim=2)                       # (b, candidates)
        best = d.argmin(1, keepdim=True)
        dists.append(d.gather(1, best)[:, 0])
        idxs.append(cand.gather(1, best)[:, 0])
    return torch.cat(dists), torch.cat(idxs)


def pieces(images, threshold=0.5):
    """Per grey image: how many 8-connected pieces its pixels above threshold form, and how many
    of those are specks (at most 3 pixels).  A whole digit or garment is one piece, no specks."""
    counts, specks = [], []
    for image in (images[:, 0] > threshold).cpu().numpy():
        labels, k = ndimage.label(image, structure=[[1, 1, 1]] * 3)
        counts.append(k)
        specks.append(int((torch.bincount(torch.as_tensor(labels).flatten())[1:] <= 3).sum()))
    return torch.tensor(counts, dtype=torch.float), torch.tensor(specks, dtype=torch.float)


def real_like(labels, data):
    """As many real test images of each label as there are samples of it."""
    return torch.cat([data["x_test"][data["y_test"] == c][:int((labels == c).sum())]
                      for c in labels.unique()])


def strokes(images, real):
    """metrics.json["inversion"]["pieces"] for grey images: the samples' mean number of pieces,
    share in one piece, mean specks; the same for the real test images `real` (real_like)."""
    out = {}
    for name, x in (("samples", images), ("real", real)):
        count, speck = pieces(x)
        out.update({f"{name}_pieces": count.mean().item(),
                    f"{name}_one_piece": (count == 1).float().mean().item(),
                    f"{name}_specks": speck.mean().item()})
    return out


def ripple(images, real):
    """metrics.json["inversion"]["ripple"]: the mean |x[i+1] - 2 x[i] + x[i-1]| of neighbouring
    pixels down each column and along each row, for the samples and the real test images `real`
    (real_like)."""
    def second(x, dim):                                  # |x[i+1] - 2 x[i] + x[i-1]| along dim
        return x.float().diff(n=2, dim=dim).abs().mean().item()
    out = {}
    for name, x in (("samples", images), ("real", real)):
        out.update({f"{name}_down": second(x, -2), f"{name}_across": second(x, -1)})
    return out


@torch.no_grad()
def features_of(model, x, batch=1000):
    model.eval()
    return torch.cat([model.features(chunk).flatten(1).float() for chunk in x.split(batch)])


@contextlib.contextmanager
def apart(device, seed):
    """A block whose random draws start from seed and leave the run's random state as it was
    (the CPU's and, on CUDA, the GPU's; on MPS torch.manual_seed reseeds the GPU too)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def seeded():
    """A CPU random generator at SEED: each random draw in measuring starts from one, so the same
    samples measured twice give the same numbers, whatever the global random state."""
    return torch.Generator().manual_seed(SEED)


def matching(labels, pool_labels, generator):
    """Indices into a pool (pool_labels), in the order of labels: for each label as many of the
    pool's items of that label as there are labels of it, drawn at random without replacement
    (drawn again only where the pool holds fewer); every label must be in the pool."""
    labels, pool_labels = labels.cpu(), pool_labels.cpu()
    idx = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique().tolist():
        where, count = torch.nonzero(pool_labels == c)[:, 0], int((labels == c).sum())
        chosen = (torch.randperm(len(where), generator=generator)[:count] if count <= len(where)
                  else torch.randint(len(where), (count,), generator=generator))  # a small pool
        idx[labels == c] = where[chosen]
    return idx


def stand_in_images(data, labels, n_classes, noise=(0.05, 0.1)):
    """Stand-ins for samples with these labels, made of real training images, in the labels'
    order: a random training image of each label (matching: drawn again only if the label has
    fewer training images than samples), the same with Gaussian pixel noise of each std in noise
    (clipped to [0, 1]), and each label's mean training image.  Drawn from seeded()."""
    x_tr, y_tr, draw = data["x_train"], data["y_train"], seeded()
    real = x_tr[matching(labels, y_tr, draw).to(x_tr.device)]
    means = torch.stack([x_tr[y_tr == c].mean(0) for c in range(n_classes)])

    def noisy(s):
        return (real + s * torch.randn(real.shape, generator=draw).to(real.device)).clamp(0, 1)
    return {"training_images": real,
            **{f"training_images_noise_{s:g}": noisy(s) for s in noise},
            "class_mean_images": means[labels]}


@torch.no_grad()
def frechet_references(judge, labels, data, real_feats, n_classes):
    """Fréchet distances of stand_in_images to real_feats: the floor at this sample size, how far
    an almost invisible change moves the number, and a collapsed generator (class means)."""
    return {name: frechet_distance(features_of(judge, x), real_feats)
            for name, x in stand_in_images(data, labels, n_classes).items()}


def halves(labels, generator):
    """Two disjoint index sets of a labelled set, each with half of every label's items (the first
    one more of an odd count), drawn at random: a set sorted or cycled by label splits evenly."""
    first, second = [], []
    for c in labels.unique().tolist():
        where = torch.nonzero(labels.cpu() == c)[:, 0]
        where = where[torch.randperm(len(where), generator=generator)]
        first.append(where[0::2])
        second.append(where[1::2])
    return torch.cat(first), torch.cat(second)


def frechet_scores(psi, labels, judge, data, real_feats, n_classes):
    """frechet_distance of the samples' judge features psi, and its references at the samples'
    size, all against one real set: half of the test images, every label halved (halves).
    frechet_distance_real: as many test images of each label as there are samples of it, from
    the other half, against that set, like for like: the same size, label mix and real set as the
    samples (the estimate's bias grows as the sets shrink: two halves of 5,000 read far below
    the floor of 1,000 samples).  frechet_reference: stand_in_images against it too.  The halves
    and the draw from the other half come from seeded()."""
    draw, y_te = seeded(), data["y_test"].cpu()
    part, pool = halves(y_te, draw)
    like = pool[matching(labels, y_te[pool], draw)]
    against = real_feats[part.to(real_feats.device)]
    return {"frechet_distance": frechet_distance(psi, against),
            "frechet_distance_real": frechet_distance(real_feats[like.to(psi.device)], against),
            "frechet_reference": frechet_references(judge, labels, data, against, n_classes)}


@torch.no_grad()
def inversion_metrics(images, labels, f, judge, data, n_classes, real_feats, K=1):
    """metrics.json["inversion"] for the samples (images, labels) of K generators; real_feats:
    the judge's features of the test images."""
    f_prob = torch.cat([torch.softmax(f(c), 1) for c in images.split(1000)])
    j_pred = torch.cat([judge(c).argmax(1) for c in images.split(1000)])
    hit = f_prob.argmax(1) == labels
    x_te, y_te = data["x_test"], data["y_test"]
    phi, psi = features_of(f, images), features_of(judge, images)      # f's and the judge's
    div_ratios, cosines = [], {"f": [], "f_real": [], "judge": [], "judge_real": []}
    for c in range(n_classes):
        fake, real = images[labels == c], x_te[y_te == c][:int((labels == c).sum())]
        real_d = mean_pairwise_distance(real)
        div_ratios.append(mean_pairwise_distance(fake) / real_d if real_d > 0 else 0.0)
        cosines["f"].append(mean_pairwise_cosine(phi[labels == c]))
        cosines["f_real"].append(mean_pairwise_cosine(features_of(f, real)))
        cosines["judge"].append(mean_pairwise_cosine(psi[labels == c]))
        cosines["judge_real"].append(mean_pairwise_cosine(real_feats[y_te == c][:len(real)]))
    cos = {key: sum(v) / n_classes for key, v in cosines.items()}
    matched = real_like(labels, data)                    # as many real images of each label
    return {
        "target_accuracy": hit.float().mean().item(),
        "per_class_target_accuracy": [hit[labels == c].float().mean().item()
                                      for c in range(n_classes)],
        "mean_confidence": f_prob.gather(1, labels[:, None]).mean().item(),
        "judge_accuracy": (j_pred == labels).float().mean().item(),
        "per_class_judge_accuracy": [(j_pred[labels == c] == c).float().mean().item()
                                     for c in range(n_classes)],
        "diversity_ratio": sum(div_ratios) / n_classes,
        "per_class_diversity_ratio": div_ratios,
        "feature_cosine": cos["f"], "feature_cosine_real": cos["f_real"],
        "feature_cosine_judge": cos["judge"], "feature_cosine_judge_real": cos["judge_real"],
        **variety(psi, labels, real_feats, y_te, n_classes),
        **dict(zip(("own_generator_share", "own_generator_chance"),
                   own_generator(psi, labels, K, n_classes))),
        **frechet_scores(psi, labels, judge, data, real_feats, n_classes),
        "nn_distance": nearest_neighbours(images, data["x_train"])[0].mean().item(),
        **({"pieces": strokes(images, matched)} if images.shape[1] == 1 else {}),
        "ripple": ripple(images, matched),
    }


@torch.no_grad()
def second_judge_metrics(images, labels, judge, data, n_classes):
    """metrics.json["inversion"]["second_judge"]: the judge's accuracy on the samples, recall,
    precision, coverage and density (each with its real-versus-real reference) in the features
    of a judge of another family, measured as for the first."""
    pred = torch.cat([judge(c).argmax(1) for c in images.split(1000)])
    measured = variety(features_of(judge, images), labels, features_of(judge, data["x_test"]),
                       data["y_test"], n_classes)
    keys = [k + real for k in ("recall", "precision", "coverage", "density")
            for real in ("", "_real")]
    return {"judge_accuracy": (pred == labels).float().mean().item(),
            **{k: measured[k] for k in keys}}


@torch.no_grad()
def margin_scores(G, f, judge, data, n, margin, per_class, real_feats):
    """Target and judge accuracy, diversity ratio, recall, precision, coverage and density of
    fresh samples at one arg-max margin (the margin trades the judge's accuracy against variety),
    drawn from SEED (the same noise at every margin; the global random state is left as it was);
    real_feats: the judge's features of the test images, computed once for all margins."""
    y = torch.arange(n, device=data["x_train"].device).repeat_interleave(per_class)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        x = common.generate(common.sampling_mode(G), y, n, margin)
    div = []
    for c in range(n):
        real_d = mean_pairwise_distance(data["x_test"][data["y_test"] == c][:per_class])
        div.append(mean_pairwise_distance(x[y == c]) / real_d if real_d > 0 else 0.0)
    v = variety(features_of(judge, x), y, real_feats, data["y_test"], n)
    return {"target_accuracy": (f(x).argmax(1) == y).float().mean().item(),
            "judge_accuracy": (judge(x).argmax(1) == y).float().mean().item(),
            "diversity_ratio": sum(div) / n,
            **{key: v[key] for key in ("recall", "precision", "coverage", "density")}}


# ==== Figures ====================================================================================
def save_figure(fig, path):
    import matplotlib.pyplot as plt
    common.atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=80, bbox_inches="tight"))
    plt.close(fig)


def image_grid(path, rows, row_names, col_names=None, title=None, pad=2):
    """rows: a list of (K, C, H, W) image batches, one per row, drawn as one labelled image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    R, K, (H, W) = len(rows), max(len(r) for r in rows), rows[0].shape[-2:]
    grid = torch.ones(R, K, 3, H + pad, W + pad)                              # white ground
    for r, imgs in enumerate(rows):
        grid[r, :len(imgs), :, :H, :W] = imgs.detach().float().cpu().clamp(0, 1).expand(
            -1, 3, -1, -1)
    fig, ax = plt.subplots(figsize=(0.75 * K + 1.2, 0.75 * R + 0.4))
    page = grid.permute(0, 3, 1, 4, 2).reshape(R * (H + pad), K * (W + pad), 3)
    ax.imshow(page.numpy(), interpolation="nearest")
    ax.set_yticks([r * (H + pad) + (H - 1) / 2 for r in range(R)], row_names[:R], fontsize=8)
    ticks = [k * (W + pad) + (W - 1) / 2 for k in range(K)] if col_names else []
    ax.set_xticks(ticks, col_names or [], fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9, pad=18 if col_names else 6)
    save_figure(fig, path)


def losses_figure(path, history):
    """Each logged term of G's training over the steps (losses.png); history: the loop's lines,
    [{"step": ..., "loss": ..., "L_KL": ..., ...}, ...]."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(key for line in history for key in line if key != "step"))
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        lines = [line for line in history if name in line]
        ax.plot([line["step"] for line in lines], [line[name] for line in lines])
        ax.set_title({"loss": "total", "f(x)=y": "f labels x as y"}.get(name, name), fontsize=9)
        ax.set_xlabel("generator step", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def figures(spec, out, G, x, y, data, history, seed):
    """nearest.png, intensity.png, losses.png."""
    classes, n, device = spec["classes"], len(spec["classes"]), x.device
    picks = torch.cat([torch.nonzero(y == c)[:3, 0] for c in range(n)])    # three per class
    _, nn_idx = nearest_neighbours(x[picks], data["x_train"])
    pairs = torch.stack([x[picks], data["x_train"][nn_idx]], 1).flatten(0, 1)   # sample, its nn
    per_row = 2 * len(picks) // n
    image_grid(out / "nearest.png", list(pairs.split(per_row)), classes,
               ["sample", "nearest"] * (per_row // 2),
               "samples beside their nearest training images")
    margins = torch.tensor([0.01, 0.1, 0.3, 0.6, 1.0, 2.0, 4.0, 8.0], device=device)
    G, rows = G[0].eval(), []                               # dropout off: only the margin varies
    for c in range(n):
        torch.manual_seed(seed + c)
        z, v = torch.randn(1, G.latent_dim, device=device), torch.randn(1, n, device=device)
        labels = torch.full((len(margins),), c, device=device)
        p, _, H = common.conditioning_for_labels(labels, n, margins, v.expand(len(margins), n))
        with torch.no_grad():
            rows.append(G(z.expand(len(margins), -1), p, H))
    image_grid(out / "intensity.png", rows, classes, [f"+{m:g}" for m in margins.tolist()],
               "argmax intensity: logit margin of the label over the next largest")
    losses_figure(out / "losses.png", history)


# ==== The report =================================================================================
def paired(inv, variety_key, fidelity_key):
    """One summary line: a variety measure beside the fidelity measure read with it, each with
    its real-vs-real reference, e.g. "0.2350  real 0.7010  |  precision 0.9120  real 0.7020"."""
    def shown(key):
        return "     -" if inv.get(key) is None else f"{inv[key]:.4f}"
    return (f"{shown(variety_key):>10}  real {shown(variety_key + '_real')}  |  "
            f"{fidelity_key} {shown(fidelity_key)}  real {shown(fidelity_key + '_real')}")


def print_summary(metrics):
    inv = metrics["inversion"]
    rows = [("classifier f test accuracy", metrics["classifier"]["test_accuracy"]),
            ("judge test accuracy", metrics["judge"]["test_accuracy"]),
            ("target accuracy (f on samples)", inv["target_accuracy"]),
            ("judge accuracy (judge on samples)", inv["judge_accuracy"]),
            ("mean confidence", inv["mean_confidence"]),
            ("diversity ratio (samples / real)", inv["diversity_ratio"]),
            ("feature cosine within class (f)", inv["feature_cosine"]),
            ("  real test images", inv["feature_cosine_real"]),
            ("feature cosine within class (judge)", inv["feature_cosine_judge"]),
            ("  real test images", inv["feature_cosine_judge_real"]),
            ("judge features: recall, k=3", paired(inv, "recall", "precision")),
            ("judge features: coverage, k=5", paired(inv, "coverage", "density")),
            *([("second judge (residual) test accuracy",
                metrics["second_judge"]["test_accuracy"]),
               ("  its accuracy on samples", inv["second_judge"]["judge_accuracy"]),
               ("  its features: recall", paired(inv["second_judge"], "recall", "precision")),
               ("  its features: coverage", paired(inv["second_judge"], "coverage", "density"))]
              if "second_judge" in inv else []),
            *([("3 nearest from their own generator", inv["own_generator_share"]),
               ("  chance", inv["own_generator_chance"])]
              if inv.get("own_generator_share") is not None else []),
            ("Frechet distance (judge features)", inv["frechet_distance"]),
            ("  real vs real reference", inv["frechet_distance_real"]),
            *[(f"  {k.replace('_', ' ')}", v) for k, v in inv["frechet_reference"].items()],
            ("nn distance to training images", inv["nn_distance"]),
            *[(f"pieces: {k.replace('_', ' ')}", v) for k, v in inv.get("pieces", {}).items()],
            *[(f"ripple: {k.replace('_', ' ')}", v) for k, v in inv.get("ripple", {}).items()],
            *[(f"distillation {k.replace('_', ' ')}", v) for k, v in metrics["distillation"].items()
              if k.startswith("from") or k in ("teacher_f", "images_seen")],
            ("seconds, total", metrics["seconds"]["total"])]
    margin = metrics["config"]["margin"]                  # None: natural; 0 is a margin
    split = metrics.get("split", "test")           # every "test" below: this split's images
    print(f"\nsummary (samples at margin {'natural' if margin is None else margin}; real images: "
          f"the {split} split" + (", the test set unread)" if split != "test" else ")"))
    for name, value in rows:
        shown = ("  not measured (too few samples)" if value is None
                 else value if isinstance(value, str) else f"{value:10.4f}")
        print(f"  {name:<36} {shown}")
    columns = {"target": "target_accuracy", "judge": "judge_accuracy",
               "diversity": "diversity_ratio", "recall": "recall", "precision": "precision",
               "coverage": "coverage", "density": "density"}
    print(f"  {'by sampling margin':<24} " + " ".join(f"{name:>9}" for name in columns))
    for m, r in metrics["inversion_by_margin"].items():
        print(f"    {m:<22} " + " ".join("        -" if r.get(key) is None else f"{r[key]:9.3f}"
                                       for key in columns.values()))


def report(spec, out, args, data, f, f_accuracy, G, x, y, history, seconds, t_start):
    """Everything above for one run: judge, metrics, figures, metrics.json, the summary.
    spec: {"dataset", "classes", "flip"} of the script.  Returns metrics.json's content."""
    t0, n, device = time.time(), len(spec["classes"]), x.device
    judge, judge_accuracy, seconds["judge"] = trained_judge(spec, data, args, out, device)
    with apart(device, SEED + 1):          # the same second judge, trained now or on a rescore
        second, second_accuracy, seconds["second_judge"] = trained_judge(spec, data, args, out,
                                                                          device, second=True)
    common.sampling_mode(G)
    parts, t = {}, time.time()                          # seconds of each part of the measuring

    def timed(name, value):
        nonlocal t
        parts[name], t = time.time() - t, time.time()
        return value
    real_feats = features_of(judge, data["x_test"])     # once for the samples and every margin
    inversion = timed("metrics", inversion_metrics(x, y, f, judge, data, n, real_feats,
                                                         len(G)))
    inversion["second_judge"] = timed("second judge", second_judge_metrics(x, y, second, data, n))
    timed("figures", figures(spec, out, G, x, y, data, history, args.seed))
    by_margin = timed("margins", {("natural" if m is None else f"{m:g}"):
                                  margin_scores(G, f, judge, data, n, m, args.eval_per_class,
                                                real_feats)
                                  for m in MARGINS})
    distilled = timed("distillation", distillation(spec, G, f, data, args, device,
                                                   out / "judge.pt", f_accuracy)
                      if args.distill_steps else {})
    planted = spec.get("cue")                            # --plant-class: does the inversion show it
    cue_scores = timed("cue", cue_report(planted, x, y, f, data, spec.get("cue_in_f", True),
                                         common.masks_of(G.state_dict()),
                                         spec.get("planted_trigger")) if planted else None)
    seconds.update(measure=time.time() - t0 - seconds["judge"] - seconds["second_judge"],
                   measure_parts=parts,
                   total=time.time() - t_start)
    cuda = f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""
    metrics = {"dataset": spec["dataset"], "fake_data": args.fake_data,
               "split": "validation" if getattr(args, "validation", False) else "test",
               "device": str(device) + cuda, "classifier": {"test_accuracy": f_accuracy},
               "judge": {"test_accuracy": judge_accuracy},
               "second_judge": {"test_accuracy": second_accuracy, "family": "residual"},
               "inversion": inversion, "inversion_by_margin": by_margin, "distillation": distilled,
               "history": history, "seconds": seconds, "config": vars(args),
               **({"cue": cue_scores} if cue_scores else {})}
    text = json.dumps(metrics, indent=2).encode()
    common.atomic_write(out / "metrics.json", lambda fh: fh.write(text))
    print_summary(metrics)
    if cue_scores:
        title = "the planted cue (cue.py)" if cue_scores["planted_in_f"] else \
            "the cue of another run, for this run's f trained without it: the control (cue.py)"
        print("\n".join(["", title] + cue.summary_lines(cue_scores)))
    print(f"\nwrote {out}/: classifier.pt judge.pt judge2.pt generator.pt samples.pt samples.png "
          f"nearest.png intensity.png losses.png metrics.json")
    return metrics


def cue_report(planted, x, y, f, data, planted_in_f=True, masks=None, planted_trigger=None):
    """metrics.json["cue"]: cue.score of the samples (x, y) for the cue, on f and the clean test
    images: presence per row, the anomaly index, the recovered patch's function on f,
    localisation; with f's attack success.  planted_in_f: False for a control (f trained clean,
    scored for another run's cue: measure.py --cue-of).  masks: G's (--patch), scored too, and
    its trigger's function on f.  planted_trigger: a control's planted run's, tried on this f."""
    x_test, y_test, C = data["x_test"], data["y_test"], planted.target
    scores = cue.score(x, y, f, {"x_test": x_test, "y_test": y_test}, planted)
    if masks is not None:
        scores["masks"] = cue.mask_scores(masks, planted)
        own = cue.recovered_trigger(x[y == C], masks[C])
        scores["masks"]["trigger_function"] = cue.trigger_function(f, own, x_test[y_test != C], C)
    if planted_trigger is not None:
        scores["planted_trigger_function"] = cue.trigger_function(f, planted_trigger,
                                                                  x_test[y_test != C], C)
    return {"planted_in_f": planted_in_f, **scores}


def cue_of(run, script):
    """The cue planted in the f of another finished run of the same dataset (its classifier.pt's
    config), for measure.py --cue-of: a clean run scored for it is that run's control.  None when
    that f was trained clean."""
    open_run(run)                                      # a finished run's folder, or a clear error
    ckpt = common.load_checkpoint(run / "classifier.pt", "classifier", {"dataset": script.DATASET})
    config = {**vars(script.parse_args([])), **ckpt.get("config", {})}
    return common.planted_cue(argparse.Namespace(**config), script.SHAPE, len(script.CLASSES))


def trigger_of(run, script, planted):
    """A finished --patch run's recovered trigger for its cue's class (cue.recovered_trigger from
    its samples.pt and G's mask); None for a run without masks."""
    masks = common.masks_of(common.load_checkpoint(run / "generator.pt", "generator", {})["model"])
    if masks is None:
        return None
    x, y = read_samples(run / "samples.pt", script.SHAPE, len(script.CLASSES))
    return cue.recovered_trigger(x[y == planted.target], masks[planted.target])


def open_run(run):
    """A finished run's folder: checks that it holds generator.pt, classifier.pt and samples.pt
    and names a dataset of this project; returns (generator.pt's checkpoint, its script)."""
    for name in ("generator.pt", "classifier.pt", "samples.pt"):
        if not (run / name).is_file():
            raise common.UserError(f"{run / name} not found: give the --out-dir of a finished run")
    first = common.load_checkpoint(run / "generator.pt", "generator", {})
    if first.get("dataset") not in SCRIPTS:
        raise common.UserError(f"{run / 'generator.pt'} names no dataset of this project")
    return first, importlib.import_module(SCRIPTS[first["dataset"]])


# ==== Re-scoring a finished run =================================================================
def read_samples(path, shape, n_classes):
    """(images, labels) of a samples.pt, checked against its contract before anything is
    computed from it; a file that breaks it: one line saying how."""
    with common.reading(path, "samples file", "make it again with the script that wrote it"):
        samples = torch.load(path, map_location="cpu", weights_only=True)
    problem = samples_problem(samples, shape, n_classes)
    if problem:
        raise common.UserError(f"{path} breaks the samples.pt contract: {problem}")
    return samples["images"], samples["labels"]


def samples_problem(samples, shape, n):
    """What breaks {"images": float (N, C, H, W) in [0, 1], "labels": long (N,) in 0..n-1, every
    class at least twice}, or None."""
    if not isinstance(samples, dict) or not {"images", "labels"} <= set(samples):
        return 'it must be a dict with "images" and "labels"'
    x, y = samples["images"], samples["labels"]
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 4:
        return "images must be a float tensor (N, C, H, W)"
    if tuple(x.shape[1:]) != tuple(shape):
        return f"images are {tuple(x.shape[1:])} each, this dataset's are {tuple(shape)}"
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        return (f"images must be in [0, 1], found {x.min().item():.4g} to {x.max().item():.4g}"
                + (" (0-255? divide by 255)" if x.max() > 1 else ""))
    if not torch.is_tensor(y) or y.dtype != torch.long or tuple(y.shape) != (len(x),):
        return f"labels must be a long tensor of one label per image ({len(x)})"
    if len(y) and (y.min() < 0 or y.max() >= n):
        return f"labels must be in 0..{n - 1}"
    counts = torch.bincount(y, minlength=n)
    if counts.min() < 2:
        return f"class {counts.argmin().item()} has {counts.min().item()} samples; each needs 2"
    return None


def rescore(argv=None):
    """python measure.py RUN_DIR: report() again from the run's checkpoints and samples.pt."""
    ap = common.argument_parser(__doc__)
    ap.add_argument("run_dir", help="a finished run's --out-dir")
    ap.add_argument("--data-dir", help="where the dataset is (default: the run's own --data-dir)")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    ap.add_argument("--distill-steps", type=common.COUNT, help="default: the run's own")
    ap.add_argument("--cue-of", metavar="PLANTED_RUN_DIR", help="score the samples for the cue "
                    "planted in that run's f too: a clean run of the same recipe and seed is its "
                    "control (default: the run's own cue, if any)")
    cli = ap.parse_args(argv)
    run = Path(cli.run_dir)
    first, script = open_run(run)
    given = {k: v for k, v in vars(cli).items() if k not in ("run_dir", "cue_of")
             and v is not None}
    args = {**vars(script.parse_args([])), **first["config"]}      # flags newer than the run too
    args = argparse.Namespace(**{**args, "out_dir": str(run), "device": cli.device,
                                 "retrain": False, **given})
    x, y = read_samples(run / "samples.pt", script.SHAPE, len(script.CLASSES))
    old = {}
    if (run / "metrics.json").is_file():
        with common.reading(run / "metrics.json", "metrics file", "delete it"):
            old = json.loads((run / "metrics.json").read_text()).get("seconds", {})
    device, out = common.setup(args)
    t_start, data = time.time(), script.load_data(args, device)
    f = common.place(script.Classifier(len(script.CLASSES), args.classifier_width), device)
    signature = {"dataset": script.DATASET, "arch": common.architecture(f)}
    ckpt = common.load_checkpoint(run / "classifier.pt", "classifier", signature)
    common.load_weights(f, ckpt["model"], run / "classifier.pt")
    f.eval().requires_grad_(False)
    bases = (common.OtherClasses(data["x_train"], data["y_train"], len(script.CLASSES))
             if args.patch > 0 else None)                      # --patch: pasted on clean images
    G = common.place(script.build_generator(args, bases), device)
    common.load_weights(G, first["model"], run / "generator.pt")
    own = common.planted_cue(args, script.SHAPE, len(script.CLASSES))        # f's own, or None
    scored = cue_of(Path(cli.cue_of), script) if cli.cue_of else own
    if cli.cue_of and scored is None:
        raise common.UserError(f"{Path(cli.cue_of) / 'classifier.pt'}: its f was trained without "
                               f"a planted cue (no --plant-class); give a planted run to --cue-of")
    spec = dict(dataset=script.DATASET, classes=script.CLASSES, flip=script.FLIP, cue=scored,
                cue_in_f=scored is not None and scored == own,
                planted_trigger=trigger_of(Path(cli.cue_of), script, scored) if cli.cue_of
                else None)
    kept = {k: old[k] for k in ("data", "classifier", "generator") if k in old}
    if "total" in old:                          # "total" becomes this rescoring's own time
        kept["first_run_total"] = old.get("first_run_total", old["total"])
    return report(spec, out, args, data, f, ckpt["test_accuracy"], G, x.to(device), y.to(device),
                  first["history"], kept, t_start)


if __name__ == "__main__":
    common.run_main(rescore, None, "measure.py")
