"""Shared pieces of "Network Inversion of Convolutional Neural Nets" (Suhail and Sethi).

The four scripts (mnist_, fashion_, svhn_, cifar10_inversion.py) read top to bottom like the
paper; this file holds what they share, in the same order as the paper uses it:

  Section 2, conditioning   sample_conditioning, conditioning_for_labels, hot_matrix
  Section 2, generator      UpBlock, Generator                      G(z, p, H)
  Section 2, loss           kl_term, ce_term, cosine_term, inversion_loss   L_inv
  Section 3, robust         robust_term                             perturbed x keeps label y
  beyond the paper          tv_term (image prior), Judge (independent classifier)
  measurement               metrics: diversity, Frechet distance, nearest-neighbour distance
  plumbing                  flags, device, seed, data (real formats + fake), training loops,
                            atomic checkpoints, figures, metrics.json

Nothing here runs at import time.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import pickle
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class UserError(Exception):
    """A problem the user can fix; reported as one line, exit status 2, no traceback."""


# =============================================================================================
# Section 2: conditioning.  v ~ N(0, I_n),  p = softmax(v),  y = argmax p,  H = hot matrix of y
# =============================================================================================
def hot_matrix(y: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) labels -> (N, 1, n, n) matrices with row y and column y set to 1, zeros elsewhere."""
    one_hot = F.one_hot(y, n).to(torch.float32)                  # (N, n)
    H = one_hot[:, :, None] + one_hot[:, None, :]                # row y plus column y
    return H.clamp_(max=1.0).unsqueeze(1)                        # (N, 1, n, n), H[y, y] = 1


def sample_conditioning(N: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's conditioning for a batch: p = softmax(v), v ~ N(0, I_n); y = argmax p; H."""
    v = torch.randn(N, n, device=device)
    p = torch.softmax(v, dim=1)                                  # input distribution P
    y = p.argmax(dim=1)                                          # conditioning label
    return p, y, hot_matrix(y, n)


def conditioning_for_labels(y: torch.Tensor, n: int, intensity: float | None = None, v=None):
    """Conditioning whose argmax is the given label y.

    v ~ N(0, I_n) is drawn as in training, then v[y] is set to the largest entry of v plus
    `intensity` (a logit margin).  intensity=None keeps the natural margin of a random draw
    (the largest draw is swapped into position y), so samples look like training conditioning;
    a small intensity makes y barely the largest, a large one makes p nearly one-hot.
    v: optional (N, n) draw to use instead of a fresh one (for the intensity figure).
    """
    N = y.shape[0]
    v = torch.randn(N, n, device=y.device) if v is None else v.clone()
    rows = torch.arange(N, device=y.device)
    top = v.argmax(dim=1)
    if intensity is None:                                        # swap the largest entry into y
        v_top, v_y = v[rows, top].clone(), v[rows, y].clone()
        v[rows, top], v[rows, y] = v_y, v_top
    else:
        others = v.scatter(1, y[:, None], float("-inf"))
        v[rows, y] = others.max(dim=1).values + intensity
    p = torch.softmax(v, dim=1)
    return p, y, hot_matrix(y, n)


# =============================================================================================
# Section 2: generator G(z, p, H)
# =============================================================================================
class UpBlock(nn.Sequential):
    """One up-convolution: (C_in, s, s) -> (C_out, size, size), batch norm, LeakyReLU, dropout.

    mode "transposed" (default): a transposed convolution, as the paper writes; sizes are exact
    when size = 2 s (kernel 4, stride 2) or size > s (stride 1, kernel size - s + 1).
    mode "resize": nearest-neighbour resize then a 3x3 convolution (no checkerboard artefacts).
    """

    def __init__(self, c_in, c_out, s_in, size, dropout, mode="transposed"):
        if mode == "resize":
            layers = [nn.Upsample(size=(size, size), mode="nearest"),
                      nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
        elif size == 2 * s_in:
            layers = [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False)]
        else:
            layers = [nn.ConvTranspose2d(c_in, c_out, size - s_in + 1, bias=False)]
        layers += [nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]             # bias is batch norm's
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class Generator(nn.Module):
    """G(z, p, H) -> x, one class for 1x28x28 and 3x32x32.

    p (N, n)  --Linear-->  (N, hidden)  ++ z (N, latent)                      concatenation
              --stage 1: transposed conv-->  (N, width, n, n)                 vector -> n x n
              ++ H (N, 1, n, n)  --stage 2: up-convs with BN + dropout-->     up to image size
              --3x3 conv + sigmoid-->  x (N, channels, image_size, image_size) in [0, 1]

    conditioning: "vector-matrix" (the paper's), "vector" (no H), "label" (a learned embedding
    of y instead of p and no H: the baseline the paper reports as ineffective).
    """

    def __init__(self, channels=1, image_size=28, n_classes=10, latent_dim=64, hidden=64,
                 width=128, dropout=0.3, upsample="transposed", conditioning="vector-matrix"):
        super().__init__()
        if conditioning not in ("vector-matrix", "vector", "label"):
            raise ValueError(f"unknown conditioning {conditioning!r}")
        self.n, self.latent_dim, self.conditioning = n_classes, latent_dim, conditioning
        self.image_shape = (channels, image_size, image_size)
        n, half = n_classes, image_size // 2
        if conditioning == "label":
            self.embed = nn.Embedding(n, hidden)                 # baseline: label embedding
        else:
            self.embed = nn.Linear(n, hidden)                    # paper: linear map of p
        self.stage1 = nn.Sequential(                             # (hidden+latent, 1, 1) -> (width, n, n)
            nn.ConvTranspose2d(hidden + latent_dim, width, n, bias=False),
            nn.BatchNorm2d(width), nn.LeakyReLU(0.2))
        h_channels = 1 if conditioning == "vector-matrix" else 0
        self.stage2 = nn.Sequential(                             # (width+1, n, n) -> (width/4, size, size)
            UpBlock(width + h_channels, width // 2, n, half, dropout, upsample),
            UpBlock(width // 2, width // 4, half, image_size, dropout, upsample))
        self.to_image = nn.Conv2d(width // 4, channels, 3, padding=1)

    def forward(self, z, p, H):
        e = self.embed(p.argmax(1) if self.conditioning == "label" else p)   # (N, hidden)
        h = torch.cat([e, z], dim=1)[:, :, None, None]           # (N, hidden+latent, 1, 1)
        h = self.stage1(h)                                       # (N, width, n, n)
        if self.conditioning == "vector-matrix":
            h = torch.cat([h, H], dim=1)                         # (N, width+1, n, n)
        h = self.stage2(h)                                       # (N, width/4, size, size)
        return torch.sigmoid(self.to_image(h))                   # (N, C, size, size) in [0, 1]


def sampling_mode(G: nn.Module, dropout_on: bool = True) -> nn.Module:
    """Batch norm uses its running statistics; dropout stays on (our choice, see README)."""
    G.eval()
    if dropout_on:
        for m in G.modules():
            if isinstance(m, (nn.Dropout, nn.Dropout2d)):
                m.train()
    return G


@torch.no_grad()
def generate(G, y, n, intensity=None, batch=1000):
    """Images for the chosen labels y, conditioned as conditioning_for_labels describes."""
    out = []
    for y_chunk in y.split(batch):
        p, _, H = conditioning_for_labels(y_chunk, n, intensity)
        z = torch.randn(len(y_chunk), G.latent_dim, device=y.device)
        out.append(G(z, p, H))
    return torch.cat(out)


# =============================================================================================
# Section 2: inversion loss  L_inv = alpha * L_KL + beta * L_CE + gamma * L_cos
# =============================================================================================
def kl_term(logits, p):
    """L_KL = sum_i P(i) log(P(i) / Q(i)), Q = softmax(f(x)); mean over the batch."""
    log_q = torch.log_softmax(logits, dim=1)
    return (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(dim=1).mean()


def ce_term(logits, y):
    """L_CE = -sum_i y_i log(y_hat_i) with y one-hot at the conditioning label; batch mean."""
    return F.cross_entropy(logits, y)


def cosine_term(phi):
    """L_cos = 1/(N(N-1)) sum_{i != j} cos(phi_i, phi_j) over the batch's features phi."""
    N = phi.shape[0]
    u = F.normalize(phi.flatten(1), dim=1)
    gram = u @ u.T                                               # cos(theta_ij), diagonal = 1
    return (gram.sum() - gram.diagonal().sum()) / (N * (N - 1))


def inversion_loss(logits, phi, p, y, alpha, beta, gamma):
    """L_inv and its terms (the terms are detached copies, for logging)."""
    kl, ce, cos = kl_term(logits, p), ce_term(logits, y), cosine_term(phi)
    total = alpha * kl + beta * ce + gamma * cos                 # L_inv
    return total, {"kl": kl.detach(), "ce": ce.detach(), "cos": cos.detach()}


# =============================================================================================
# Section 3: robust inversion, and an image prior (beyond the paper)
# =============================================================================================
def robust_term(f, x, y, eps):
    """Section 3: a perturbation of x within the L-inf ball of radius eps must keep label y.

    The perturbation is the worst case to first order (one signed-gradient step of size eps,
    FGSM); the term is CE(f(clamp(x + delta, 0, 1)), y).  Gradients reach G through x.
    """
    x_req = x.detach().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(F.cross_entropy(f(x_req), y), x_req)
    delta = eps * grad.sign()
    return F.cross_entropy(f((x + delta).clamp(0, 1)), y)


def activations(features: nn.Sequential, x):
    """Run f's feature layers on x; return the output of every activation layer (LeakyReLU or
    ReLU), in order.  The last entry is phi(x) when features ends in an activation + dropout."""
    acts = []
    for layer in features:
        x = layer(x)
        if isinstance(layer, (nn.LeakyReLU, nn.ReLU)):
            acts.append(x)
    return x, acts


def channel_moments(a):
    """Per image and channel: mean and mean square over the spatial positions, (N, C) each."""
    if a.dim() == 2:                                             # (N, C): no spatial positions
        return a, a.square()
    return a.mean((2, 3)), a.square().mean((2, 3))


@torch.no_grad()
def feature_statistics(f, x_train, y_train=None, n=1, batch=2000):
    """Mean and variance of every channel of each of f's activation layers over the training
    images: per class (rows 0..n-1) when y_train is given, else over all images (one row).
    Returns [(mu (n, C), var (n, C)) per layer].  Used by stats_term (beyond the paper)."""
    y_train = torch.zeros(len(x_train), dtype=torch.long, device=x_train.device) if y_train is None else y_train
    sums = None
    for xb, yb in zip(x_train.split(batch), y_train.split(batch)):
        _, acts = activations(f.features, xb)
        add = [tuple(torch.zeros(n, m.shape[1], device=m.device).index_add_(0, yb, m) for m in channel_moments(a))
               for a in acts]
        sums = add if sums is None else [(s0 + a0, s1 + a1) for (s0, s1), (a0, a1) in zip(sums, add)]
    count = torch.bincount(y_train, minlength=n).clamp_min(1)[:, None].float()
    return [(s0 / count, s1 / count - (s0 / count).square()) for s0, s1 in sums]


def stats_term(acts, stats, y=None):
    """Beyond the paper (after DeepInversion's batch-norm prior, without needing batch norm):
    sum over layers of ||mean - mean_data|| + ||var - var_data|| over channels.  With per-class
    statistics (n rows) each class in the batch is compared with its own class's statistics
    and the class terms are averaged; with one row, the whole batch is compared at once."""
    total = 0.0
    for a, (mu, var) in zip(acts, stats):
        m, sq = channel_moments(a.float())                       # (N, C) each
        groups = torch.zeros_like(m[:, 0], dtype=torch.long) if len(mu) == 1 else y
        Y = F.one_hot(groups, len(mu)).float()                   # (N, groups)
        count = Y.sum(0)[:, None]                                # images per group in the batch
        mean = Y.T @ m / count.clamp_min(1)                      # (groups, C)
        v = Y.T @ sq / count.clamp_min(1) - mean.square()
        dist = (mean - mu).norm(dim=1) + (v - var).norm(dim=1)   # (groups,)
        present = (count[:, 0] > 0).float()
        total = total + (dist * present).sum() / present.sum()
    return total


def tv_term(x):
    """Total variation prior (beyond the paper): mean absolute difference of neighbours."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


# =============================================================================================
# The independent judge: a classifier of another architecture, never used to train G
# =============================================================================================
class Judge(nn.Module):
    """Batch-norm ReLU CNN with average pooling (the classifiers use LeakyReLU, dropout, FC)."""

    def __init__(self, channels=1, n_classes=10, width=32):
        super().__init__()
        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.features = nn.Sequential(
            *block(channels, width), nn.AvgPool2d(2),                       # (w, S/2, S/2)
            *block(width, 2 * width), nn.AvgPool2d(2),                      # (2w, S/4, S/4)
            *block(2 * width, 4 * width), *block(4 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())                          # (4w,)
        self.head = nn.Linear(4 * width, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


# =============================================================================================
# Plumbing: flags
# =============================================================================================
def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive integer, got {text}")
    return value


def finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def margin_value(text):
    """--margin: "natural" (None) or a non-negative logit margin."""
    if text == "natural":
        return None
    try:
        return non_negative_float(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"must be 'natural' or a number >= 0, got {text}") from None


def non_negative_float(text):
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """A bad flag: one line, exit status 2 (argparse would also print the whole usage)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# The defaults of all four scripts (each script's DEFAULTS and QUICK change a few), and --quick:
# a preset for a laptop CPU (a few minutes on 2 cores), printed at the start of a run.
DEFAULTS = dict(batch_size=256, classifier_batch_size=256, classifier_epochs=15, classifier_lr=2e-3,
                classifier_noise=0.0, classifier_adv_eps=0.0, generator_steps=3000, lr=2e-3,
                latent_dim=64, hidden=64, width=128, dropout=0.3, alpha=1.0, beta=5.0, gamma=1.0,
                robust_eps=0.05, stats=1.0, stats_by="class", tv=0.0, eval_every=250)
QUICK = dict(classifier_epochs=2, augment=False, train_subset=30000, classifier_batch_size=128,
             generator_steps=600, batch_size=64, width=64, eval_every=100, log_every=50,
             eval_per_class=50)


def build_parser(dataset, description, defaults, quick):
    """The flags every script shares, with the script's own defaults."""
    ap = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = ap.add_argument
    add("--data-dir", default="./data", help="where the dataset is (or is downloaded to)")
    add("--out-dir", default=f"runs/{dataset}", help="where checkpoints, figures and metrics go")
    add("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"],
        help="auto picks cuda, then mps, then cpu")
    add("--seed", type=int, default=0, help="random seed")
    add("--batch-size", type=positive_int, default=defaults["batch_size"], help="generator batch size N")
    add("--classifier-batch-size", type=positive_int, default=defaults["classifier_batch_size"])
    add("--classifier-epochs", type=positive_int, default=defaults["classifier_epochs"])
    add("--classifier-lr", type=finite_float, default=defaults["classifier_lr"])
    add("--classifier-noise", type=non_negative_float, default=defaults["classifier_noise"],
        help="std of Gaussian noise added to training images of f (beyond the paper)")
    add("--classifier-adv-eps", type=non_negative_float, default=defaults["classifier_adv_eps"],
        help="adversarial training of f (beyond the paper): FGSM L-inf radius in pixels; 0 off")
    add("--train-subset", type=non_negative_int, default=0,
        help="train f and the judge on the first K training images (0: all)")
    add("--augment", action=argparse.BooleanOptionalAction, default=True,
        help="random shifts (and flips where the dataset allows) when training f and the judge")
    add("--retrain", action="store_true", help="train f and the judge again even if cached")
    add("--generator-steps", type=positive_int, default=defaults["generator_steps"])
    add("--lr", type=finite_float, default=defaults["lr"], help="generator learning rate (Adam)")
    add("--latent-dim", type=positive_int, default=defaults["latent_dim"], help="size of z")
    add("--hidden", type=positive_int, default=defaults["hidden"], help="size of the linear map of p")
    add("--width", type=positive_int, default=defaults["width"], help="generator channels after stage 1")
    add("--dropout", type=non_negative_float, default=defaults["dropout"], help="generator dropout")
    add("--upsample", default="transposed", choices=["transposed", "resize"],
        help="up-convolution: transposed conv (the paper's) or nearest resize + 3x3 conv")
    add("--conditioning", default="vector-matrix", choices=["vector-matrix", "vector", "label"],
        help="what G is told: p and H (paper), p only, or a label embedding (baseline)")
    add("--alpha", type=finite_float, default=defaults["alpha"], help="weight of L_KL")
    add("--beta", type=finite_float, default=defaults["beta"], help="weight of L_CE")
    add("--gamma", type=finite_float, default=defaults["gamma"], help="weight of L_cos")
    add("--robust-eps", type=non_negative_float, default=defaults["robust_eps"],
        help="Section 3: L-inf radius (pixels in [0,1]) of the perturbation that must keep y; 0 off")
    add("--robust-weight", type=non_negative_float, default=1.0, help="weight of the robust term")
    add("--stats", type=non_negative_float, default=defaults["stats"],
        help="weight of the feature-statistics prior (beyond the paper); 0 off")
    add("--stats-by", default=defaults["stats_by"], choices=["class", "all"],
        help="the prior compares each class with its own class's statistics, or the batch with all data's")
    add("--tv", type=non_negative_float, default=defaults["tv"],
        help="weight of the total-variation prior (beyond the paper); 0 off")
    add("--margin", type=margin_value, default=1.0, metavar="M|natural",
        help="sampling: v_y = largest other v + M (the paper's arg-max intensity); 'natural' keeps "
             "the random draw's own margin. Used for samples.pt, the figures and the metrics")
    add("--num-generators", type=positive_int, default=1,
        help="train K generators with seeds seed..seed+K-1; samples.png columns are generators")
    add("--eval-per-class", type=positive_int, default=100, help="samples per class for metrics")
    add("--eval-every", type=positive_int, default=defaults["eval_every"],
        help="evaluate target/judge accuracy every this many generator steps")
    add("--log-every", type=positive_int, default=100, help="print progress every this many steps")
    add("--checkpoint-every", type=positive_int, default=500, help="save generator.pt every this many steps")
    add("--amp", action="store_true",
        help="bfloat16 autocast (CUDA; or a CPU with bfloat16 instructions, e.g. AMX)")
    add("--compile", action="store_true", help="torch.compile the models")
    add("--cuda-graph", action=argparse.BooleanOptionalAction, default=True,
        help="on CUDA, record the generator's training step once as a CUDA graph and replay it "
             "(the whole step as one launch; see README, Speed); ignored elsewhere and with --compile")
    add("--fake-data", action="store_true", help="synthetic dataset-shaped data; never downloads")
    add("--fake-size", type=positive_int, default=3000,
        help="training images of --fake-data (set it to the real size to time a full run)")
    add("--dry-run", action="store_true", help="a handful of steps per phase, all outputs written")
    add("--quick", action="store_true", help="preset for a laptop CPU: " +
        ", ".join(f"{k.replace('_', '-')}={v}" for k, v in quick.items()))
    add("--resume", action="store_true", help="continue from the checkpoints in --out-dir")
    return ap


def finish_args(ap, argv, quick):
    """Parse; apply --quick (only to flags not given on the command line) and --dry-run."""
    args = ap.parse_args(argv)
    if args.quick:
        unset = object()                         # argparse leaves attributes already set alone
        probe = ap.parse_args(argv, argparse.Namespace(**{a.dest: unset for a in ap._actions}))
        for key, value in quick.items():
            if getattr(probe, key) is unset:     # not written on the command line
                setattr(args, key, value)
    if args.dry_run:
        args.classifier_epochs, args.generator_steps = 1, min(args.generator_steps, 4)
        args.train_subset = args.train_subset or 512
        args.eval_per_class, args.log_every, args.eval_every = min(args.eval_per_class, 8), 2, 2
        args.batch_size = min(args.batch_size, 32)
    if args.resume and args.retrain:
        raise UserError("--resume and --retrain contradict each other; pick one")
    return args


def run_main(run, argv, script):
    """Run a script's body; a UserError becomes one line on stderr and exit status 2."""
    try:
        return run(argv)
    except UserError as e:
        print(f"{script}: error: {e}", file=sys.stderr)
        raise SystemExit(2)
    except torch.OutOfMemoryError:
        print(f"{script}: error: out of memory on the device; try a smaller --batch-size",
              file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt:
        print(f"\n{script}: interrupted; checkpoints already saved in --out-dir are kept", file=sys.stderr)
        raise SystemExit(130)


# =============================================================================================
# Plumbing: device, seed
# =============================================================================================
def choose_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else (
            "mps" if torch.backends.mps.is_available() else "cpu")
    elif name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    elif name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asked for, but MPS is not available; use --device cpu or auto")
    print(f"device: {name}" + (f" ({torch.cuda.get_device_name()})" if name == "cuda" else ""))
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return torch.device(name)


def seed_everything(seed: int):
    torch.manual_seed(seed)            # also seeds CUDA


def layout(device):
    """Memory layout of images and convolution weights.  On a CPU, channels-last: max pooling
    and oneDNN convolutions run several times faster than in the default NCHW layout (see
    README, Speed).  On CUDA the default layout is kept (not measured otherwise)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def place(model: nn.Module, device) -> nn.Module:
    """Move a model to the device in the layout above."""
    device = torch.device(device)
    return model.to(device=device, memory_format=layout(device))


def autocast(device, enabled):
    """bfloat16 autocast on CUDA or the CPU when --amp is given; a no-op otherwise (MPS).
    Its cache of cast weights is off while a CUDA graph is being recorded (a graph must not
    keep tensors cast outside it)."""
    recording = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type in ("cuda", "cpu"),
                          cache_enabled=not recording)


def uses_cuda_graph(args, device) -> bool:
    """--cuda-graph applies: on CUDA, and not with --compile.  G's optimiser must then be
    made with capturable=True."""
    return args.cuda_graph and device.type == "cuda" and not args.compile


class GraphedStep:
    """--cuda-graph: each call is one training step.  The first `warmup` calls run step() as
    written, on a side stream (as recording requires); the next call records one call of
    step() as a CUDA graph, and that call and every later one replay the graph: the whole
    step (forward, backward, Adam) as one launch, with no Python between its kernels.  The
    random numbers differ on every replay.  step() must keep its shapes, never read a value
    back to the host, and use an optimiser made with capturable=True.  Returns what step()
    returns: tensors that each replay overwrites in place."""

    def __init__(self, step, warmup=3):
        self.step, self.warmup, self.calls, self.graph, self.out = step, warmup, 0, None, None

    def __call__(self):
        self.calls += 1
        if self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step()
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.step()
        self.graph.replay()
        return self.out


def training_step(inversion_step, G, f, opt, args, device):
    """The script's inversion step as training runs it: on torch.compile'd models with
    --compile, recorded and replayed as a CUDA graph with --cuda-graph on CUDA."""
    G_run, f_run = (torch.compile(G), torch.compile(f)) if args.compile else (G, f)
    step = lambda: inversion_step(G_run, f_run, opt, args, device)              # noqa: E731
    return GraphedStep(step) if uses_cuda_graph(args, device) else step


# =============================================================================================
# Plumbing: data.  torchvision downloads; the small readers below read its on-disk formats.
# =============================================================================================
IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
DATASETS = {   # torchvision class name -> (folder under --data-dir, files in it)
    "MNIST": ("MNIST/raw", IDX_FILES),
    "FashionMNIST": ("FashionMNIST/raw", IDX_FILES),
    "CIFAR10": ("cifar-10-batches-py", CIFAR_FILES),
    "SVHN": ("", ["train_32x32.mat", "test_32x32.mat"]),
}


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (MNIST's format; plain or .gz): big-endian dims after a 4-byte magic."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = raw[4 + 4 * ndim:]
    if len(data) != math.prod(dims):
        raise UserError(f"{path} is truncated: expected {math.prod(dims)} bytes of data, found {len(data)}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(dims)


def read_cifar_batch(path: Path):
    """A pickled CIFAR-10 batch: {'data': (N, 3072) uint8, 'labels': [N ints]}."""
    with open(path, "rb") as fh:
        batch = pickle.load(fh, encoding="latin1")
    x = torch.as_tensor(batch["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32)
    return x, torch.as_tensor(batch["labels"], dtype=torch.long)


def read_svhn_mat(path: Path):
    """An SVHN .mat file: X (32, 32, 3, N) uint8, y (N, 1) with digit 0 stored as 10."""
    from scipy.io import loadmat        # scipy is only needed for SVHN
    mat = loadmat(str(path))
    x = torch.as_tensor(mat["X"]).permute(3, 2, 0, 1).contiguous()   # (N, 3, 32, 32)
    y = torch.as_tensor(mat["y"].astype("int64")).reshape(-1) % 10
    return x, y


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def read_dataset(name: str, root: Path):
    """(x_train uint8 (N,C,H,W), y_train, x_test, y_test) from the files torchvision lays out."""
    sub, files = DATASETS[name]
    folder = root / sub
    paths = [_find(folder, f) for f in files]
    if any(p is None for p in paths):
        return None
    if name in ("MNIST", "FashionMNIST"):
        x_tr, y_tr, x_te, y_te = (read_idx(p) for p in paths)
        return x_tr[:, None], y_tr.long(), x_te[:, None], y_te.long()
    if name == "CIFAR10":
        train = [read_cifar_batch(p) for p in paths[:5]]
        x_te, y_te = read_cifar_batch(paths[5])
        return torch.cat([b[0] for b in train]), torch.cat([b[1] for b in train]), x_te, y_te
    (x_tr, y_tr), (x_te, y_te) = read_svhn_mat(paths[0]), read_svhn_mat(paths[1])
    return x_tr, y_tr, x_te, y_te


def missing_data_message(name: str, root: Path, reason: str) -> str:
    sub, files = DATASETS[name]
    return (f"{name} is not in {root / sub} and could not be downloaded ({reason}). "
            f"Put these files there by hand: {', '.join(files)} (.gz is fine for IDX files), "
            f"or run with --fake-data to use synthetic data instead")


def download(name: str, root: Path):
    """Let torchvision download the dataset into root (it lays the files out as read above)."""
    import torchvision
    cls = getattr(torchvision.datasets, name)
    try:
        if name == "SVHN":
            for split in ("train", "test"):
                cls(str(root), split=split, download=True)
        else:
            for train in (True, False):
                cls(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        raise UserError(missing_data_message(name, root, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")) from None


def fake_dataset(shape, n_classes=10, n_train=3000, n_test=1000, seed=1234):
    """Synthetic data a classifier can learn: each class a smooth pattern of its own, plus
    noise, a random shift and random brightness.  Deterministic for a given seed."""
    g = torch.Generator().manual_seed(seed)
    C, S, _ = shape
    coarse = torch.rand(n_classes, C, 5, 5, generator=g)
    patterns = F.interpolate(coarse, size=(S, S), mode="bilinear", align_corners=False)

    def draw(N):
        y = torch.arange(N) % n_classes
        y = y[torch.randperm(N, generator=g)]
        x = patterns[y] * (0.7 + 0.3 * torch.rand(N, 1, 1, 1, generator=g))
        shift = torch.randint(-2, 3, (2,), generator=g).tolist()
        x = torch.roll(x, shifts=shift, dims=(2, 3))
        x = x + 0.15 * torch.randn(x.shape, generator=g)
        return (x.clamp(0, 1) * 255).to(torch.uint8), y

    return (*draw(n_train), *draw(n_test))


def load_data(name, shape, args, device):
    """Whole splits as float tensors in [0, 1] on the device: x (N, C, H, W), y (N,)."""
    if args.fake_data:
        x_tr, y_tr, x_te, y_te = fake_dataset(shape, n_train=getattr(args, "fake_size", 3000))
        print(f"data: synthetic {name}-shaped data (--fake-data)")
    else:
        root = Path(args.data_dir)
        found = read_dataset(name, root)
        if found is None:
            print(f"data: {name} not found under {root}, downloading")
            download(name, root)
            found = read_dataset(name, root)
            if found is None:
                raise UserError(missing_data_message(name, root, "files missing after download"))
        x_tr, y_tr, x_te, y_te = found
    if tuple(x_tr.shape[1:]) != tuple(shape) or len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise UserError(f"{name} files have images of shape {tuple(x_tr.shape[1:])}, expected {shape}")
    if args.train_subset:
        x_tr, y_tr = x_tr[:args.train_subset], y_tr[:args.train_subset]
    if getattr(args, "dry_run", False):                          # a handful of test images too
        x_te, y_te = x_te[:300], y_te[:300]
    to = lambda x: x.to(device=device, dtype=torch.float32, memory_format=layout(device)).div_(255)  # noqa: E731
    data = {"x_train": to(x_tr), "y_train": y_tr.to(device), "x_test": to(x_te), "y_test": y_te.to(device)}
    print(f"data: {len(x_tr)} training and {len(x_te)} test images of shape {tuple(shape)} on {device}")
    return data


def augment(x, shift=2, flip=False, noise=0.0):
    """Per-image random translation by up to `shift` pixels (zero padding), optional
    horizontal flip and Gaussian noise; all on the device, no host round trip."""
    N, C, S, _ = x.shape
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift))
        d = torch.randint(0, 2 * shift + 1, (2, N, 1, 1), device=x.device)
        ar = torch.arange(S, device=x.device)
        rows = (ar.view(1, S, 1) + d[0]).unsqueeze(1)            # (N, 1, S, 1)
        cols = (ar.view(1, 1, S) + d[1]).unsqueeze(1)            # (N, 1, 1, S)
        n_idx = torch.arange(N, device=x.device).view(N, 1, 1, 1)
        c_idx = torch.arange(C, device=x.device).view(1, C, 1, 1)
        x = padded[n_idx, c_idx, rows, cols]
    if flip:
        x = torch.where(torch.rand(N, 1, 1, 1, device=x.device) < 0.5, x.flip(3), x)
    if noise:
        x = (x + noise * torch.randn_like(x)).clamp(0, 1)
    return x


# =============================================================================================
# Plumbing: training and evaluating a classifier (used for f and for the judge)
# =============================================================================================
@torch.no_grad()
def predict(model, x, batch=2000):
    model.eval()
    return torch.cat([model(chunk).argmax(1) for chunk in x.split(batch)])


def accuracy(model, x, y) -> float:
    return (predict(model, x) == y).float().mean().item()


def fgsm_example(model, x, y, eps):
    """Adversarial training example (beyond the paper): a random start in the L-inf ball of
    radius eps, one signed-gradient step of 1.25 eps, projected back into the ball."""
    delta = (torch.rand_like(x) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1).requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
    delta = (x_adv.detach() + 1.25 * eps * grad.sign() - x).clamp(-eps, eps)
    return (x + delta).clamp(0, 1)


def fit_classifier(model, data, epochs, batch_size, lr, shift, flip, noise, amp, name, label_smoothing=0.0,
                   adv_eps=0.0):
    """Adam with a one-cycle schedule over whole-tensor batches; returns test accuracy.
    adv_eps > 0: each batch's loss is the mean of the clean and the adversarial (fgsm_example)
    cross-entropy."""
    x, y = data["x_train"], data["y_train"]
    device = x.device
    steps_per_epoch = max(1, len(x) // batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), device=device)
        total = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb = augment(x[idx], shift=shift, flip=flip, noise=noise)
            with autocast(device, amp):
                loss = F.cross_entropy(model(xb), y[idx], label_smoothing=label_smoothing)
                if adv_eps > 0:
                    x_adv = fgsm_example(model, xb, y[idx], adv_eps)
                    loss = (loss + F.cross_entropy(model(x_adv), y[idx], label_smoothing=label_smoothing)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        acc = accuracy(model, data["x_test"], data["y_test"])    # one sync per epoch
        print(f"{name} epoch {epoch + 1}/{epochs}: loss {total.item() / steps_per_epoch:.4f}, "
              f"test accuracy {acc:.4f}, {time.time() - t0:.1f}s")
    return acc


def load_or_train(model, path, data, args, kind, flip, training, signature):
    """Reuse a cached classifier from --out-dir unless --retrain; else train and save it.
    training: {"noise": sigma, "adv_eps": eps}; part of the checkpoint's signature."""
    signature = {**signature, "training": training}
    if path.exists() and not args.retrain:
        ckpt = load_checkpoint(path, kind, signature)
        model.load_state_dict(ckpt["model"])
        print(f"{kind}: reusing {path} (test accuracy {ckpt['test_accuracy']:.4f}; --retrain to train again)")
        return ckpt["test_accuracy"], 0.0
    t0 = time.time()
    acc = fit_classifier(model, data, args.classifier_epochs, args.classifier_batch_size, args.classifier_lr,
                         2 if args.augment else 0, flip and args.augment, training["noise"], args.amp, kind,
                         adv_eps=training["adv_eps"])
    save_checkpoint(path, {"kind": kind, **signature, "model": model.state_dict(),
                           "test_accuracy": acc, "config": vars(args)})
    return acc, time.time() - t0


def freeze(model):
    """f is fixed during inversion: eval mode (dropout off), no gradients on its weights."""
    model.eval()
    model.requires_grad_(False)
    return model


# =============================================================================================
# Plumbing: checkpoints (atomic), the generator training loop
# =============================================================================================
def save_checkpoint(path: Path, obj: dict):
    """Write to a temporary file in the same folder, then os.replace: never half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: Path, kind: str, signature: dict) -> dict:
    """Load a checkpoint and refuse one of another kind, dataset or architecture."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__}); delete it or use another --out-dir") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise UserError(f"{path} is not a {kind} checkpoint of this project; delete it or use another --out-dir")
    for key, want in signature.items():
        if ckpt.get(key) != want:
            raise UserError(f"{path} was made with {key}={ckpt.get(key)!r}, this run has {key}={want!r}; "
                            f"refusing to load it (use another --out-dir, or --retrain)")
    return ckpt


def prepare_out_dir(path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to --out-dir {path}: {e.strerror or e}") from None
    return path


def rng_state(device):
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class StopRequested(Exception):
    pass


def train_generator(step_fn, G, opt, args, device, ckpt_path, signature, evaluate, start=None):
    """Run step_fn (the script's inversion step) up to --generator-steps.

    Prints each loss term, step time and ETA every --log-every steps (the only host syncs),
    calls evaluate() every --eval-every steps, saves generator.pt atomically every
    --checkpoint-every steps and at the end, saves and stops cleanly on Ctrl-C, and stops
    with the last good checkpoint kept if the loss is not finite.
    """
    step = start["step"] if start else 0
    history = start["history"] if start else {"step": [], "loss": [], "kl": [], "ce": [], "cos": [], "extra": []}
    evals = start["evals"] if start else []
    if start:
        set_rng_state(start["rng"], device)

    def checkpoint():
        save_checkpoint(ckpt_path, {"kind": "generator", **signature, "model": G.state_dict(),
                                    "optimizer": opt.state_dict(), "step": step, "config": vars(args),
                                    "history": history, "evals": evals, "rng": rng_state(device)})

    old_handler = signal.signal(signal.SIGTERM, _raise_stop) if _main_thread() else None
    t0, t_last, step_last = time.time(), time.time(), step
    sums = None                                  # running sums of the logged terms, on the device

    def flush():
        """Average the terms since the last log line (one host sync); stop if not finite."""
        nonlocal sums, t_last, step_last
        mean = (sums / (step - step_last)).tolist()
        if not all(math.isfinite(v) for v in mean):
            raise UserError(f"the loss became {mean[0]} by step {step}; stopped, and the last good "
                            f"checkpoint in {ckpt_path} is kept; try a smaller --lr")
        history["step"].append(step)
        for key, v in zip(["loss", "kl", "ce", "cos", "extra"], mean):
            history[key].append(v)
        dt, t_last, step_last, sums = (time.time() - t_last) / (step - step_last), time.time(), step, None
        return mean, dt

    try:
        while step < args.generator_steps:
            G.train()
            loss, terms = step_fn()
            step += 1
            new = torch.stack([t.float() for t in (loss.detach(), terms["kl"], terms["ce"], terms["cos"], terms["extra"])])
            sums = new if sums is None else sums + new
            last = step == args.generator_steps
            if step % args.log_every == 0 or last:
                mean, dt = flush()
                print(f"step {step}/{args.generator_steps}  L_inv {mean[0] - mean[4]:.4f}  KL {mean[1]:.4f}  "
                      f"CE {mean[2]:.4f}  cos {mean[3]:.4f}  robust+priors {mean[4]:.4f}  total {mean[0]:.4f}  "
                      f"{dt * 1000:.1f} ms/step  ETA {dt * (args.generator_steps - step):.0f}s")
            if step % args.eval_every == 0 or last:
                evals.append({"step": step, **evaluate()})
                print(f"  eval at step {step}: " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}"
                                                           for k, v in evals[-1].items() if k != "step"))
            if step % args.checkpoint_every == 0 and not last:
                if sums is not None:
                    flush()                      # never save weights after a non-finite loss
                checkpoint()
    except (KeyboardInterrupt, StopRequested):
        if sums is None or all(math.isfinite(v) for v in sums.tolist()):
            checkpoint()
            print(f"\ninterrupted at step {step}: saved {ckpt_path}; run again with --resume to continue",
                  file=sys.stderr)
        raise SystemExit(130)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    checkpoint()
    return history, evals, time.time() - t0


def _raise_stop(signum, frame):
    raise StopRequested()


def _main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


# =============================================================================================
# Measurement: how well, how varied, how close to the training data
# =============================================================================================
def mean_pairwise_distance(x):
    """Mean L2 distance over pairs i != j of the flattened images (0 for a collapsed batch)."""
    flat = x.flatten(1).double()
    N = len(flat)
    if N < 2:
        return 0.0
    d = torch.cdist(flat, flat)
    return (d.sum() / (N * (N - 1))).item()


def mean_pairwise_cosine(phi):
    """Mean cosine similarity over pairs i != j of feature vectors (N, D): L_cos, measured
    (0 for fewer than two)."""
    return cosine_term(phi).item() if len(phi) > 1 else 0.0


def frechet_distance(a, b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (N, D)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    S_a, S_b = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(S_a)
    root_a = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T          # S_a^(1/2)
    middle = torch.linalg.eigvalsh(root_a @ S_b @ root_a).clamp_min(0)    # eig of S_a^½ S_b S_a^½
    trace_sqrt = middle.sqrt().sum()                                       # Tr (S_a S_b)^(1/2)
    return ((mu_a - mu_b).square().sum() + S_a.trace() + S_b.trace() - 2 * trace_sqrt).clamp_min(0).item()


def nearest_neighbours(x, x_train, batch=512):
    """For each image in x: L2 distance to, and index of, its nearest training image."""
    train = x_train.flatten(1)
    dists, idxs = [], []
    for chunk in x.flatten(1).split(batch):
        d = torch.cdist(chunk, train)
        m = d.min(dim=1)
        dists.append(m.values)
        idxs.append(m.indices)
    return torch.cat(dists), torch.cat(idxs)


@torch.no_grad()
def features_of(model, x, batch=1000):
    model.eval()
    return torch.cat([model.features(chunk).flatten(1).float() for chunk in x.split(batch)])


def stand_in_images(data, labels, n_classes, noise=(0.05, 0.1)):
    """Stand-ins for samples with these labels, made from real training images, in the labels'
    order: a random training image of each label, the same with Gaussian pixel noise of each
    standard deviation in noise (clipped to [0, 1]), and each label's mean training image."""
    x_tr, y_tr = data["x_train"], data["y_train"]
    real = torch.empty(len(labels), *x_tr.shape[1:], device=x_tr.device)
    for c in range(n_classes):
        idx = torch.nonzero(y_tr == c)[:, 0]
        real[labels == c] = x_tr[idx[torch.randperm(len(idx), device=idx.device)[:int((labels == c).sum())]]]
    means = torch.stack([x_tr[y_tr == c].mean(0) for c in range(n_classes)])
    return {"training_images": real,
            **{f"training_images_noise_{s:g}": (real + s * torch.randn_like(real)).clamp(0, 1) for s in noise},
            "class_mean_images": means[labels]}


@torch.no_grad()
def frechet_references(judge, labels, data, real_feats, n_classes):
    """Fréchet distances of stand_in_images, on the same scale as frechet_distance: training
    images (the floor at this sample size), with a little pixel noise (how far an almost
    invisible change moves this number), and class means (a collapsed generator)."""
    return {name: frechet_distance(features_of(judge, x), real_feats)
            for name, x in stand_in_images(data, labels, n_classes).items()}


@torch.no_grad()
def inversion_metrics(images, labels, f, judge, data, n_classes):
    """The numbers of metrics.json["inversion"] for samples (images, labels)."""
    f_pred = torch.cat([torch.softmax(f(c), 1) for c in images.split(1000)])
    j_pred = predict(judge, images)
    hit = f_pred.argmax(1) == labels
    per_class = [hit[labels == c].float().mean().item() for c in range(n_classes)]
    x_te, y_te = data["x_test"], data["y_test"]
    div_ratios, cosines, cosines_real = [], [], []
    phi = features_of(f, images)
    for c in range(n_classes):
        fake, real = images[labels == c], x_te[y_te == c][:len(images[labels == c])]
        real_d = mean_pairwise_distance(real)
        div_ratios.append(mean_pairwise_distance(fake) / real_d if real_d > 0 else 0.0)
        cosines.append(mean_pairwise_cosine(phi[labels == c]))
        cosines_real.append(mean_pairwise_cosine(features_of(f, real)))
    real_feats = features_of(judge, x_te)
    half = len(real_feats) // 2
    perm = torch.randperm(len(real_feats), device=real_feats.device)
    nn_d, _ = nearest_neighbours(images, data["x_train"])
    return {
        "target_accuracy": hit.float().mean().item(),
        "per_class_target_accuracy": per_class,
        "mean_confidence": f_pred.gather(1, labels[:, None]).mean().item(),
        "judge_accuracy": (j_pred == labels).float().mean().item(),
        "per_class_judge_accuracy": [(j_pred[labels == c] == c).float().mean().item() for c in range(n_classes)],
        "diversity_ratio": sum(div_ratios) / n_classes,
        "per_class_diversity_ratio": div_ratios,
        "feature_cosine": sum(cosines) / n_classes,
        "feature_cosine_real": sum(cosines_real) / n_classes,
        "frechet_distance": frechet_distance(features_of(judge, images), real_feats),
        "frechet_distance_real": frechet_distance(real_feats[perm[:half]], real_feats[perm[half:]]),
        "frechet_reference": frechet_references(judge, labels, data, real_feats, n_classes),
        "nn_distance": nn_d.mean().item(),
    }


# =============================================================================================
# Results: samples.pt, figures, metrics.json
# =============================================================================================
def save_samples(path, images, labels):
    """samples.pt: {"images": float (N, C, H, W) in [0, 1], "labels": long (N,)} on the CPU."""
    save_checkpoint(path, {"images": images.detach().float().clamp(0, 1).cpu(),
                           "labels": labels.detach().long().cpu()})


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save_fig(fig, path):
    plt = _plt()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def mosaic(rows, pad=2):
    """rows: a list of (K_r, C, H, W) tensors -> one (R(H+pad), K(W+pad), 3) RGB array on a white
    ground, K the longest row (shorter rows end in white)."""
    R, K = len(rows), max(len(r) for r in rows)
    H, W = rows[0].shape[-2:]
    grid = torch.ones(R, K, 3, H + pad, W + pad)
    for r, imgs in enumerate(rows):
        imgs = imgs.detach().float().cpu().clamp(0, 1).expand(-1, 3, -1, -1)   # gray -> RGB
        grid[r, :len(imgs), :, :H, :W] = imgs
    return grid.permute(0, 3, 1, 4, 2).reshape(R * (H + pad), K * (W + pad), 3).numpy()


def image_grid_figure(path, rows, row_names, col_names=None, title=None, pad=2):
    """rows: a list of (K, C, H, W) tensors, one per class: the Figure-2 layout, drawn as one
    image (one matplotlib axis per image took seconds per figure)."""
    plt = _plt()
    R, K = len(rows), max(len(r) for r in rows)
    H, W = rows[0].shape[-2:]
    fig, ax = plt.subplots(figsize=(0.75 * K + 1.2, 0.75 * R + 0.4))
    ax.imshow(mosaic(rows, pad), interpolation="nearest")
    ax.set_yticks([r * (H + pad) + (H - 1) / 2 for r in range(R)], row_names[:R], fontsize=8)
    if col_names:                                                # centred above each column
        ax.set_xticks([k * (W + pad) + (W - 1) / 2 for k in range(K)], col_names, fontsize=7)
    else:
        ax.set_xticks([])
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9, pad=18 if col_names else 6)
    _save_fig(fig, path)


def losses_figure(path, history):
    plt = _plt()
    keys = ["loss", "kl", "ce", "cos", "extra"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3 * len(keys), 2.6))
    names = {"loss": "total: L_inv + robust + priors", "kl": "L_KL", "ce": "L_CE", "cos": "L_cos",
             "extra": "robust + prior terms (weighted)"}
    for ax, key in zip(axes, keys):
        ax.plot(history["step"], history[key])
        ax.set_title(names[key], fontsize=9)
        ax.set_xlabel("generator step", fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)


def metrics_figure(path, evals):
    plt = _plt()
    steps = [e["step"] for e in evals]
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.6))
    axes[0].plot(steps, [e["target_accuracy"] for e in evals], label="classifier f (target)")
    axes[0].plot(steps, [e["judge_accuracy"] for e in evals], label="independent judge")
    axes[0].set_ylim(0, 1.02), axes[0].set_title("samples classified as their label", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [e["diversity_ratio"] for e in evals])
    axes[1].set_title("diversity ratio (1 = as varied as real)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("generator step", fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)


def write_json(path, obj):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def print_summary(metrics):
    inv = metrics["inversion"]
    rows = [("classifier f test accuracy", metrics["classifier"]["test_accuracy"]),
            ("judge test accuracy", metrics["judge"]["test_accuracy"]),
            ("target accuracy (f on samples)", inv["target_accuracy"]),
            ("judge accuracy (judge on samples)", inv["judge_accuracy"]),
            ("mean confidence", inv["mean_confidence"]),
            ("diversity ratio (samples / real)", inv["diversity_ratio"]),
            ("feature cosine within class", inv["feature_cosine"]),
            ("  real test images", inv["feature_cosine_real"]),
            ("Frechet distance (judge features)", inv["frechet_distance"]),
            ("  real vs real reference", inv["frechet_distance_real"]),
            *[(f"  {k.replace('_', ' ')}", v) for k, v in inv["frechet_reference"].items()],
            ("nn distance to training images", inv["nn_distance"]),
            ("seconds, total", metrics["seconds"]["total"])]
    print(f"\nsummary (samples at margin {metrics['config']['margin'] or 'natural'})")
    for name, value in rows:
        print(f"  {name:<36} {value:10.4f}")
    print(f"  {'by sampling margin':<24} {'target':>8} {'judge':>8} {'diversity':>10}")
    for m, r in metrics["inversion_by_margin"].items():
        print(f"    {m:<22} {r['target_accuracy']:8.3f} {r['judge_accuracy']:8.3f} {r['diversity_ratio']:10.3f}")


# =============================================================================================
# The experiment's phases, in the order every script calls them
# =============================================================================================
def architecture(model: nn.Module) -> str:
    """A short signature of a model, stored in checkpoints to refuse a mismatched one."""
    return f"{type(model).__name__}/{sum(p.numel() for p in model.parameters())} parameters"


def setup(args, quick):
    """Device, seed and output folder; tell a CPU user what --quick would change."""
    device = choose_device(args.device)
    seed_everything(args.seed)
    out = prepare_out_dir(args.out_dir)
    if args.quick:
        print("--quick preset: " + ", ".join(f"{k.replace('_', '-')}={getattr(args, k)}" for k in quick))
    return device, out


def warn_if_slow(args, device, f, G, inversion_step, n_train):
    """On a CPU without --quick, time two steps of each phase and say how long the run takes."""
    if device.type != "cpu" or args.quick or args.dry_run:
        return
    import copy
    f_copy, G_copy = place(copy.deepcopy(f), device), place(copy.deepcopy(G), device)
    x = torch.rand(args.classifier_batch_size, *G.image_shape, device=device)
    y = torch.randint(0, G.n, (len(x),), device=device)
    opt_f = torch.optim.Adam(f_copy.parameters())
    opt_G = torch.optim.Adam(G_copy.parameters())
    state = torch.get_rng_state()
    t0 = time.time()
    for _ in range(2):
        opt_f.zero_grad()
        F.cross_entropy(f_copy(x), y).backward()
        opt_f.step()
    t_f = (time.time() - t0) / 2
    freeze(f_copy)
    f_copy.stats = feature_statistics(f_copy, x)
    t0 = time.time()
    for _ in range(2):
        inversion_step(G_copy, f_copy, opt_G, args, device)
    t_G = (time.time() - t0) / 2
    torch.set_rng_state(state)
    total = 2 * t_f * args.classifier_epochs * n_train / len(x) + t_G * args.generator_steps * args.num_generators
    print(f"note: this is a CPU without --quick; the default run is sized for a GPU: training "
          f"everything from scratch takes about {total / 60:.0f} minutes here (estimated from "
          f"timing a few steps; cached models and --resume take less). "
          f"Add --quick for a run of a few minutes.")


def classifiers(f, judge, data, args, out, dataset, flip):
    """Step 1: train (or reuse) the classifier f, and the independent judge; freeze both."""
    f, judge = place(f, data["x_train"].device), place(judge, data["x_train"].device)
    acc_f, sec_f = load_or_train(f, out / "classifier.pt", data, args, "classifier", flip,
                                 {"noise": args.classifier_noise, "adv_eps": args.classifier_adv_eps},
                                 {"dataset": dataset, "arch": architecture(f)})
    acc_j, sec_j = load_or_train(judge, out / "judge.pt", data, args, "judge", flip,
                                 {"noise": 0.0, "adv_eps": 0.0},
                                 {"dataset": dataset, "arch": architecture(judge)})
    freeze(f)                                                    # eval mode before the statistics
    by_class = args.stats_by == "class"                          # for the statistics prior
    f.stats = feature_statistics(f, data["x_train"], data["y_train"] if by_class else None,
                                 f.head.out_features if by_class else 1)
    return f, freeze(judge), {"classifier": acc_f, "judge": acc_j}, {"classifier": sec_f, "judge": sec_j}


@torch.no_grad()
def quick_eval(G, f, judge, data, n, margin, per_class=32):
    """Target and judge accuracy and diversity ratio on a few samples (during training)."""
    y = torch.arange(n, device=data["x_train"].device).repeat_interleave(per_class)
    x = generate(sampling_mode(G), y, n, margin)
    G.train()
    div = []
    for c in range(n):
        real = data["x_test"][data["y_test"] == c][:per_class]
        real_d = mean_pairwise_distance(real)
        div.append(mean_pairwise_distance(x[y == c]) / real_d if real_d > 0 else 0.0)
    return {"target_accuracy": (predict(f, x) == y).float().mean().item(),
            "judge_accuracy": (predict(judge, x) == y).float().mean().item(),
            "diversity_ratio": sum(div) / n}


def train_inversion(G, inversion_step, f, judge, data, args, device, out, dataset, k=0):
    """Train generator k with the script's inversion_step; resume from its checkpoint if asked."""
    seed_everything(args.seed + k)             # the generator phase does not depend on caching
    G = place(G, device)
    graph = uses_cuda_graph(args, device)
    opt = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.5, 0.999), capturable=graph)
    path = out / ("generator.pt" if k == 0 else f"generator_{k}.pt")
    signature = {"dataset": dataset, "arch": architecture(G)}
    start = None
    if args.resume and path.exists():
        start = load_checkpoint(path, "generator", signature)
        G.load_state_dict(start["model"])
        opt.load_state_dict(start["optimizer"])
        print(f"generator {k}: resuming {path} from step {start['step']} to {args.generator_steps}")
    elif args.resume:
        print(f"generator {k}: --resume, but no {path} yet; starting from step 0")
    print(f"generator {k}: {architecture(G)}, {args.generator_steps} steps of batch {args.batch_size}"
          + (" (as a CUDA graph)" if graph else ""))
    history, evals, seconds = train_generator(
        training_step(inversion_step, G, f, opt, args, device), G, opt, args, device, path,
        signature, lambda: quick_eval(G, f, judge, data, G.n, args.margin), start)
    return G, {"history": history, "evals": evals, "seconds": seconds}


def run_experiment(script, argv=None):
    """One script's whole run, its sections in the paper's order.  script: the module, with
    DATASET, SHAPE, CLASSES, FLIP, QUICK, parse_args, load_data, Classifier, build_generator
    and inversion_step."""
    t_start = time.time()
    args = script.parse_args(argv)
    device, out = setup(args, script.QUICK)
    t0 = time.time()
    data = script.load_data(args, device)                                    # 2. data
    seconds = {"data": time.time() - t0}
    n = len(script.CLASSES)
    f = script.Classifier(n).to(device)                                      # 3. f
    judge = Judge(script.SHAPE[0], n).to(device)
    warn_if_slow(args, device, f, script.build_generator(args).to(device), script.inversion_step,
                 len(data["x_train"]))
    f, judge, accs, secs = classifiers(f, judge, data, args, out, script.DATASET, script.FLIP)
    Gs, runs = [], []
    for k in range(args.num_generators):                                     # 4.-5. G against f
        G, result = train_inversion(script.build_generator(args), script.inversion_step, f, judge,
                                    data, args, device, out, script.DATASET, k)
        Gs.append(G), runs.append(result)
    return write_results(out, Gs, runs, f, judge, data, args, script.DATASET, script.CLASSES,   # 6.
                         accs, {**seconds, **secs}, device, t_start)


SWEEP_MARGINS = (None, 0.5, 1.0, 2.0, 4.0)     # metrics.json "inversion_by_margin" (None: natural)


def write_results(out, Gs, runs, f, judge, data, args, dataset, class_names, accs, seconds, device, t_start):
    """samples.pt, samples.png, nearest.png, intensity.png, losses.png, metrics.png, metrics.json."""
    n = len(class_names)
    for G in Gs:
        sampling_mode(G, dropout_on=True)
    # samples.pt: --eval-per-class fresh samples per class, shared out over the K generators
    y = torch.arange(n, device=device).repeat_interleave(args.eval_per_class)
    owner = torch.arange(len(y), device=device) % len(Gs)
    x = torch.empty(len(y), *Gs[0].image_shape, device=device)
    for k, G in enumerate(Gs):
        x[owner == k] = generate(G, y[owner == k], n, args.margin)
    save_samples(out / "samples.pt", x, y)
    inversion = inversion_metrics(x, y, f, judge, data, n)
    # samples.png (Figure 2): rows are classes; columns are generators (K > 1) or samples
    if len(Gs) > 1:
        rows = [torch.cat([generate(G, torch.full((1,), c, device=device), n, args.margin) for G in Gs])
                for c in range(n)]
        cols = [f"G{k + 1}" for k in range(len(Gs))]
    else:
        rows, cols = [x[y == c][:10] for c in range(n)], None
    image_grid_figure(out / "samples.png", rows, class_names, cols,
                      f"{dataset}: inverted samples, one row per class")
    # nearest.png: three samples per class, each beside its nearest training image
    picks = torch.cat([torch.nonzero(y == c)[:3, 0] for c in range(n)])
    _, nn_idx = nearest_neighbours(x[picks], data["x_train"])
    pairs = torch.stack([x[picks], data["x_train"][nn_idx]], 1).flatten(0, 1)   # sample, neighbour, ...
    image_grid_figure(out / "nearest.png", list(pairs.split(6)), class_names,
                      ["sample", "nearest"] * 3, "samples beside their nearest training images")
    # intensity.png: the argmax element's margin over the rest rises left to right
    margins = torch.tensor([0.01, 0.1, 0.3, 0.6, 1.0, 2.0, 4.0, 8.0], device=device)
    G0, rows = Gs[0].eval(), []                                  # dropout off: only the margin varies
    for c in range(n):
        torch.manual_seed(args.seed + c)
        z, v = torch.randn(1, G0.latent_dim, device=device), torch.randn(1, n, device=device)
        y_c = torch.full((len(margins),), c, device=device)
        p, _, H = conditioning_for_labels(y_c, n, margins, v.expand(len(margins), n))
        with torch.no_grad():
            rows.append(G0(z.expand(len(margins), -1), p, H))
    image_grid_figure(out / "intensity.png", rows, class_names, [f"+{m:g}" for m in margins.tolist()],
                      "argmax intensity: logit margin of the label over the next largest")
    losses_figure(out / "losses.png", runs[0]["history"])
    metrics_figure(out / "metrics.png", runs[0]["evals"])
    by_margin = {("natural" if m is None else f"{m:g}"): quick_eval(Gs[0], f, judge, data, n, m, args.eval_per_class)
                 for m in SWEEP_MARGINS}
    seconds = {**seconds, "generator": sum(r["seconds"] for r in runs), "total": time.time() - t_start}
    metrics = {"dataset": dataset, "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
               "fake_data": args.fake_data, "classifier": {"test_accuracy": accs["classifier"]},
               "judge": {"test_accuracy": accs["judge"]}, "inversion": inversion,
               "inversion_by_margin": by_margin,
               "history": [r["evals"] for r in runs], "seconds": seconds, "config": vars(args)}
    write_json(out / "metrics.json", metrics)
    print_summary(metrics)
    print(f"\nwrote {out}/: classifier.pt judge.pt generator.pt samples.pt samples.png nearest.png "
          f"intensity.png losses.png metrics.png metrics.json")
    return metrics
