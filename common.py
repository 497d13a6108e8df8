"""What the four scripts share of "Network Inversion of Convolutional Neural Nets" (Suhail and
Sethi), in the paper's order: conditioning, the generator G(z, p, H), the inversion loss L_inv
(Sec. 2), the robust term (Sec. 3); then, marked, what goes beyond the paper; then plumbing that
would otherwise be copied four times.  The loops are in the scripts, measurement in measure.py.
"""
import argparse
import contextlib
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

TERMS = ("loss", "kl", "ce", "cos", "extra", "accuracy")   # what inversion_step returns, in order


# ==== Section 2: conditioning.  v ~ N(0, I_n),  p = softmax(v),  y = argmax p,  H = hot matrix of y ====
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


# ==== Section 2: the generator G(z, p, H) ==========================================================
class UpBlock(nn.Sequential):
    """Up-convolution (C_in, s, s) -> (C_out, size, size): a transposed convolution (kernel 4,
    stride 2 when size = 2s; else stride 1, kernel size - s + 1), batch norm, LeakyReLU, dropout.
    resize (beyond the paper): a doubling is nearest-neighbour resize + 3x3 conv, no checkerboard (Odena 2016)."""

    def __init__(self, c_in, c_out, s_in, size, dropout, resize=False):
        k, stride, pad = (4, 2, 1) if size == 2 * s_in else (size - s_in + 1, 1, 0)
        up = ([nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)] if resize and stride == 2
              else [nn.ConvTranspose2d(c_in, c_out, k, stride, pad, bias=False)])
        layers = [*up, nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]  # the bias is batch norm's
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))                 # the paper's "heavy dropout"
        super().__init__(*layers)


class Generator(nn.Module):
    """G(z, p, H) -> x, for 1x28x28 and 3x32x32 images:
    p (N, n) --Linear--> (N, hidden) ++ z (N, latent)                   concatenation
             --stage 1: transposed conv--> (N, width, n, n)             vector -> n x n
             ++ H (N, 1, n, n) --stage 2: two UpBlocks--> (N, width/4, S, S)
             --3x3 conv, sigmoid--> x (N, C, S, S) in [0, 1]
    conditioning: "vector-matrix" (the paper's), "vector" (no H), or "label" (an embedding of y
    and no H: the baseline the paper calls ineffective).  upsample: "transposed" (the paper's) or "resize"."""

    def __init__(self, channels=1, image_size=28, n_classes=10, latent_dim=64, hidden=64, width=128,
                 dropout=0.3, conditioning="vector-matrix", upsample="transposed", stage1_dropout=0.0):
        super().__init__()
        self.n, self.latent_dim, self.conditioning = n_classes, latent_dim, conditioning
        self.image_shape = (channels, image_size, image_size)
        n, half = n_classes, image_size // 2
        self.embed = nn.Embedding(n, hidden) if conditioning == "label" else nn.Linear(n, hidden)
        self.stage1 = nn.Sequential(                             # (hidden+latent, 1, 1) -> (width, n, n)
            nn.ConvTranspose2d(hidden + latent_dim, width, n, bias=False),
            nn.BatchNorm2d(width), nn.LeakyReLU(0.2), *([nn.Dropout2d(stage1_dropout)] if stage1_dropout else []))
        h_channels = 1 if conditioning == "vector-matrix" else 0
        self.stage2 = nn.Sequential(                             # (width+1, n, n) -> (width/4, S, S)
            UpBlock(width + h_channels, width // 2, n, half, dropout, upsample == "resize"),
            UpBlock(width // 2, width // 4, half, image_size, dropout, upsample == "resize"))
        self.to_image = nn.Conv2d(width // 4, channels, 3, padding=1)

    def forward(self, z, p, H):
        e = self.embed(p.argmax(1) if self.conditioning == "label" else p)   # (N, hidden)
        h = torch.cat([e, z], dim=1)[:, :, None, None]           # (N, hidden+latent, 1, 1)
        h = self.stage1(h)                                       # (N, width, n, n)
        if self.conditioning == "vector-matrix":
            h = torch.cat([h, H], dim=1)                         # (N, width+1, n, n)
        h = self.stage2(h)                                       # (N, width/4, S, S)
        return torch.sigmoid(self.to_image(h))                   # (N, C, S, S) in [0, 1]


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


def sampling_mode(G: nn.Module) -> nn.Module:
    """Batch norm on its running statistics; dropout stays on (our choice: a source of variety)."""
    return G.eval().apply(lambda m: m.train() if isinstance(m, (nn.Dropout, nn.Dropout2d)) else None)


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


# ==== Section 2: the inversion loss  L_inv = alpha * L_KL + beta * L_CE + gamma * L_cos ============
def kl_term(logits, p):
    """L_KL = sum_i P(i) log(P(i) / Q(i)), Q = softmax(f(x)); mean over the batch."""
    log_q = torch.log_softmax(logits, dim=1)
    return (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(dim=1).mean()


def ce_term(logits, y):
    """L_CE = -sum_i y_i log(y_hat_i), y one-hot at the conditioning label; batch mean."""
    return F.cross_entropy(logits, y)


def cosine_term(phi, y=None):
    """L_cos = 1/(N(N-1)) sum_{i != j} cos(phi_i, phi_j) over the batch's features phi.  Given labels y
    (beyond the paper): over the pairs of one label only, pushing apart the pictures of a row of Fig. 2."""
    N = phi.shape[0]
    u = F.normalize(phi.flatten(1), dim=1)
    gram = u @ u.T                                               # cos(theta_ij), diagonal 1
    if y is None:
        return (gram.sum() - gram.diagonal().sum()) / (N * (N - 1))
    pairs = (y[:, None] == y[None, :]).float() - torch.eye(N, device=phi.device)
    return (gram * pairs).sum() / pairs.sum().clamp_min(1)


def inversion_loss(logits, phi, p, y, alpha, beta, gamma, cos_pairs="all"):
    """L_inv and its terms (detached copies, for logging); cos_pairs "class": L_cos within classes."""
    kl, ce, cos = kl_term(logits, p), ce_term(logits, y), cosine_term(phi, y if cos_pairs == "class" else None)
    total = alpha * kl + beta * ce + gamma * cos                 # L_inv
    return total, {"kl": kl.detach(), "ce": ce.detach(), "cos": cos.detach()}


# ==== Section 3: robust inversion ==================================================================
def worst_case(f, x, y, eps, random_start=False):
    """x moved to the first-order worst case for label y within the L-inf ball of radius eps: one
    signed-gradient step of CE(f(x), y) (FGSM), clipped to [0, 1].  Gradients still reach x.
    random_start: from a uniform point in the ball, a step of 1.25 eps, projected (Wong et al. 2020)."""
    x0 = x + eps * (2 * torch.rand_like(x) - 1) if random_start else x
    x_req = x0.detach().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(F.cross_entropy(f(x_req), y), x_req)
    step = (x0 + (1.25 if random_start else 1.0) * eps * grad.sign()).detach() - x.detach()
    return (x + step.clamp(-eps, eps)).clamp(0, 1)


def robust_term(f, x, y, eps):
    """Sec. 3, in our form: f must keep label y on the worst perturbation of x within radius eps."""
    return F.cross_entropy(f(worst_case(f, x, y, eps)), y)


# ==== Beyond the paper: image priors (each an option of the scripts; see the README) ===============
def activations(features: nn.Sequential, x):
    """f's feature layers on x: (phi(x), [each LeakyReLU / ReLU's output], [(input, layer) of each batch norm])."""
    acts, bn = [], []
    for layer in features:
        if isinstance(layer, nn.BatchNorm2d):
            bn.append((x, layer))
        x = layer(x)
        if isinstance(layer, (nn.LeakyReLU, nn.ReLU)):
            acts.append(x)
    return x, acts, bn


def channel_moments(a):
    """Per image and channel: mean and mean square over the spatial positions, (N, C) each."""
    return (a, a.square()) if a.dim() == 2 else (a.mean((2, 3)), a.square().mean((2, 3)))


@torch.no_grad()
def feature_statistics(f, x_train, y_train, n, batch=2000):
    """Mean and variance of every channel of each of f's activation layers over the training
    images of each label 0..n-1: [(mu (n, C), var (n, C)) per layer].  For stats_term."""
    sums = None
    for xb, yb in zip(x_train.split(batch), y_train.split(batch)):
        _, acts, _ = activations(f.features, xb)
        add = [[torch.zeros(n, m.shape[1], device=m.device).index_add_(0, yb, m) for m in channel_moments(a)]
               for a in acts]
        sums = add if sums is None else [[s + a for s, a in zip(S, A)] for S, A in zip(sums, add)]
    count = torch.bincount(y_train, minlength=n).clamp_min(1)[:, None].float()
    return [(s0 / count, s1 / count - (s0 / count).square()) for s0, s1 in sums]


def stats_term(acts, stats, y):
    """DeepInversion's batch-norm prior without batch norm: over f's activation layers, ||mean -
    mean_data|| + ||var - var_data|| of each class in the batch, averaged over classes present."""
    total = 0.0
    with torch.autocast(y.device.type, enabled=False):           # float32: E[a^2] - E[a]^2 magnifies bf16 rounding
        for a, (mu, var) in zip(acts, stats):
            m, sq = channel_moments(a.float())                   # (N, C) each
            Y = F.one_hot(y, len(mu)).float()                    # (N, classes)
            count = Y.sum(0)[:, None]
            mean = Y.T @ m / count.clamp_min(1)                  # (classes, C)
            v = Y.T @ sq / count.clamp_min(1) - mean.square()
            dist = (mean - mu).norm(dim=1) + (v - var).norm(dim=1)   # (classes,)
            present = (count[:, 0] > 0).float()
            total = total + (dist * present).sum() / present.sum()
    return total


def bn_term(bn):
    """DeepInversion's prior (Yin et al. 2020), float32: over f's batch-norm layers, the distances
    ||batch mean - running mean|| + ||batch variance - running variance|| of each layer's input."""
    with torch.autocast(bn[0][0].device.type, enabled=False):
        return sum((a.float().mean((0, 2, 3)) - layer.running_mean).norm() +
                   (a.float().var((0, 2, 3), unbiased=False) - layer.running_var).norm() for a, layer in bn)


def check_bn_stats(f, args):
    """--bn-stats needs batch norm in f: said before f trains, not at G's first step."""
    if args.bn_stats and not any(isinstance(m, nn.BatchNorm2d) for m in f.features):
        raise UserError("--bn-stats needs batch norm in f, and this dataset's f has none; use --stats")


def mode_seeking_term(x, z, y):
    """Mode seeking (Mao et al. 2019): 1 / (mean over pairs i != j of one label of |x_i - x_j| / |z_i - z_j|)."""
    same = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool, device=y.device)
    d = lambda a: torch.cdist(a.float().flatten(1), a.float().flatten(1), p=1) / a[0].numel()   # noqa: E731
    mean = (d(x) / d(z).clamp_min(1e-8) * same).sum() / same.sum().clamp_min(1)   # no host sync: CUDA graphs
    return torch.where(same.any(), 1 / (mean + 1e-5), 0.0)


def tv_term(x):
    """Total variation: mean absolute difference of neighbouring pixels."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def augment(x, flip=False, shift=2):
    """Per image, on the device: a random shift of up to `shift` pixels and, with flip, a mirror."""
    N, S = len(x), x.shape[-1]
    theta = torch.zeros(N, 2, 3, device=x.device)                 # per image: [[+-1, 0, dx], [0, 1, dy]]
    theta[:, 0, 0] = 1 - 2 * flip * (torch.rand(N, device=x.device) < 0.5)
    theta[:, 1, 1] = 1
    theta[:, :, 2] = torch.randint(-shift, shift + 1, (N, 2), device=x.device) * 2 / S   # in units of S/2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", align_corners=False)


@torch.no_grad()
def accuracy(model, x, y, batch=2000) -> float:
    model.eval()
    hits = sum((model(xb).argmax(1) == yb).sum() for xb, yb in zip(x.split(batch), y.split(batch)))
    return (hits / len(y)).item()


# ==== Plumbing: one-line errors ====================================================================
class UserError(Exception):
    """A problem the user can fix: one line on stderr, exit status 2, no traceback."""


def run_main(run, argv, script):
    """run(argv): a UserError or out-of-memory as one line and exit 2; Ctrl-C or SIGTERM, 130."""
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
    try:
        return run(argv)
    except UserError as e:
        print(f"{script}: error: {e}", file=sys.stderr)
    except torch.OutOfMemoryError:
        print(f"{script}: error: out of memory on the device; try a smaller --batch-size", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"\n{script}: interrupted; checkpoints already in --out-dir are kept", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    raise SystemExit(2)


@contextlib.contextmanager
def signals_held():
    """Ctrl-C and SIGTERM wait until the block is done (only the main thread receives signals)."""
    held, main = [], threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, lambda n, _: held.append(n)) for s in (signal.SIGINT, signal.SIGTERM) if main}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if held:
        signal.raise_signal(held[0])


# ==== Plumbing: flags (the same in every script; the script's DEFAULTS give the values) ============
def checked(cast, ok, what):
    """An argparse type: cast(text), refused with 'must be <what>' unless ok(value)."""
    def parse(text):
        with contextlib.suppress(ValueError):
            if ok(value := cast(text)):
                return value
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return parse


POSITIVE = checked(int, lambda v: v > 0, "a positive integer")
COUNT = checked(int, lambda v: v >= 0, "zero or a positive integer")
NUMBER = checked(float, math.isfinite, "a finite number")
WEIGHT = checked(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
MARGIN = checked(lambda t: None if t == "natural" else float(t),          # None: the draw's own
                 lambda v: v is None or (math.isfinite(v) and v >= 0), "'natural' or a number >= 0")
PAPER = dict(alpha=1.0, beta=1.0, gamma=1.0, robust_eps=0.0, stats=0.0, tv=0.0, bn_stats=0.0, view_shift=0,
             upsample="transposed", cos_pairs="all", mode_seeking=0.0)    # --paper
FLAGS = {  # group: [(flag, type, or choices, or bool for a switch, help)]
    "the paper (Sec. 2): f, G and L_inv": [
        ("--classifier-epochs", POSITIVE, None), ("--classifier-batch-size", POSITIVE, None),
        ("--classifier-width", POSITIVE, "f's channels in its first convolution"),
        ("--classifier-lr", NUMBER, "f's peak learning rate"), ("--generator-steps", POSITIVE, None),
        ("--batch-size", POSITIVE, "G's batch size N"), ("--lr", NUMBER, "G's learning rate"),
        ("--latent-dim", POSITIVE, "size of z"), ("--hidden", POSITIVE, "size of the linear map of p"),
        ("--width", POSITIVE, "G's channels after stage 1"), ("--dropout", WEIGHT, "G's dropout rate"),
        ("--stage1-dropout", WEIGHT, "dropout after stage 1's up-convolution too (0: stage 2 only)"),
        ("--conditioning", ["vector-matrix", "vector", "label"], "G is told p and H (the paper's), p, or y"),
        ("--alpha", NUMBER, "weight of L_KL"), ("--beta", NUMBER, "weight of L_CE"),
        ("--gamma", NUMBER, "weight of L_cos"), ("--num-generators", POSITIVE, "K generators: Fig. 2's columns"),
        ("--paper", bool, "the paper's loss alone: " + ", ".join(f"{k}={v}" for k, v in PAPER.items()))],
    "beyond the paper (0 switches a term off)": [
        ("--robust-eps", WEIGHT, "Sec. 3 in our form: L-inf radius of perturbations that must keep y"),
        ("--stats", WEIGHT, "weight of the feature-statistics prior"), ("--tv", WEIGHT, "weight of total variation"),
        ("--margin", MARGIN, "sampling: v_y = largest other v + M (the arg-max intensity), or 'natural'"),
        ("--augment", argparse.BooleanOptionalAction, "shifts (and flips where FLIP) when training f"),
        ("--classifier-adv-eps", WEIGHT, "adversarial training of f: L-inf radius (FGSM, random start)"),
        ("--bn-stats", WEIGHT, "weight of DeepInversion's prior on f's batch-norm statistics"),
        ("--view-shift", COUNT, "f sees G's images shifted by up to this many pixels (and flipped where FLIP)"),
        ("--upsample", ["transposed", "resize"], "G's doublings: transposed convolution, or resize + conv"),
        ("--cos-pairs", ["all", "class"], "L_cos over all pairs of the batch (the paper's), or pairs of one class"),
        ("--mode-seeking", WEIGHT, "weight of the mode-seeking term: different z, different pictures"),
        ("--mode-seeking-on", ["pixels", "features"], "mode seeking's distance: of the images, or of phi")],
    "running": [
        ("--data-dir", str, None), ("--out-dir", str, None), ("--seed", int, None),
        ("--device", ["auto", "cuda", "mps", "cpu"], "auto: cuda, else mps, else cpu"),
        ("--quick", bool, "a preview for a laptop CPU (5 minutes)"),
        ("--medium", bool, "a preset for a laptop CPU (45 minutes): the best result it buys"),
        ("--dry-run", bool, "a few steps per phase, all files"),
        ("--fake-data", bool, "synthetic data shaped like the dataset"), ("--resume", bool, "continue G"),
        ("--retrain", bool, "train f (and judge) again"), ("--train-subset", COUNT, "first K images (0: all)"),
        ("--log-every", POSITIVE, "steps between loss lines"), ("--checkpoint-every", POSITIVE, None),
        ("--eval-per-class", POSITIVE, "samples per class in samples.pt"), ("--amp", bool, "bfloat16 autocast"),
        ("--distill-steps", COUNT, "measure.py: steps of each distillation student"),
        ("--judge-width", POSITIVE, "measure.py: channels of the judge's (and the students') first layer"),
        ("--cuda-graph", argparse.BooleanOptionalAction, "on CUDA, G's step as one replayed CUDA graph")]}
RUNNING = dict(data_dir="./data", device="auto", seed=0, checkpoint_every=500, cuda_graph=True,
               conditioning="vector-matrix", num_generators=1, classifier_adv_eps=0.0,    # all scripts'
               bn_stats=0.0, view_shift=0, upsample="transposed", cos_pairs="all", judge_width=32, mode_seeking=0.0,
               stage1_dropout=0.0, mode_seeking_on="pixels")


def one_line_errors(ap):
    """A bad flag: one line and exit status 2 (argparse would print the whole usage too)."""
    ap.error = lambda message: ap.exit(2, f"{ap.prog}: error: {message} (see --help)\n")
    return ap


def parse_args(argv, description, dataset, defaults, presets):
    """FLAGS with this script's defaults; --quick, --medium (presets) and --paper set only flags not given."""
    ap = one_line_errors(argparse.ArgumentParser(description=description,
                                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    D = {**RUNNING, **defaults, "out_dir": f"runs/{dataset}"}
    for title, flags in FLAGS.items():
        add = ap.add_argument_group(title).add_argument
        for flag, kind, text in flags:
            key = flag[2:].replace("-", "_")
            how = ({"action": "store_true"} if kind is bool else {"choices": kind} if isinstance(kind, list)
                   else {"action": kind} if kind is argparse.BooleanOptionalAction else {"type": kind})
            add(flag, **how, **({} if kind is bool else {"default": D[key]}), help=text)
    args, unset = ap.parse_args(argv), object()
    given = ap.parse_args(argv, argparse.Namespace(**{a.dest: unset for a in ap._actions}))
    if args.quick and args.medium:
        ap.error("--quick and --medium are two presets; pick one")
    for name, preset in (*presets.items(), ("paper", PAPER)):
        for key, value in preset.items():
            if getattr(args, name) and getattr(given, key) is unset:
                setattr(args, key, value)
        if getattr(args, name) and name in presets and given.out_dir is unset:
            args.out_dir += f"-{name}"                           # runs/<dataset>-quick, beside the full run
    if args.dry_run:
        args.classifier_epochs, args.generator_steps = 1, min(args.generator_steps, 4)
        args.train_subset, args.batch_size = args.train_subset or 512, min(args.batch_size, 32)
        args.classifier_batch_size = min(args.classifier_batch_size, 64)
        args.eval_per_class, args.log_every, args.distill_steps = min(args.eval_per_class, 8), 2, min(args.distill_steps, 2)
    if args.resume and args.retrain:
        raise UserError("--resume and --retrain contradict each other; pick one")
    for flag in ("batch_size", "eval_per_class"):              # each generator needs a share and a column
        if getattr(args, flag) < args.num_generators:
            raise UserError(f"--{flag.replace('_', '-')} {getattr(args, flag)} is smaller than "
                            f"--num-generators {args.num_generators}: each generator needs a share")
    return args


# ==== Plumbing: device, seed, memory layout, mixed precision =======================================
def choose_device(name):
    """--device as a torch.device, printed; on CUDA, TF32 matmuls and tuned convolutions (also benchmark.py's)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    elif name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asked for, but MPS is not available; use --device cpu or auto")
    print(f"device: {name}" + (f" ({torch.cuda.get_device_name()})" if name == "cuda" else ""))
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = True
    return torch.device(name)


def emulated_bf16(device):
    """The CPU's capability if bfloat16 is emulated there (slower than float32: not AVX512, not SVE); else None."""
    capability = torch.backends.cpu.get_cpu_capability()
    return capability if device.type == "cpu" and capability not in ("AVX512", "SVE256", "SVE128") else None


def setup(args, presets):
    """The device (printed), the seed, a writable --out-dir; --amp off where bfloat16 is emulated."""
    device = choose_device(args.device)
    if args.amp and (capability := emulated_bf16(device)):
        print(f"--amp: bfloat16 is emulated on this CPU ({capability}), slower than float32; running in float32")
        args.amp = False
    for flag, preset in (*presets.items(), ("paper", PAPER)):
        if getattr(args, flag):
            print(f"--{flag}: " + ", ".join(f"{k}={getattr(args, k)}" for k in preset))
    if device.type == "cpu" and not (args.quick or args.medium or args.dry_run):
        print("note: a CPU runs the GPU-sized defaults; --quick is a 5-minute preview, --medium 45 minutes.")
    torch.manual_seed(args.seed)                                 # also seeds CUDA
    try:                                                         # a writable --out-dir
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out_dir).close()
    except OSError as e:
        raise UserError(f"cannot write to --out-dir {args.out_dir}: {e.strerror or e}") from None
    return device, Path(args.out_dir)


def place(m, device):
    """A model or images on the device; on a CPU channels-last (max pooling, convolutions faster)."""
    return m.to(device=device, memory_format=torch.channels_last if device.type == "cpu" else torch.contiguous_format)


def autocast(device, enabled):
    """bfloat16 autocast with --amp (CUDA or a CPU); no weight cache while a CUDA graph records."""
    recording = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type in ("cuda", "cpu"),
                          cache_enabled=not recording)


def architecture(model: nn.Module) -> str:
    """A short signature of a model, kept in checkpoints to refuse a mismatched one."""
    return f"{type(model).__name__}/{sum(p.numel() for p in model.parameters())} parameters"


def f_training(args, adversarial=True) -> dict:
    """How f (or, adversarial=False, the judge) was trained: a cached one is reused only if trained the same way."""
    eps = args.classifier_adv_eps if adversarial else 0.0
    return {k: getattr(args, k) for k in ("fake_data", "classifier_epochs", "classifier_batch_size", "classifier_lr",
                                          "augment", "train_subset")} | {"classifier_adv_eps": eps} | (
        {"adversarial": "fgsm, random start"} if eps else {})


# ==== Plumbing: --cuda-graph around the scripts' inversion step (G's Adam: capturable=True) =========
class GraphedStep:
    """Each call is one training step: the first `warmup` run step(); the next records it as a CUDA
    graph, replayed from then on (one launch, fresh random numbers).  step() must keep its shapes."""

    def __init__(self, step, warmup=3):
        self.step, self.warmup, self.calls, self.graph, self.out = step, warmup, 0, None, None

    def __call__(self):
        self.calls += 1
        if self.calls <= self.warmup:                            # on a side stream, as recording needs
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            try:
                with torch.cuda.stream(side):
                    return self.step()
            finally:                                             # interrupted too: a checkpoint waits for side's writes
                torch.cuda.current_stream().wait_stream(side)
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.step()
        self.graph.replay()
        return self.out


def load_optimizer(opt, state, capturable):
    """Adam's state, saved in any mode (CPU, CUDA, the graph), loaded in this run's: load_state_dict
    takes `capturable` from the state and moves `step` to the parameter's device only if it is set."""
    opt.load_state_dict({**state, "param_groups": [{**g, "capturable": capturable} for g in state["param_groups"]],
                         "state": {i: {**s, "step": torch.as_tensor(s["step"], dtype=torch.float32).cpu()}
                                   for i, s in state["state"].items()}})


# ==== Plumbing: data ===============================================================================
def open_dataset(make, name, folder, files):
    """make(): torchvision's dataset, downloaded if missing; if that fails, one line on what to do."""
    try:
        return make()
    except Exception as e:          # network and file errors come in many types: one message
        reason = type(e).__name__ + (f": {str(e).strip().splitlines()[0]}" if str(e).strip() else "")
        raise UserError(f"{name}: could not read it from {folder} or download it there ({reason}). Put "
                        f"these files there: {', '.join(files)}; or run with --fake-data") from None


def fake_splits(shape, n_classes=10, n_train=3000, n_test=1000, seed=1234):
    """--fake-data: per class a smooth pattern x a brightness + noise, learnable, the same every time."""
    g = torch.Generator().manual_seed(seed)
    patterns = F.interpolate(torch.rand(n_classes, shape[0], 5, 5, generator=g), size=shape[1:], mode="bilinear")
    splits = []
    for N in (n_train, n_test):
        y = (torch.arange(N) % n_classes)[torch.randperm(N, generator=g)]
        x = patterns[y] * (0.7 + 0.3 * torch.rand(N, 1, 1, 1, generator=g)) + 0.15 * torch.randn(N, *shape, generator=g)
        splits.append(((x.clamp(0, 1) * 255).to(torch.uint8), y))
    return splits


def to_device(train, test, shape, args, device):
    """(x uint8 (N, C, H, W), y) per split -> {"x_train", ...} on the device, x float in [0, 1]."""
    (x_tr, y_tr), (x_te, y_te) = [(torch.as_tensor(x), torch.as_tensor(y).long()) for x, y in (train, test)]
    if tuple(x_tr.shape[1:]) != tuple(shape) or len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise UserError(f"the dataset's images have shape {tuple(x_tr.shape[1:])}, expected {tuple(shape)}")
    if args.train_subset:
        x_tr, y_tr = x_tr[:args.train_subset], y_tr[:args.train_subset]
    if args.dry_run:
        x_te, y_te = x_te[:300], y_te[:300]
    print(f"data: {len(x_tr)} training and {len(x_te)} test images of shape {tuple(shape)} on {device}")
    to = lambda x: place(x.to(device), device).float().div_(255)    # noqa: E731  (uint8 crosses)
    return {"x_train": to(x_tr), "y_train": y_tr.to(device), "x_test": to(x_te), "y_test": y_te.to(device)}


# ==== Plumbing: files written whole or not at all; checkpoints; progress lines ======================
def atomic_write(path, write):
    """write(binary file) into a temporary file beside path, then rename it: never half a file."""
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(path, obj: dict):
    atomic_write(path, lambda fh: torch.save(obj, fh))


def load_checkpoint(path, kind: str, signature: dict) -> dict:
    """A checkpoint of this kind whose signature (dataset, architecture...) matches, or one line."""
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


def rng_state(device, state=None):
    """The random-number states (CPU, and CUDA on CUDA); given a state, restore it instead."""
    cuda = device.type == "cuda"
    if state is None:
        return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if cuda else None}
    torch.set_rng_state(state["cpu"])
    if cuda and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def eta(t0, done, total):
    """'12s, ETA 34s' for a loop started at time t0 that has done `done` of `total` steps."""
    spent = time.time() - t0
    return f"{spent:.0f}s, ETA {spent / max(done, 1) * (total - done):.0f}s"
