"""What the four scripts share of "Network Inversion of Convolutional Neural Nets" (Suhail and
Sethi), in three marked parts.  Read part 1 beside the paper; part 2 only for the additions you
switch on; part 3 never needs reading to understand the method.

  PART 1, the paper     conditioning (Sec. 2), the generator G(z, p, H), the inversion loss
                        L_inv (Sec. 2), the robust term (Sec. 3)
  PART 2, beyond it     the priors and tricks we add, each an option of the scripts; those that
                        read the training images (not only f) say so: READS_TRAINING_IMAGES
  PART 3, plumbing      not the method: flags, checks of a user's classifier, one-line errors,
                        files written whole, the device, G's log line and checkpoint, data

The loops are in the scripts, measurement in measure.py.
"""
import argparse
import contextlib
import hashlib
import math
import os
import signal
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


# ################################################################################################
# PART 1 of 3: the paper (Sec. 2 and 3)
# ################################################################################################

# ==== Section 2: conditioning.  v ~ N(0, I_n), p = softmax(v), y = argmax p, H: hot matrix of y ==
def hot_matrix(y: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) labels -> (N, 1, n, n) matrices with row y and column y set to 1, zeros elsewhere."""
    one_hot = F.one_hot(y, n).to(torch.float32)                  # (N, n)
    H = one_hot[:, :, None] + one_hot[:, None, :]                # row y plus column y
    return H.clamp_(max=1.0).unsqueeze(1)                        # (N, 1, n, n), H[y, y] = 1


def sample_conditioning(N: int, n: int, device):
    """The paper's conditioning for a batch: p = softmax(v), v ~ N(0, I_n); y = argmax p; H."""
    p = torch.softmax(torch.randn(N, n, device=device), dim=1)   # input distribution P
    y = p.argmax(dim=1)                                          # conditioning label
    return p, y, hot_matrix(y, n)


def conditioning_for_labels(y: torch.Tensor, n: int, intensity=None, v=None):
    """Conditioning with arg-max y (Sec. 2: "varying the arg-max element intensity"): v ~ N(0, I_n)
    (or v), v_y = largest other entry + intensity; None: the draw's own largest entry moved to y."""
    v = torch.randn(len(y), n, device=y.device) if v is None else v.clone()
    rows = torch.arange(len(y), device=y.device)
    if intensity is None:                                        # swap the largest entry into y
        top = v.argmax(dim=1)
        v[rows, top], v[rows, y] = v[rows, y], v[rows, top]      # (indexing copies the right side)
    else:
        others = v.scatter(1, y[:, None], float("-inf"))
        v[rows, y] = others.max(dim=1).values + intensity
    return torch.softmax(v, dim=1), y, hot_matrix(y, n)


# ==== Section 2: the generator G(z, p, H) =========================================================
class UpBlock(nn.Sequential):
    """Up-convolution (C_in, s, s) -> (C_out, size, size): a transposed convolution (kernel 4,
    stride 2 when size = 2s; else stride 1, kernel size - s + 1), batch norm, LeakyReLU, dropout.
    resize (beyond the paper): a doubling is a nearest-neighbour resize, then a 3x3 convolution,
    which leaves no checkerboard (Odena et al. 2016).  size < s (more classes than S/2, our
    choice): the map is averaged down to size (every row and column of H still counts), then a
    3x3 convolution."""

    def __init__(self, c_in, c_out, s_in, size, dropout, resize=False):
        k, stride, pad = (4, 2, 1) if size == 2 * s_in else (size - s_in + 1, 1, 0)
        if size < s_in:
            up = [nn.AdaptiveAvgPool2d(size), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
        elif resize and stride == 2:
            up = [nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
        else:
            up = [nn.ConvTranspose2d(c_in, c_out, k, stride, pad, bias=False)]
        layers = [*up, nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]  # the bias is batch norm's
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))                 # the paper's "heavy dropout"
        super().__init__(*layers)


MAX_CLASSES = 32          # stage 1's kernel is n x n: at 100 classes it would hold 164M weights
MASK_SCALE = 50           # --patch: Adam moves the masks' logits 50 x G's learning rate a step


class Generator(nn.Module):
    """G(z, p, H) -> x, for 1x28x28 and 3x32x32 images:
    p (N, n) --Linear--> (N, hidden) ++ z (N, latent)                   concatenation
             --stage 1: an UpBlock--> (N, width, n, n)                  vector -> n x n
             ++ H (N, 1, n, n) --stage 2: two UpBlocks--> (N, width/4, S, S)
             --3x3 conv, sigmoid--> x (N, C, S, S) in [0, 1]
    conditioning: "vector-matrix" (the paper's), "vector" (no H), or "label" (an embedding of y
    and no H: the baseline the paper calls ineffective).  upsample: "transposed" (the paper's)
    or "resize".  Dropout: `dropout` after stage 2's up-convolutions, `stage1_dropout` after
    stage 1's (the paper: "heavy dropout ... during up-convolution"; both stages up-convolve)."""

    def __init__(self, channels=1, image_size=28, n_classes=10, latent_dim=64, hidden=64,
                 width=128, dropout=0.3, conditioning="vector-matrix", upsample="transposed",
                 stage1_dropout=0.0, bases=None, patch_weight=0.0):
        super().__init__()
        if not 2 <= n_classes <= MAX_CLASSES:                   # check_classifier says why
            raise ValueError(f"{n_classes} classes: G takes 2 to {MAX_CLASSES}")
        self.n, self.latent_dim, self.conditioning = n_classes, latent_dim, conditioning
        self.image_shape = (channels, image_size, image_size)
        n, half = n_classes, image_size // 2
        self.embed = nn.Embedding(n, hidden) if conditioning == "label" else nn.Linear(n, hidden)
        # stage 1, (hidden+latent, 1, 1) -> (width, n, n): a transposed convolution of kernel n
        self.stage1 = UpBlock(hidden + latent_dim, width, 1, n, stage1_dropout)
        h_channels = 1 if conditioning == "vector-matrix" else 0
        resize = upsample == "resize"
        self.stage2 = nn.Sequential(                        # (width+1, n, n) -> (width/4, S, S)
            # n x n -> S/2: a stride-1 transposed convolution, kernel 5 (10 -> 14) or 7 (10 -> 16);
            # more than S/2 classes: averaged down to S/2 (UpBlock)
            UpBlock(width + h_channels, width // 2, n, half, dropout, resize),
            UpBlock(width // 2, width // 4, half, image_size, dropout, resize))   # S/2 -> S
        self.to_image = nn.Conv2d(width // 4, channels, 3, padding=1)
        self.bases = bases                           # beyond the paper (--patch): see pasted()
        if bases is not None:
            self.mask_logits = nn.Parameter(torch.zeros(n, 1, image_size, image_size))  # m = 0.5
            self.register_buffer("patch_weight", torch.tensor(float(patch_weight)))    # lambda

    def forward(self, z, p, H):
        e = self.embed(p.argmax(1) if self.conditioning == "label" else p)   # (N, hidden)
        h = torch.cat([e, z], dim=1)[:, :, None, None]           # (N, hidden+latent, 1, 1)
        h = self.stage1(h)                                       # (N, width, n, n)
        if self.conditioning == "vector-matrix":
            h = torch.cat([h, H], dim=1)                         # (N, width+1, n, n)
        h = self.stage2(h)                                       # (N, width/4, S, S)
        x = torch.sigmoid(self.to_image(h))                      # (N, C, S, S) in [0, 1]
        return x if self.bases is None else self.pasted(x, p.argmax(1))

    def pasted(self, x, y):
        """Beyond the paper (--patch, --audit): Neural Cleanse's question (Wang et al. 2019), what
        is the smallest region that, pasted over clean images of other classes, makes f say y?
        asked with G drawing what is pasted (as DeepInspect's generator, Chen et al. 2019):
        x = (1 - m_y) * base + m_y * G(z, p, H), base a clean training image of a class other
        than y, m_y = sigmoid(MASK_SCALE * w_y) the mask of class y.  self.mask keeps m_y for
        patch_term."""
        self.mask = torch.sigmoid(MASK_SCALE * self.mask_logits[y])          # (N, 1, S, S)
        return (1 - self.mask) * self.bases.draw(y) + self.mask * x


class Generators(nn.ModuleList):
    """Fig. 2's columns, "each column corresponds to a different generator": K generators trained
    together on one batch.  The batch is cut into K parts, part k made by G_k, and f sees the
    whole batch at once, so K generators cost about what one does.  K = 1: G itself."""

    def __init__(self, generators):
        super().__init__(generators)
        self.latent_dim, self.image_shape = self[0].latent_dim, self[0].image_shape

    def forward(self, z, p, H):
        K = len(self)
        parts = zip(self, z.tensor_split(K), p.tensor_split(K), H.tensor_split(K))
        return torch.cat([G_k(z_k, p_k, H_k) for G_k, z_k, p_k, H_k in parts])

    def owners(self, N, device):
        """For a batch of N made by forward: the index k of the generator of each image."""
        return torch.cat([torch.full((len(part),), k, device=device)
                          for k, part in enumerate(torch.arange(N).tensor_split(len(self)))])

    def twins(self, N, device):
        """For a batch of N made by forward: for each image, the index of the first of its twin
        pair, two neighbours in one generator's part (the last of an odd part stands alone)."""
        return torch.cat([part[0] + torch.arange(len(part), device=device) // 2 * 2
                          for part in torch.arange(N, device=device).tensor_split(len(self))])


def sampling_mode(G: nn.Module) -> nn.Module:
    """Batch norm on its running statistics; dropout stays on (our choice: a source of variety)."""
    dropout = (nn.Dropout, nn.Dropout2d)
    return G.eval().apply(lambda m: m.train() if isinstance(m, dropout) else None)


@torch.no_grad()
def generate(G, y, n, intensity=None, owner=None, batch=1000):
    """Images for the chosen labels y, conditioned as conditioning_for_labels describes; image i
    made by generator owner[i] of G (Generators; default i mod K)."""
    owner = torch.arange(len(y), device=y.device) % len(G) if owner is None else owner
    x = torch.empty(len(y), *G.image_shape, device=y.device)
    for k, G_k in enumerate(G):
        for idx in torch.nonzero(owner == k)[:, 0].split(batch):
            p, _, H = conditioning_for_labels(y[idx], n, intensity)
            x[idx] = G_k(torch.randn(len(idx), G_k.latent_dim, device=y.device), p, H)
    return x


# ==== Section 2: the inversion loss  L_inv = alpha * L_KL + beta * L_CE + gamma * L_cos ===========
def kl_term(logits, p):
    """L_KL = sum_i P(i) log(P(i) / Q(i)), Q = softmax(f(x)); mean over the batch."""
    log_q = torch.log_softmax(logits, dim=1)
    return (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(dim=1).mean()


def ce_term(logits, y, cap=1.0):
    """L_CE = -sum_i y_i log(y_hat_i), y one-hot at the conditioning label; batch mean.  cap < 1
    (beyond the paper, against prototypes): a sample's term is max(0, L_CE + log cap), so once f
    gives y the probability cap, nothing pushes it further (IntraQ's soft targets, in our form)."""
    return (F.cross_entropy(logits, y, reduction="none") + math.log(cap)).clamp_min(0).mean()


def cosine_term(phi, y=None):
    """L_cos = 1/(N(N-1)) sum_{i != j} cos(phi_i, phi_j) over the batch's features phi.  Given
    labels y (beyond the paper): over the pairs of one label only, pushing apart the pictures of
    a row of Fig. 2 (any key works: with --twins, one label and one generator, a cell of it)."""
    N = phi.shape[0]
    u = F.normalize(phi.flatten(1), dim=1)
    gram = u @ u.T                                               # cos(theta_ij), diagonal 1
    if y is None:
        return (gram.sum() - gram.diagonal().sum()) / (N * (N - 1))
    pairs = (y[:, None] == y[None, :]).float() - torch.eye(N, device=phi.device)
    return (gram * pairs).sum() / pairs.sum().clamp_min(1)


# ==== Section 3: robust inversion =================================================================
def worst_case(f, x, y, eps, random_start=False):
    """x moved to the first-order worst case for label y within the L-inf ball of radius eps: one
    signed-gradient step of CE(f(x), y) (FGSM), clipped to [0, 1].  Gradients still reach x.
    random_start: from a uniform point in the ball, a step of 1.25 eps, projected (Wong et al.
    2020)."""
    x0 = x + eps * (2 * torch.rand_like(x) - 1) if random_start else x
    x_req = x0.detach().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(F.cross_entropy(f(x_req), y), x_req)
    step = (x0 + (1.25 if random_start else 1.0) * eps * grad.sign()).detach() - x.detach()
    return (x + step.clamp(-eps, eps)).clamp(0, 1)


def robust_term(f, x, y, eps, cap=1.0):
    """Sec. 3, in our form: f must keep label y on the worst perturbation of x within radius
    eps (0: no term); its L_CE, up to the probability cap as ce_term's."""
    if eps == 0:
        return x.new_zeros(())
    return ce_term(f(worst_case(f, x, y, eps)), y, cap)


# ################################################################################################
# PART 2 of 3: beyond the paper.  Each is an option of the scripts (a weight of 0 is off; --paper
# turns every one off).  Only two read the training images: the statistics priors (--stats,
# --generator-stats).  Everything else here needs nothing but f.  (README: "Beyond the paper")
# ################################################################################################
READS_TRAINING_IMAGES = ("stats", "generator_stats", "patch")    # --data-free turns these off

# ==== Beyond the paper: image priors ==============================================================
def activations(features: nn.Module, x):
    """f's features on x: (phi(x), [the output of each LeakyReLU / ReLU module, in the order they
    run], [(input, layer) of each batch norm]).  Layers are found at any depth (blocks inside
    blocks), by hooks that live for this one call; activations called as functions (F.relu) are
    not seen (check_classifier says so before anything trains)."""
    acts, bn = [], []

    def keep(m, inputs, out):                                    # a hook: runs after m does
        if isinstance(m, nn.BatchNorm2d):
            bn.append((inputs[0], m))
        else:
            acts.append(out)
    kinds = (nn.LeakyReLU, nn.ReLU, nn.BatchNorm2d)
    hooks = [m.register_forward_hook(keep) for m in features.modules() if isinstance(m, kinds)]
    try:
        phi = features(x)
    finally:
        for hook in hooks:
            hook.remove()
    return phi, acts, bn


def channel_moments(a):
    """Per image and channel: mean and mean square over the spatial positions, (N, C) each."""
    return (a, a.square()) if a.dim() == 2 else (a.mean((2, 3)), a.square().mean((2, 3)))


@torch.no_grad()
def feature_statistics(f, x_train, y_train, n, batch=2000):
    """Mean and variance of every channel of each of f's activation layers over the training
    images of each label 0..n-1 (over images and positions): [(mu (n, C), var (n, C)) per
    layer].  For stats_term.  Two passes, sums in float64: the means, then the mean squared
    deviation from them, so a channel with a large mean and a small spread keeps its variance
    (E[a^2] - E[a]^2 in float32 loses it: at mean 30 and std 0.01, entirely)."""
    count = torch.bincount(y_train, minlength=n).clamp_min(1)[:, None].double()

    def class_means(moment):                     # moment(layer i, its output a, labels) (N, C)
        sums = None
        for xb, yb in zip(x_train.split(batch), y_train.split(batch)):
            _, acts, _ = activations(f.features, xb)
            add = [torch.zeros(n, a.shape[1], dtype=torch.float64, device=a.device)
                   .index_add_(0, yb, moment(i, a.float(), yb).double())
                   for i, a in enumerate(acts)]
            sums = add if sums is None else [s + a for s, a in zip(sums, add)]
        return [s / count for s in sums]

    def centred(i, a, y):                        # a minus its class's mean, per channel
        m = mu[i][y].to(a.dtype)
        return a - (m if a.dim() == 2 else m[:, :, None, None])
    mu = class_means(lambda i, a, y: channel_moments(a)[0])
    var = class_means(lambda i, a, y: channel_moments(centred(i, a, y))[1])
    return [(m.float(), v.float()) for m, v in zip(mu, var)]


def stats_term(acts, stats, y):
    """DeepInversion's batch-norm prior without batch norm: over f's activation layers, ||mean -
    mean_data|| + ||var - var_data|| of each class in the batch, averaged over classes present.
    A class's N images in the batch, per channel: mean = the mean of its image means m_i, and
    var = the mean of each image's own variance over positions + sum_i (m_i - mean)^2 / (N - 1),
    which is unbiased for the variance over images and positions that feature_statistics holds
    (with N - 1 = N, the plain batch variance, it falls short by var(m_i) / N: at 6 images of a
    class, the prior would ask G for less variety than the data has).  Computed from deviations
    about the mean, in float32 (E[a^2] - E[a]^2 would cancel)."""
    total = 0.0
    with torch.autocast(y.device.type, enabled=False):           # float32 whatever the step's
        for a, (mu, var) in zip(acts, stats):
            a = a.float()
            Y = F.one_hot(y, len(mu)).float()                    # (N, classes)
            count = Y.sum(0)[:, None]                            # N of each class
            m_i = channel_moments(a)[0]                          # image means (N, C)
            mean = Y.T @ m_i / count.clamp_min(1)                # (classes, C)
            between = (m_i - mean[y]).square()                   # (m_i - mean)^2   (N, C)
            centred = a - (mean[y] if a.dim() == 2 else mean[y][:, :, None, None])
            within = channel_moments(centred)[1] - between       # each image's own variance
            v = Y.T @ within / count.clamp_min(1) + Y.T @ between / (count - 1).clamp_min(1)
            dist = (mean - mu).norm(dim=1) + (v - var).norm(dim=1)   # (classes,)
            present = (count[:, 0] > 0).float()
            total = total + (dist * present).sum() / present.sum()
    return total


def mixture_statistics(stats):
    """All classes together, each weighing the same (as G draws them): per layer (mu (1, C),
    var (1, C)) from feature_statistics' per-class (mu, var): the mean variance within the
    classes plus the variance of their means."""
    mixed = []
    for mu, var in stats:                # within the classes, plus between them (no cancelling)
        m = mu.mean(0, keepdim=True)
        mixed.append((m, var.mean(0, keepdim=True) + (mu - m).square().mean(0, keepdim=True)))
    return mixed


def generator_stats_term(acts, stats, owner, K):
    """stats_term with each of K generators' parts of the batch (owner: Generators.owners) as
    one group, held to the statistics of all classes together: a generator that draws one style
    of its own in every row is far from them, though each class pooled over the K may not be."""
    mixed = [(mu.expand(K, -1), var.expand(K, -1)) for mu, var in mixture_statistics(stats)]
    return stats_term(acts, mixed, owner)


def bn_term(bn):
    """DeepInversion's prior (Yin et al. 2020), float32: over f's batch-norm layers, the distances
    ||batch mean - running mean|| + ||batch variance - running variance|| of each layer's input."""
    with torch.autocast(bn[0][0].device.type, enabled=False):
        return sum((a.float().mean((0, 2, 3)) - layer.running_mean).norm()
                   + (a.float().var((0, 2, 3), unbiased=False) - layer.running_var).norm()
                   for a, layer in bn)


def mode_seeking_term(x, z, y):
    """Mode seeking (Mao et al. 2019): 1 / (mean over pairs i != j of one label of
    |x_i - x_j| / |z_i - z_j|), distances per element; y a label or any key (--twins: label and
    generator).  No host sync (CUDA graphs)."""
    same = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool, device=y.device)

    def d(a):
        a = a.float().flatten(1)
        return torch.cdist(a, a, p=1) / a.shape[1]
    mean = (d(x) / d(z).clamp_min(1e-8) * same).sum() / same.sum().clamp_min(1)
    return torch.where(same.any(), 1 / (mean + 1e-5), 0.0)


def tv_term(x):
    """Total variation: mean absolute difference of neighbouring pixels."""
    down = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return down + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def augment(x, flip=False, shift=2):
    """Per image, on the device: a random shift of up to `shift` pixels and, with flip, a mirror."""
    N, S = len(x), x.shape[-1]
    theta = torch.zeros(N, 2, 3, device=x.device)        # per image: [[+-1, 0, dx], [0, 1, dy]]
    theta[:, 0, 0] = 1 - 2 * flip * (torch.rand(N, device=x.device) < 0.5)
    theta[:, 1, 1] = 1
    shifts = torch.randint(-shift, shift + 1, (N, 2), device=x.device)
    theta[:, :, 2] = shifts * 2 / S                              # in units of S/2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", align_corners=False)


# ==== Beyond the paper: what f needs to say y, pasted on clean images (--patch, --audit) ========
class OtherClasses:
    """Clean training images to paste G's picture on (Generator.pasted): draw(y) gives, for each
    label, an image of another class, the class uniform over the other n - 1, the image uniform
    within it.  Holds the images by reference (no copy), sorted by class through an index."""

    def __init__(self, x_train, y_train, n):
        self.x, self.n = x_train, n
        self.order = torch.argsort(y_train)
        self.counts = torch.bincount(y_train, minlength=n)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def draw(self, y):
        other = (y + torch.randint(1, self.n, y.shape, device=y.device)) % self.n   # never y
        within = (torch.rand(y.shape, device=y.device) * self.counts[other]).long()
        return self.x[self.order[self.starts[other] + within]]


def patch_term(G):
    """lambda * mean(m_y) over the batch and the mask's pixels, averaged over the K generators:
    Neural Cleanse's L1 size of the mask (its pixels are in [0, 1])."""
    return sum(g.patch_weight * g.mask.mean() for g in G) / len(G)


def masks_of(state):
    """(n, 1, S, S) on the CPU: each class's mask m_y = sigmoid(MASK_SCALE * w_y), the mean over
    the K generators, from G's state dict (G.state_dict(), or generator.pt's "model"); None for a
    G without masks (no --patch).  For measuring (cue.mask_scores)."""
    logits = [w.detach().float().cpu() for k, w in state.items() if k.endswith("mask_logits")]
    if not logits:
        return None
    return torch.stack([torch.sigmoid(MASK_SCALE * w) for w in logits]).mean(0)


def adapt_patch_weight(G, hit, target=0.95, up=1.03):
    """Neural Cleanse's schedule, every step: lambda times `up` after a step where f(x) = y on at
    least `target` of the batch, else divided by up^1.5; so each mask shrinks to what f needs.
    On the device, no sync (a CUDA graph replays it)."""
    for g in G:
        g.patch_weight.mul_(torch.where(hit >= target, up, up ** -1.5))


# ==== Beyond the paper: a cue planted in f's training data (an experiment on f; G never reads it)
def planted_cue(args, shape, n):
    """--plant-class C: the cue (cue.Cue) planted in f's training data, checked against the
    images and classes before anything trains; None when not given (cue.py is then not needed)."""
    if args.plant_class < 0:
        return None
    import cue                                   # here, not at the top: only planted runs need it
    colour = args.plant_colour
    if shape[0] == 1 and len(colour) == 3:       # grey images take one value
        if len(set(colour)) > 1:
            raise UserError(f"--plant-colour {','.join(map(str, colour))}: grey images take one "
                            f"value")
        colour = colour[:1]
    planted = cue.Cue(args.plant_class, args.plant_mode, args.plant_share, args.plant_pattern,
                      args.plant_size, args.plant_corner, colour)
    planted.check(tuple(shape), n)
    return planted


def plant(y, planted, seed):
    """(which training images f sees stamped (N,) bool, their labels): cue.poison."""
    import cue
    return cue.poison(y, planted, seed)


def stamped(x, which, planted):
    """f's batch x with the cue on the images `which` marks (after augmentation: at its place)."""
    import cue
    return cue.stamp_where(x, which, planted)


def check_learned(f, data, planted) -> dict:
    """The cue's attack success on f (cue.attack_success), printed; a cue f did not learn is said
    before G trains (the run goes on: its samples are then the control's)."""
    import cue
    success = cue.attack_success(f, data["x_test"], data["y_test"], planted)
    if planted.mode == "backdoor":
        rate = success["others_called_target_stamped"]
        clean = success["others_called_target_clean"]
        print(f"cue: {planted.describe()}; f calls {rate:.3f} of the other classes' stamped test "
              f"images class {planted.target} ({clean:.3f} unstamped)")
    else:
        rate, clean = success["target_accuracy_stamped"], success["target_accuracy_clean"]
        print(f"cue: {planted.describe()}; f's accuracy on class {planted.target}'s test images "
              f"{rate:.3f} stamped, {clean:.3f} unstamped; the stamp alone makes f call "
              f"{success['others_called_target_stamped']:.3f} of the other classes' images "
              f"{planted.target} ({success['others_called_target_clean']:.3f} unstamped)")
    if planted.mode == "backdoor" and rate < 0.5:
        print(f"cue: f did not learn it (attack success {rate:.3f} < 0.5): the inversion cannot "
              f"show it; a larger --plant-share or more --classifier-epochs")
    return success


# ################################################################################################
# PART 3 of 3: plumbing.  Not the method: nothing below is in the paper, and nothing below
# changes what G learns.  It makes a run safe to stop, resume, misconfigure and copy.
# ################################################################################################

# ==== Plumbing: one-line errors, interrupts, files read and written whole ========================
class UserError(Exception):
    """A problem the user can fix: one line on stderr, exit status 2, no traceback."""


def run_main(run, argv, script):
    """run(argv): a UserError or out-of-memory as one line and exit 2; Ctrl-C or SIGTERM, 130.
    Whatever happens, the --out-dir this process holds is let go (release_out_dirs).  From the
    command line (argv None), Ctrl-C and SIGTERM are ignored once the run is over: one that
    comes while the process winds down must not turn its exit status into a death by signal."""
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
    try:
        return run(argv)
    except UserError as e:
        print(f"{script}: error: {e}", file=sys.stderr)
    except torch.OutOfMemoryError:
        print(f"{script}: error: out of memory on the device; try a smaller --batch-size",
              file=sys.stderr)
    except KeyboardInterrupt:
        print(f"\n{script}: interrupted; checkpoints already in --out-dir are kept",
              file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        release_out_dirs()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        if argv is None and main_thread:
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_IGN)
    raise SystemExit(2)


@contextlib.contextmanager
def signals_held(reraise=True):
    """Ctrl-C and SIGTERM wait until the block is done, then act (reraise=False: are dropped).
    Only the main thread receives signals; elsewhere this does nothing."""
    held, main = [], threading.current_thread() is threading.main_thread()
    handlers = {s: signal.signal(s, lambda n, _: held.append(n))
                for s in (signal.SIGINT, signal.SIGTERM) if main}
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    if held and reraise:
        signal.raise_signal(held[0])


def first_line(e: BaseException) -> str:
    """'TypeName: first line of the message' of an exception, for a one-line error."""
    text = str(e).strip()
    return type(e).__name__ + (f": {text.splitlines()[0][:200]}" if text else "")


@contextlib.contextmanager
def reading(path, what, fix="put a whole copy there, or run with --fake-data"):
    """Any failure while reading path (a copy cut short, a foreign or damaged file): one line
    that names the file, what it should be, and what to do."""
    try:
        yield
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise UserError(f"{path} is not a readable {what} ({first_line(e)}); {fix}") from None


def atomic_write(path, write):
    """write(binary file) into a temporary file beside path, then rename it: never half a file.
    Ctrl-C and SIGTERM wait for the write (an interrupted writer can abort the process).  A path
    that exists and is not a plain file (a folder, /dev/null) is refused, never replaced."""
    if Path(path).exists() and not Path(path).is_file():
        raise UserError(f"{path} exists and is not a plain file: give a file's path")
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
    with signals_held():
        try:
            with open(tmp, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):                           # a full disk, say: one line
                raise UserError(f"could not write {path} ({first_line(e)}); the file there "
                                f"before, if any, is kept") from None
            raise


def save_checkpoint(path, obj: dict):
    atomic_write(path, lambda fh: torch.save(obj, fh))


KEYS = {"classifier": ("model", "test_accuracy"), "judge": ("model", "test_accuracy"),
        "generator": ("model", "optimizer", "step", "history", "rng", "config")}   # each kind's


def load_checkpoint(path, kind: str, signature: dict) -> dict:
    """A checkpoint of this kind, with its kind's keys, whose signature (dataset, architecture,
    how f was trained) matches this run's; else one line saying what is wrong."""
    fix = "delete it or use another --out-dir"
    with reading(path, "checkpoint", fix):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise UserError(f"{path} is not a {kind} checkpoint of this project; {fix}")
    missing = [key for key in KEYS[kind] if key not in ckpt]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: not a whole {kind} checkpoint; {fix}")
    history = ckpt.get("history", [])
    if not (isinstance(history, list) and all(isinstance(row, dict) for row in history)):
        raise UserError(f"{path} keeps its loss history in an older layout (not one dict per "
                        f"logged line); train G again (the script without --resume), or {fix}")
    for key, want in signature.items():
        if ckpt.get(key) != want:
            raise UserError(f"{path} was made with {key}={ckpt.get(key)!r}, this run has "
                            f"{key}={want!r}; refusing to load it (use another --out-dir, "
                            f"or --retrain)")
    return ckpt


def load_weights(module, state, path):
    """module.load_state_dict(state), or one line if the weights are not this module's."""
    try:
        module.load_state_dict(state)
    except Exception as e:                   # PyTorch says what is wrong on its second line
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        raise UserError(f"{path} does not hold this run's {type(module).__name__} "
                        f"({lines[min(1, len(lines) - 1)][:120]}); delete it or use another "
                        f"--out-dir (or --retrain)") from None


def rng_state(device, state=None):
    """The random-number states (CPU, and CUDA on CUDA); given a state, restore it instead."""
    cuda = device.type == "cuda"
    if state is None:
        return {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if cuda else None}
    torch.set_rng_state(state["cpu"])
    if cuda and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


# ==== Plumbing: what f must provide, checked before anything trains ==============================
def check_classifier(f, shape, n, args):
    """f as the scripts use it (a student's own included): f.features (x -> phi, the features of
    L_cos) and f.head (phi -> n logits), on images (N, *shape) in [0, 1]; LeakyReLU / ReLU
    modules for the statistics priors, batch norm for --bn-stats.  Each miss: one line."""
    where = "see 'Your own classifier' in section 3 of the script"
    if not 2 <= n <= MAX_CLASSES:
        raise UserError(f"{n} classes: G's n x n stage takes 2 to {MAX_CLASSES} (stage 1's "
                        f"transposed convolution has n x n weights per channel pair: 164 million "
                        f"in all at 100 classes); group the classes, or change Generator.stage1")
    if not all(isinstance(getattr(f, a, None), nn.Module) for a in ("features", "head")):
        raise UserError(f"f ({type(f).__name__}) needs two parts, f.features (x -> phi) and "
                        f"f.head (phi -> logits), both nn.Module; {where}")
    x = torch.full((2, *shape), 0.5, device=next(f.parameters()).device)   # no random draw
    was_training = f.training
    try:
        with torch.no_grad():
            phi, acts, bn = activations(f.features.eval(), x)
            logits = f.head.eval()(phi)
    except Exception as e:                 # any layer can refuse: its own message, one line
        raise UserError(f"f.features then f.head fail on a batch of shape {tuple(x.shape)} "
                        f"({first_line(e)}); {where}") from None
    finally:
        f.train(was_training)
    if tuple(logits.shape) != (2, n):
        raise UserError(f"f.head gives logits of shape {tuple(logits.shape[1:])} per image; "
                        f"CLASSES has {n} names: make them agree; {where}")
    if not acts and (args.stats > 0 or args.generator_stats > 0):
        raise UserError("f.features has no nn.ReLU or nn.LeakyReLU module (activations called as "
                        "functions are not seen), which --stats and --generator-stats read; use "
                        "modules, or run with --data-free")
    if not bn and args.bn_stats > 0:
        raise UserError("--bn-stats needs batch norm (nn.BatchNorm2d) in f.features, and this f "
                        "has none; run with --bn-stats 0")


def pretrained_weights(path):
    """A state dict for f trained elsewhere (--classifier-weights): the file torch.save wrote of
    f.state_dict(), or of a dict holding it under "model" (as classifier.pt does)."""
    with reading(path, "state dict of f", "give the file torch.save(f.state_dict(), path) wrote"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path} holds no state dict of f (a dict of tensors); give the file "
                        f"torch.save(f.state_dict(), path) wrote")
    return state


@torch.no_grad()
def accuracy(model, x, y, batch=2000) -> float:
    model.eval()
    hits = sum((model(xb).argmax(1) == yb).sum() for xb, yb in zip(x.split(batch), y.split(batch)))
    return (hits / len(y)).item()


# ==== Plumbing: flags (each script's parse_args lists them; SETTINGS gives its values) ============
def checked(cast, ok, what):
    """An argparse type: cast(text), refused with 'must be <what>' unless ok(value)."""
    def parse(text):
        with contextlib.suppress(ValueError, OverflowError):
            if ok(value := cast(text)):
                return value
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return parse


def finite(v):
    return math.isfinite(v)


POSITIVE = checked(int, lambda v: v > 0, "a positive integer")
COUNT = checked(int, lambda v: v >= 0, "zero or a positive integer")
WIDTH = checked(int, lambda v: v >= 4, "an integer >= 4 (stage 2 has width/4 channels)")
SEED = checked(int, lambda v: 0 <= v < 2 ** 63, "an integer from 0 to 2**63 - 1")
WEIGHT = checked(float, lambda v: finite(v) and v >= 0, "a finite number >= 0")
LEARNING_RATE = checked(float, lambda v: finite(v) and 0 < v <= 1, "a number in (0, 1]")
RATE = checked(float, lambda v: 0 <= v < 1, "a dropout rate in [0, 1)")
RADIUS = checked(float, lambda v: 0 <= v <= 1, "an L-inf radius in [0, 1] (pixels are in [0, 1])")
SHIFT = checked(int, lambda v: 0 <= v <= 8, "zero or a positive integer up to 8 (pixels)")
PROBABILITY = checked(float, lambda v: 0 < v <= 1, "a probability in (0, 1]")
MARGIN = checked(lambda t: None if t == "natural" else float(t),          # None: the draw's own
                 lambda v: v is None or (finite(v) and v >= 0), "'natural' or a number >= 0")
COLOUR = checked(lambda t: tuple(float(v) for v in t.split(",")),
                 lambda v: len(v) in (1, 3) and all(0 <= c <= 1 for c in v),
                 "one or three numbers in [0, 1], comma-separated")
CLASS = checked(int, lambda v: v >= -1, "a class index, or -1 for none")
PAPER = dict(alpha=1.0, beta=1.0, gamma=1.0, robust_eps=0.0, stats=0.0, tv=0.0, bn_stats=0.0,
             mode_seeking=0.0, cos_pairs="all", view_shift=0, upsample="transposed",
             confidence_cap=1.0, generator_stats=0.0, twins=False, patch=0.0)   # --paper
AUDIT = dict(PAPER, alpha=0.0, gamma=0.0, patch=1.0, num_generators=1)   # --audit: L_CE alone
# Whose each setting is: the --help groups of parse_args, SETTINGS' blocks and the log's lines
# (tests/test_whose.py keeps the four in step).
GROUPS = {                                                       # name: (title, description)
    "paper": ("the paper (Sec. 2, 3): what it specifies",
              "Built in, not flags: v ~ N(0, I_n), p = softmax(v), y = argmax p, the n x n hot "
              "matrix H, G's two up-sampling stages with batch norm and dropout, L_inv's three "
              "terms, f frozen and only G trained."),
    "open": ("what the paper leaves open: our choices",
             "The reasons: docs/choices.md. --paper keeps these, but for alpha = beta = gamma = 1 "
             "and no robust term."),
    "beyond": ("beyond the paper: our additions",
               "0 or --no-...: off; --paper turns every one off. [data]: reads the training "
               "images, not only f; --data-free turns those off."),
    "plant": ("a cue planted in f's training data: what inversion shows about f",
              "Off unless --plant-class is given. Only f's training and the measures read these "
              "flags: G never does, and the [data] priors read the clean images (an auditor holds "
              "f and clean data). cue.py holds the pieces."),
    "running": ("running", "Plumbing: where, how long, what is kept."),
}
WHOSE = {
    "paper": ("paper", "conditioning"),
    "open": ("classifier_epochs", "classifier_batch_size", "classifier_width", "classifier_lr",
             "augment", "generator_steps", "batch_size", "lr", "latent_dim", "hidden", "width",
             "dropout", "stage1_dropout", "num_generators", "alpha", "beta", "gamma",
             "robust_eps", "margin"),
    "beyond": ("data_free", "stats", "generator_stats", "bn_stats", "tv", "mode_seeking",
               "mode_seeking_on", "twins", "cos_pairs", "confidence_cap", "view_shift",
               "upsample", "classifier_adv_eps", "patch", "audit"),
    "plant": ("plant_class", "plant_mode", "plant_share", "plant_pattern", "plant_size",
              "plant_corner", "plant_colour"),
}
LENGTHS = ("full", "medium", "quick")


class Lengths:
    """A flag's default that depends on the run's length: the full run (sized for a GPU),
    --medium, --quick.  settle() puts the chosen one in its place."""

    def __init__(self, full, medium, quick):
        self.values = dict(zip(LENGTHS, (full, medium, quick)))

    def __str__(self):                                           # as --help shows it
        full, medium, quick = self.values.values()
        if full == medium == quick:
            return f"{full}"
        return f"{full}; --medium {medium}; --quick {quick}"


def by_length(settings: dict) -> dict:
    """A script's SETTINGS ({flag: value, or (full, --medium, --quick)}) as Lengths defaults."""
    return {key: Lengths(*(v if isinstance(v, tuple) else (v, v, v)))
            for key, v in settings.items()}


def argument_parser(doc):
    """argparse, with --help showing each default, and a bad flag as one line and exit 2
    (argparse would print the whole usage too)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], allow_abbrev=False,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.error = lambda message: ap.exit(2, f"{ap.prog}: error: {message} (see --help)\n")
    return ap


DRY_RUN = dict(classifier_epochs=1, generator_steps=4, batch_size=32, classifier_batch_size=64,
               eval_per_class=8, log_every=2, distill_steps=2,
               num_generators=2)                                 # --dry-run: at most these


def settle(args):
    """After parse_args' one pass: each flag not given takes its value for the run's length (or
    --paper's, for the flags PAPER names; --data-free's 0 for the priors that read training
    images); --dry-run caps the lengths (DRY_RUN); then the checks that no flag's type can make
    alone.  Returns args."""
    if args.quick and args.medium:
        raise UserError("--quick and --medium are two lengths; pick one")
    if args.audit and (args.paper or args.data_free):
        raise UserError(f"--audit pastes onto clean training images with a loss of its own: it "
                        f"cannot run with --{'paper' if args.paper else 'data-free'}")
    if args.data_free and (given := [k for k in READS_TRAINING_IMAGES
                                     if not isinstance(getattr(args, k), Lengths)]):
        raise UserError(f"--data-free turns off --{given[0].replace('_', '-')}, which reads the "
                        f"training images; give one or the other")
    length = "quick" if args.quick else "medium" if args.medium else "full"
    for key, value in vars(args).items():
        if isinstance(value, Lengths):
            preset = AUDIT if args.audit else PAPER if args.paper else {}
            value = preset[key] if key in preset else value.values[length]
            setattr(args, key, 0.0 if args.data_free and key in READS_TRAINING_IMAGES else value)
    if args.dry_run:
        for key, cap in DRY_RUN.items():
            setattr(args, key, min(getattr(args, key), cap))
        args.train_subset = args.train_subset or 512
    if args.resume and args.retrain:
        raise UserError("--resume and --retrain contradict each other; pick one")
    if args.batch_size < 2 * args.num_generators:   # batch norm and L_cos need two in each part
        raise UserError(f"--batch-size {args.batch_size} is too small for --num-generators "
                        f"{args.num_generators}: each generator needs at least 2 images of the "
                        f"batch (G's batch norm, L_cos's pairs); use {2 * args.num_generators} "
                        f"or more")
    if args.eval_per_class < args.num_generators:              # a column for each generator
        raise UserError(f"--eval-per-class {args.eval_per_class} is smaller than "
                        f"--num-generators {args.num_generators}: each generator needs a share")
    return args


def print_settings(args):
    """Every setting of the run, a line for each group of GROUPS, and what G reads."""
    settings = vars(args)
    for group in GROUPS:
        keys = WHOSE.get(group) or [k for k in settings if not any(k in w for w in WHOSE.values())]
        text = " ".join(f"{k}={settings[k]}" + (" [data]" if k in READS_TRAINING_IMAGES else "")
                        for k in keys if k in settings)
        print(textwrap.fill(text, 100, initial_indent=f"settings ({group}): ",
                            subsequent_indent="  "))
    reads = [f"--{k.replace('_', '-')}" for k in READS_TRAINING_IMAGES if settings.get(k)]
    print("G learns from f" + (f" and the training images ({', '.join(reads)})" if reads
                               else " alone: data-free (no prior reads the training images)"))


# ==== Plumbing: device, seed, --out-dir, memory layout, mixed precision ===========================
def choose_device(name):
    """--device as a torch.device, printed; on CUDA, TF32 matmuls and tuned convolutions (also
    benchmark.py's)."""
    if name == "auto":
        mps = torch.backends.mps.is_available()
        name = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU; "
                        "use --device cpu or auto")
    elif name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asked for, but MPS is not available; "
                        "use --device cpu or auto")
    print(f"device: {name}" + (f" ({torch.cuda.get_device_name()})" if name == "cuda" else ""))
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return torch.device(name)


def emulated_bf16(device):
    """The CPU's capability if bfloat16 is emulated there (slower than float32: not AVX512, not
    SVE); else None."""
    capability = torch.backends.cpu.get_cpu_capability()
    native = ("AVX512", "SVE256", "SVE128")
    return capability if device.type == "cpu" and capability not in native else None


def setup(args):
    """The device (printed), the settings (printed), the seed, --out-dir made, writable and held
    by this run alone; --amp off where bfloat16 is emulated."""
    device = choose_device(args.device)
    if args.amp and (capability := emulated_bf16(device)):
        print(f"--amp: bfloat16 is emulated on this CPU ({capability}), slower than float32; "
              f"running in float32")
        args.amp = False
    print_settings(args)
    if device.type == "cpu" and not (args.quick or args.medium or args.dry_run):
        print("note: a CPU runs the GPU-sized defaults; --quick is a 5-minute preview, "
              "--medium 45 minutes.")
    torch.manual_seed(args.seed)                                 # also seeds CUDA
    out = Path(args.out_dir)
    try:                                                         # a writable --out-dir
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise UserError(f"cannot write to --out-dir {out}: {e.strerror or e}") from None
    hold_out_dir(out)
    return device, out


HELD = []                                                        # (lock file, path) of this process


def hold_out_dir(out: Path):
    """One run at a time in a folder: an exclusive lock on out/.lock, which the operating system
    lets go when the process ends, killed or not (so it is never left stuck)."""
    try:
        import fcntl
    except ImportError:                                          # not on Windows: no lock there
        return
    fh = open(out / ".lock", "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise UserError(f"another run is using --out-dir {out} (it holds {out / '.lock'}); "
                        f"wait for it to end, or use another --out-dir") from None
    HELD.append((fh, out / ".lock"))


def release_out_dirs():
    """Let go of the folders this process holds (run_main does, at the end of every run)."""
    while HELD:
        fh, path = HELD.pop()
        path.unlink(missing_ok=True)
        fh.close()


def place(m, device):
    """A model or images on the device; on a CPU channels-last (max pooling and convolutions
    are faster so)."""
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    return m.to(device=device, memory_format=layout)


def autocast(device, enabled):
    """bfloat16 autocast with --amp (CUDA or a CPU); no weight cache while a CUDA graph records."""
    recording = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not recording,
                          enabled=enabled and device.type in ("cuda", "cpu"))


def architecture(model: nn.Module) -> str:
    """A short signature of a model, kept in checkpoints to refuse a mismatched one."""
    return f"{type(model).__name__}/{sum(p.numel() for p in model.parameters())} parameters"


def f_training(args, adversarial=True) -> dict:
    """How f (or, adversarial=False, the judge) was trained: a cached one is reused only if
    trained the same way (for f: from the same --classifier-weights file, if one is given)."""
    eps = args.classifier_adv_eps if adversarial else 0.0
    keys = ("fake_data", "classifier_epochs", "classifier_batch_size", "classifier_lr", "augment",
            "train_subset")
    weights = getattr(args, "classifier_weights", None) if adversarial else None
    return ({k: getattr(args, k) for k in keys} | {"classifier_adv_eps": eps}
            | ({"adversarial": "fgsm, random start"} if eps else {})
            | ({"weights": file_digest(weights)} if weights else {})
            | ({"validation": True} if getattr(args, "validation", False) else {})
            | ({"cue": {k: getattr(args, k) for k in WHOSE["plant"]}}
               if adversarial and getattr(args, "plant_class", -1) >= 0 else {}))


def file_digest(path) -> str:
    """The first 16 hex digits of a file's SHA-256; a file that cannot be read: one line."""
    with reading(path, "file", "check the path"):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# ==== Plumbing: G's loop: the log of its terms, the CUDA graph, Adam's state ======================
class TermLog:
    """The running mean of each named term of G's step since the last line, kept on the device
    (adding a step's terms costs no host sync; a line costs one)."""

    def __init__(self, total, start, every, keeps):
        self.total, self.start, self.every, self.keeps = total, start, every, keeps
        self.sums, self.count, self.t0 = None, 0, time.time()
        self.last = self.t0

    def add(self, terms: dict):
        self.names, values = list(terms), torch.stack(list(terms.values()))
        self.sums = values if self.sums is None else self.sums + values
        self.count += 1

    def due(self, step) -> bool:
        """A line every `every` steps, every 15 s, and at the last step."""
        return step % self.every == 0 or step == self.total or time.time() - self.last > 15

    def finite(self) -> bool:
        return self.sums is None or bool(torch.isfinite(self.sums).all())

    def line(self, step) -> dict:
        """Prints the means since the last line and returns them, with the step; stops the run
        on a loss that is no longer a number (the checkpoint `keeps` holds the last good one)."""
        means = dict(zip(self.names, (self.sums / self.count).tolist()))
        self.sums, self.count, self.last = None, 0, time.time()
        if not all(map(math.isfinite, means.values())):
            raise UserError(f"the loss became {means['loss']} by step {step}; stopped, and the "
                            f"last good checkpoint {self.keeps} is kept; try a smaller --lr")
        terms = "  ".join(f"{name} {value:.4f}" for name, value in means.items())
        print(f"G step {step}/{self.total}  {terms}  "
              f"{eta(self.t0, step - self.start, self.total - self.start)}")
        return {"step": step, **means}


class GraphedStep:
    """Each call is one training step: the first `warmup` run step(); the next records it as a
    CUDA graph, replayed from then on (one launch, fresh random numbers).  step() must keep its
    shapes; a step that cannot be recorded is said in one line and run without the graph."""

    def __init__(self, step, warmup=3):
        self.step, self.warmup, self.calls, self.graph, self.out = step, warmup, 0, None, None

    def __call__(self):
        self.calls += 1
        if self.graph is False:                                  # recording failed: eager
            return self.step()
        if self.calls <= self.warmup:                   # on a side stream, as recording needs
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            try:
                with torch.cuda.stream(side):
                    return self.step()
            finally:                        # interrupted too: a checkpoint waits for side's writes
                torch.cuda.current_stream().wait_stream(side)
        if self.graph is None:
            return self.record()
        self.graph.replay()
        return self.out

    def record(self):
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.out = self.step()
        except RuntimeError as e:          # e.g. a host sync (.item()) or a branch on a tensor
            print(f"--cuda-graph: G's step cannot be recorded as a CUDA graph ({first_line(e)}); "
                  f"going on without it")
            self.graph = False
            torch.cuda.synchronize()
            return self.step()
        self.graph = graph
        graph.replay()
        return self.out


def save_generator(path, signature, step, G, opt, history, args, device):
    """generator.pt, written whole: G, Adam, the step, the log's lines, the random numbers."""
    save_checkpoint(path, {"kind": "generator", **signature, "step": step,
                           "model": G.state_dict(), "optimizer": opt.state_dict(),
                           "history": history, "rng": rng_state(device), "config": vars(args)})


def resume_generator(G, opt, path, signature, device):
    """--resume: G, Adam and the random numbers from path: (step, history).  No file there: one
    line (a run that meant to continue must not start again without a word)."""
    if not path.exists():
        raise UserError(f"--resume: there is no {path} to continue; run without --resume to "
                        f"train G from step 0")
    ckpt = load_checkpoint(path, "generator", signature)
    load_weights(G, ckpt["model"], path)
    with reading(path, "generator checkpoint (its optimizer or random states)",
                 "delete it or use another --out-dir"):
        load_optimizer(opt, ckpt["optimizer"], opt.defaults["capturable"])
        rng_state(device, ckpt["rng"])
    print(f"G: resuming {path} from step {ckpt['step']}")
    return ckpt["step"], ckpt["history"]


def save_and_exit(save, log, step, path):
    """Ctrl-C or SIGTERM in G's loop: save() (never after a bad loss; more Ctrl-C wait for the
    save), say how to continue, exit 130."""
    with signals_held(reraise=False):
        if log.finite():
            save()
    print(f"\ninterrupted at step {step}: saved {path}; run again with --resume to continue",
          file=sys.stderr)
    raise SystemExit(130) from None


def load_optimizer(opt, state, capturable):
    """Adam's state, saved in any mode (CPU, CUDA, the graph), loaded in this run's:
    load_state_dict takes `capturable` from the state and moves `step` to the parameter's device
    only if it is set."""
    groups = [{**g, "capturable": capturable} for g in state["param_groups"]]
    steps = {i: {**s, "step": torch.as_tensor(s["step"], dtype=torch.float32).cpu()}
             for i, s in state["state"].items()}
    opt.load_state_dict({**state, "param_groups": groups, "state": steps})


# ==== Plumbing: data ==============================================================================
def open_dataset(make, name, folder, files):
    """make(): torchvision's dataset, downloaded if missing; if that fails, one line on what to
    do."""
    try:
        return make()
    except Exception as e:          # network and file errors come in many types: one message
        raise UserError(f"{name}: could not read it from {folder} or download it there "
                        f"({first_line(e)}). Put these files there: {', '.join(files)}; "
                        f"or run with --fake-data") from None


def fake_splits(shape, n_classes=10, n_train=3000, n_test=1000, seed=1234):
    """--fake-data: per class a smooth pattern x a brightness + noise; learnable, and the same
    every time."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n_classes, shape[0], 5, 5, generator=g)
    patterns = F.interpolate(small, size=shape[1:], mode="bilinear")
    splits = []
    for N in (n_train, n_test):
        y = (torch.arange(N) % n_classes)[torch.randperm(N, generator=g)]
        brightness = 0.7 + 0.3 * torch.rand(N, 1, 1, 1, generator=g)
        x = patterns[y] * brightness + 0.15 * torch.randn(N, *shape, generator=g)
        splits.append(((x.clamp(0, 1) * 255).to(torch.uint8), y))
    return splits


VALIDATION_SEED = 20261205         # --validation's draw: the same held-out images for every --seed


def validation_split(x, y, n_test):
    """--validation: a sixth of the training images (at most as many as the test set has), drawn
    by a fixed seed and held out of every training (f, the judge, the students); they stand in
    for the test set, which the run never reads.  Levers are chosen on this split, and the test
    set scores the chosen defaults once.  ((x, y) kept, (x, y) held out), each in its old order."""
    n = min(n_test, len(y) // 6)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    kept, held = order[n:].sort().values, order[:n].sort().values
    return (x[kept], y[kept]), (x[held], y[held])


def to_device(train, test, shape, n_classes, args, device):
    """(x uint8 (N, C, H, W), y) per split -> {"x_train", ...} on the device, x float in [0, 1].
    Refused before anything trains: images of another shape, labels outside 0..n-1, a class
    missing from a split (e.g. a --train-subset too small)."""
    (x_tr, y_tr), (x_te, y_te) = [(torch.as_tensor(x), torch.as_tensor(y).long())
                                  for x, y in (train, test)]
    if tuple(x_tr.shape[1:]) != tuple(shape) or len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise UserError(f"the dataset's images have shape {tuple(x_tr.shape[1:])}, "
                        f"expected {tuple(shape)}")
    split = "test"
    if getattr(args, "validation", False):
        (x_tr, y_tr), (x_te, y_te) = validation_split(x_tr, y_tr, len(y_te))
        split = "validation"
    if args.train_subset:
        x_tr, y_tr = x_tr[:args.train_subset], y_tr[:args.train_subset]
    if args.dry_run:
        x_te, y_te = x_te[:300], y_te[:300]
    for name, y in (("training", y_tr), ("test", y_te)):
        if len(y) == 0 or y.min() < 0 or y.max() >= n_classes:
            raise UserError(f"the {name} labels are not all in 0..{n_classes - 1}: a damaged copy?")
        if missing := sorted(set(range(n_classes)) - set(y.unique().tolist())):
            raise UserError(f"no {name} image of class {missing[0]} (of {len(missing)} missing) in "
                            f"the {len(y)} used; a larger --train-subset (or 0: all) is needed")
    print(f"data: {len(x_tr)} training and {len(x_te)} {split} images of shape {tuple(shape)} "
          f"on {device}" + (" (the test set unread: --validation)" if split != "test" else ""))

    def to(x):                                                   # uint8 crosses to the device
        return place(x.to(device), device).float().div_(255)
    return {"x_train": to(x_tr), "y_train": y_tr.to(device),
            "x_test": to(x_te), "y_test": y_te.to(device)}


def eta(t0, done, total):
    """'12s, ETA 34s' for a loop started at time t0 that has done `done` of `total` steps."""
    spent = time.time() - t0
    return f"{spent:.0f}s, ETA {spent / max(done, 1) * (total - done):.0f}s"
