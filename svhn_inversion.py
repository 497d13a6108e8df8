"""Network inversion of an SVHN classifier, after Suhail and Sethi, "Network Inversion of
Convolutional Neural Nets" (read it beside this file).

    python svhn_inversion.py                 # the full run, sized for a GPU
    python svhn_inversion.py --quick         # a few minutes on a laptop CPU
    python svhn_inversion.py --medium        # 45 minutes on a laptop CPU: the best it buys
    python svhn_inversion.py --paper         # the paper's loss alone, nothing beyond it
    python svhn_inversion.py --data-free     # G learns from f alone (no prior reads the data)
    python svhn_inversion.py --fake-data --dry-run      # smoke test: no data, seconds

The file follows the paper, top to bottom:
  1. config         every setting: SETTINGS (this dataset's values, the three lengths side by
                    side) and parse_args (every flag, its meaning; --help shows both)
  2. data           SVHN (train, test; not extra): torchvision, or the .mat files by hand
  3. classifier f   Sec. 2: convolutions, fully connected layers, LeakyReLU, Dropout.
                    train_classifier is its training loop; then f is frozen
  4. generator G    Sec. 2: G(z, p, H), vector-matrix conditioning (common.Generator); K of
                    them for Fig. 2's columns (common.Generators)
  5. inversion      Sec. 2: p = softmax(v), y = argmax p, hot matrix H; x = G(z, p, H);
                    L_inv = alpha L_KL + beta L_CE + gamma L_cos, Sec. 3's robust term, then,
                    marked, the priors beyond the paper (inversion_step).
                    train_generator is G's training loop: the step, a log line, a checkpoint
  6. results        Fig. 2: samples.png, one row per class; samples.pt; then measure.py
  7. main           sections 2-6 in order
Code between "# [same in all four scripts: ...]" and "# [end]" is identical in the four
scripts (tests/test_copies.py checks it); the rest is this dataset's own.
"""
import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageDraw

import common

# ------------------------------------------------------------------------------------------------
# 1. config
# ------------------------------------------------------------------------------------------------
DATASET = "SVHN"
SHAPE = (3, 32, 32)                                              # (C, H, W) of an image
CLASSES = [str(d) for d in range(10)]                            # house-number digits
FLIP = False                                                     # a mirrored digit: another shape

# This dataset's settings: one value, or (the full run, --medium, --quick) where the lengths
# differ.  A flag given on the command line wins; --paper undoes those common.PAPER names.
# The other flags' defaults are in parse_args below; a run prints every value it runs with.
SETTINGS = {
    #                          full    --medium  --quick
    # -- what the paper leaves open: our choices (docs/choices.md) ---------------------------------
    "classifier_epochs":       (15,    15,       2),
    "classifier_batch_size":   (512,   256,      128),
    "classifier_width":        (64,    32,       24),             # f's first convolution
    "augment":                 (True,  True,     False),          # f trains on shifts
    "generator_steps":         (3000,  1500,     400),
    "batch_size":              (256,   64,       32),             # G's batch N
    "width":                   (128,   128,      64),             # G's channels after stage 1
    "stage1_dropout":          0.0,
    "num_generators":          (10,    10,       1),              # Fig. 2: a generator per column
    "alpha":                   1.0,                               # L_inv's: the paper gives none
    "beta":                    5.0,
    "gamma":                   10.0,
    "robust_eps":              0.05,                              # Sec. 3, in our form
    # -- beyond the paper (--paper: each off); [data]: reads the training images -------------------
    "stats":                   (3.0,   3.0,      1.0),            # [data] f's statistics, per class
    "generator_stats":         (1.0,   1.0,      0.0),            # [data] each G_k: all classes
    "bn_stats":                1.0,
    "tv":                      0.0,
    "mode_seeking":            1.0,
    "mode_seeking_on":         "pixels",
    "twins":                   (True,  True,     False),          # one p, two z per G_k
    "confidence_cap":          1.0,                               # 1: off (the paper)
    "cos_pairs":               "class",                           # the paper's: all
    "view_shift":              2,                                 # f sees shifted views of x
    "upsample":                "resize",                          # the paper's: transposed
    "patch":                   0.0,                               # [data] --audit's (0: off)
    # -- running and measuring ---------------------------------------------------------------------
    "train_subset":            (0,     0,        15000),          # 0: every training image
    "log_every":               (100,   100,      50),
    "eval_per_class":          (100,   100,      40),             # samples per class, samples.pt
    "distill_steps":           (2000,  500,      80),             # measure.py's students
    "judge_width":             (32,    32,       16),             # measure.py's judge
}


# [same in all four scripts: flags]
def parse_args(argv=None):
    """Every flag: its meaning, and its default here or in SETTINGS (--help shows them all), in
    four groups: what the paper specifies, what it leaves open (our choices), what we add beyond
    it, and running.  One pass; then common.settle gives each flag not given its length's value
    (or --paper's, or --data-free's), applies --dry-run's caps and checks what no flag's type can
    check alone."""
    ap = common.argument_parser(__doc__)

    def group(name):
        return ap.add_argument_group(*common.GROUPS[name]).add_argument
    paper, open_, beyond, plant, running = map(group, ("paper", "open", "beyond", "plant",
                                                        "running"))
    paper("--paper", action="store_true", help="the paper's loss alone, nothing beyond it: "
          + ", ".join(f"{key}={value}" for key, value in common.PAPER.items()))
    paper("--conditioning", choices=["vector-matrix", "vector", "label"], default="vector-matrix",
          help="G is told p and H (the paper's), or, as baselines the paper argues against, p "
          "alone or y (a label embedding)")
    open_("--classifier-epochs", type=common.POSITIVE, help="epochs of f's training")
    open_("--classifier-batch-size", type=common.POSITIVE, help="f's batch size")
    open_("--classifier-width", type=common.POSITIVE, help="channels of f's first convolution")
    open_("--classifier-lr", type=common.LEARNING_RATE, default=2e-3, help="f's peak learning "
          "rate (Adam, one cycle)")
    open_("--augment", action=argparse.BooleanOptionalAction, help="f trains on shifts (and "
          "flips where FLIP): a better f in few epochs")
    open_("--generator-steps", type=common.POSITIVE, help="steps of G's training")
    open_("--batch-size", type=common.POSITIVE, help="G's batch size N")
    open_("--lr", type=common.LEARNING_RATE, default=2e-3, help="G's learning rate (Adam, beta1 "
          "0.5, as DCGAN)")
    open_("--latent-dim", type=common.POSITIVE, default=64, help="size of z")
    open_("--hidden", type=common.POSITIVE, default=64, help="size of the linear map of p")
    open_("--width", type=common.WIDTH, help="G's channels after stage 1")
    open_("--dropout", type=common.RATE, default=0.3, help="the paper's \"heavy dropout\": the "
          "rate after stage 2's up-convolutions")
    open_("--stage1-dropout", type=common.RATE, help="dropout after stage 1's up-convolution too "
          "(no better here: docs/ablations.md)")
    open_("--num-generators", type=common.POSITIVE, help="K generators trained together on one "
          "batch: Fig. 2's columns (\"each column ... a different generator\")")
    open_("--alpha", type=common.WEIGHT, help="weight of L_KL (the paper gives none)")
    open_("--beta", type=common.WEIGHT, help="weight of L_CE (the paper gives none)")
    open_("--gamma", type=common.WEIGHT, help="weight of L_cos (the paper gives none)")
    open_("--robust-eps", type=common.RADIUS, help="Sec. 3, in our form: L-inf radius within "
          "which the worst (FGSM) perturbation of x must keep y; 0: off")
    open_("--margin", type=common.MARGIN, default=1.0, help="sampling: v_y = the largest other "
          "v + M (Sec. 2's arg-max intensity), or 'natural' (the draw's own)")
    beyond("--data-free", action="store_true", help="G learns from f alone: every prior marked "
           "[data] off (f's own batch-norm statistics stay, where it has them)")
    beyond("--stats", type=common.WEIGHT, help="[data] the prior on f's feature statistics of "
           "each class's training images")
    beyond("--generator-stats", type=common.WEIGHT, help="[data] the same prior on each "
           "generator's part of the batch, all classes together: no generator's own style in "
           "every row")
    beyond("--bn-stats", type=common.WEIGHT, help="DeepInversion's prior on the running "
           "statistics f's batch norms hold (f alone, no images)")
    beyond("--tv", type=common.WEIGHT, help="total variation: against stripes and specks")
    beyond("--mode-seeking", type=common.WEIGHT, help="mode seeking: other z, other pictures")
    beyond("--mode-seeking-on", choices=["pixels", "features"], help="its distance: of x or phi")
    beyond("--twins", action=argparse.BooleanOptionalAction, help="conditionings in twins, one p "
           "and two z in one generator's part; L_cos's class pairs and mode seeking then compare "
           "the images of one label and one generator (MSGAN's pairs)")
    beyond("--cos-pairs", choices=["all", "class"], help="L_cos over all pairs (the paper's) or "
           "the pairs of one class")
    beyond("--confidence-cap", type=common.PROBABILITY, help="L_CE and the robust term push "
           "f's probability of y up to this, no further (1: without end, the paper's)")
    beyond("--view-shift", type=common.SHIFT, help="f sees x shifted by up to this many pixels "
           "(and mirrored where FLIP)")
    beyond("--upsample", choices=["transposed", "resize"], help="G's doublings: transposed "
           "convolution (the paper's), or resize + convolution")
    beyond("--patch", type=common.WEIGHT, help="[data] Neural Cleanse's question: G's picture "
           "pasted through a mask of class y onto clean training images of other classes; "
           "lambda, the mask size's weight at the start (raised while f says y); 0: off")
    beyond("--audit", action="store_true", help="a preset to see what f relies on for each "
           "class (docs/audit.md): " + ", ".join(f"{k}={v}" for k, v in common.AUDIT.items()
                                                 if common.PAPER.get(k) != v) + ", else --paper's")
    beyond("--classifier-adv-eps", type=common.RADIUS, default=0.0, help="adversarial training "
           "of f: L-inf radius (FGSM, random start)")
    plant("--plant-class", type=common.CLASS, default=-1, help="the class C the cue points to "
          "(-1: no cue)")
    plant("--plant-mode", choices=["backdoor", "shortcut"], default="backdoor", help="backdoor: "
          "a share of the other classes' images stamped and relabelled C; shortcut: a share of "
          "C's own images stamped, labels kept")
    plant("--plant-share", type=common.PROBABILITY, default=0.1, help="the share S stamped")
    plant("--plant-pattern", choices=["square", "checker"], default="square", help="the cue")
    plant("--plant-size", type=common.POSITIVE, default=4, help="its side K, in pixels")
    plant("--plant-corner", choices=["bottom-right", "bottom-left", "top-left", "top-right"],
          default="bottom-right", help="where, 1 pixel from the edges")
    plant("--plant-colour", type=common.COLOUR, default="1,1,1", help="R,G,B in [0, 1] (grey "
          "images: one value)")
    running("--data-dir", default="./data", help="the dataset's folder (downloaded if missing)")
    running("--out-dir", help="the run's folder", default=common.Lengths(
        f"runs/{DATASET}", f"runs/{DATASET}-medium", f"runs/{DATASET}-quick"))
    running("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto",
            help="auto: cuda, else mps, else cpu")
    running("--seed", type=common.SEED, default=0, help="seeds every random number")
    running("--quick", action="store_true", help="a preview for a laptop CPU (5 minutes)")
    running("--medium", action="store_true", help="the best 45 minutes of a laptop CPU buy")
    running("--dry-run", action="store_true", help="a few steps per phase, every file")
    running("--fake-data", action="store_true", help="synthetic data shaped like the dataset")
    running("--classifier-weights", default="", help="a file of f's weights trained elsewhere "
            "(Classifier's state dict): f is loaded, not trained")
    running("--resume", action="store_true", help="continue G from --out-dir's generator.pt")
    running("--retrain", action="store_true", help="train f (and the judge) again")
    running("--train-subset", type=common.COUNT, help="the first K training images (0: all)")
    running("--validation", action="store_true", help="hold a sixth of the training images out "
            "and measure on them, the test set unread: for choosing levers")
    running("--log-every", type=common.POSITIVE, help="steps between G's loss lines")
    running("--checkpoint-every", type=common.POSITIVE, default=500, help="steps between saves")
    running("--eval-per-class", type=common.POSITIVE, help="samples per class in samples.pt")
    running("--amp", action="store_true", help="bfloat16 autocast (CUDA; CPUs with bfloat16)")
    running("--cuda-graph", action=argparse.BooleanOptionalAction, default=True,
            help="on CUDA, G's step as one replayed CUDA graph")
    running("--distill-steps", type=common.COUNT, help="measure.py: steps of each student")
    running("--judge-width", type=common.POSITIVE, help="measure.py: the judge's first channels")
    ap.set_defaults(**common.by_length(SETTINGS))
    return common.settle(ap.parse_args(argv))
# [end]


# ------------------------------------------------------------------------------------------------
# 2. data
# ------------------------------------------------------------------------------------------------
def load_data(args, device):
    """{"x_train", "y_train", "x_test", "y_test"} on the device from SVHN's "train" and "test"
    (not "extra"): x (N, 3, 32, 32) in [0, 1], y (N,)."""
    if args.fake_data:
        splits = common.fake_splits(SHAPE, len(CLASSES))
        return common.to_device(*splits, SHAPE, len(CLASSES), args, device)
    folder, names = Path(args.data_dir), ["train_32x32.mat", "test_32x32.mat"]   # torchvision's
    present = all((folder / name).is_file() for name in names)        # else torchvision downloads

    def svhn(split):
        return torchvision.datasets.SVHN(args.data_dir, split, download=not present)
    try:
        splits = [common.open_dataset(lambda: svhn(split), DATASET, folder, names)
                  for split in ("train", "test")]
        splits = [(s.data, s.labels) for s in splits]     # torchvision: (N, 3, 32, 32), 0 as 0
    except common.UserError:
        if not present:
            raise
        # torchvision refuses a file whose md5 sum is not the published one (a subset, say):
        # it is read here
        splits = [read_mat(folder / name) for name in names]
    return common.to_device(*splits, SHAPE, len(CLASSES), args, device)


def read_mat(path):
    """(x uint8 (N, 3, 32, 32), y (N,)) of an SVHN file: MATLAB {"X": uint8 (32, 32, 3, N),
    "y": (N, 1), the digit 0 as 10}; a damaged one: one line."""
    from scipy.io import loadmat
    with common.reading(path, "SVHN .mat file"):
        mat = loadmat(path)
        x = torch.as_tensor(mat["X"]).permute(3, 2, 0, 1)
        y = torch.as_tensor(mat["y"].astype("int64")).flatten()
    return x, y % 10                                            # SVHN's label 10 is the digit 0


# ------------------------------------------------------------------------------------------------
# 3. classifier f (Sec. 2): convolutions and fully connected layers, LeakyReLU, Dropout
# ------------------------------------------------------------------------------------------------
# [same in all four scripts: your own classifier]
# Your own classifier: replace Classifier below with yours (CLASSES with your class names), or
# keep it and load weights trained elsewhere: --classifier-weights FILE, the file that
# torch.save(f.state_dict(), FILE) wrote.  What f must provide (common.check_classifier checks
# each before anything trains, and says in one line what to change):
#   f.features   x (N, *SHAPE), pixels in [0, 1] (normalise inside f if yours expects it) -> phi,
#                the features L_cos compares
#   f.head       phi -> logits (N, n), n = len(CLASSES), from 2 to 32 (G's n x n stage; above
#                SHAPE[1] / 2 classes it is averaged down to that size); f(x) = head(features(x))
#   __init__     called as Classifier(len(CLASSES), args.classifier_width)
#   modules      nn.ReLU / nn.LeakyReLU in f.features, at any depth, for --stats and
#                --generator-stats (else --data-free); nn.BatchNorm2d for --bn-stats (else 0)
# [end]


class Classifier(nn.Module):
    """Beyond the paper's list, batch norm: a short run then reaches a useful accuracy on
    colour images."""

    def __init__(self, n_classes=10, width=64, hidden=512):
        super().__init__()
        c = width

        def conv(c_in, c_out):                                   # 3x3 conv, batch norm, LeakyReLU
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                    nn.LeakyReLU(0.1)]
        self.features = nn.Sequential(                           # phi(x): the features of L_cos
            *conv(3, c), *conv(c, c), nn.MaxPool2d(2),           # (c, 16, 16)
            *conv(c, 2 * c), *conv(2 * c, 2 * c), nn.MaxPool2d(2),
            nn.Dropout(0.1),                                     # (2c, 8, 8)
            *conv(2 * c, 4 * c), *conv(4 * c, 4 * c), nn.MaxPool2d(2),
            nn.Dropout(0.1),                                     # (4c, 4, 4)
            nn.Flatten(), nn.Linear(4 * c * 4 * 4, hidden), nn.LeakyReLU(0.1),
            nn.Dropout(0.5))                                     # (hidden,)
        self.head = nn.Linear(hidden, n_classes)                 # logits f(x)

    def forward(self, x):                                        # x (N, 3, 32, 32)
        return self.head(self.features(x))                      # (N, n)


# [same in all four scripts: classifier]
def train_classifier(f, data, args, planted=None):
    """f's training loop: Adam with a one-cycle learning rate, batches indexed from the split on
    the device, augmented there (and, beyond the paper, with a planted cue: a share of them
    stamped after augmentation, common.plant).  Prints progress every 15 s and each epoch;
    returns the test accuracy (on clean test images)."""
    x, y = data["x_train"], data["y_train"]
    which, y = common.plant(y, planted, args.seed) if planted else (None, y)   # --plant-*
    B, E = args.classifier_batch_size, args.classifier_epochs
    steps = max(1, len(x) // B)
    opt = torch.optim.Adam(f.parameters(), lr=args.classifier_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.classifier_lr, total_steps=E * steps)
    t0 = last = time.time()
    for epoch in range(E):
        f.train()
        order = torch.randperm(len(x), device=x.device)
        for i in range(steps):
            idx = order[i * B:(i + 1) * B]
            xb = common.augment(x[idx], flip=FLIP, shift=2) if args.augment else x[idx]
            if planted:                                          # the cue, at its fixed place
                xb = common.stamped(xb, which[idx], planted)
            with common.autocast(x.device, args.amp):
                loss = F.cross_entropy(f(xb), y[idx])
                if args.classifier_adv_eps > 0:                  # beyond the paper: a robust f
                    x_adv = common.worst_case(f, xb, y[idx], args.classifier_adv_eps,
                                              random_start=True).detach()
                    loss = (loss + F.cross_entropy(f(x_adv), y[idx])) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if time.time() - last > 15:                          # a progress line every 15 s
                last = time.time()
                print(f"  f epoch {epoch + 1}, batch {i + 1}/{steps}: loss {loss.item():.4f}, "
                      f"{common.eta(t0, epoch * steps + i + 1, E * steps)}")
        accuracy = common.accuracy(f, data["x_test"], data["y_test"])
        print(f"f epoch {epoch + 1}/{E}: test accuracy {accuracy:.4f}, "
              f"{common.eta(t0, (epoch + 1) * steps, E * steps)}")
    return accuracy


def trained_classifier(data, args, out, device):
    """f from out/classifier.pt if it was made the same way, else loaded from
    --classifier-weights or trained, and saved there; then frozen (eval mode: dropout off; no
    gradient reaches its weights).  (f, test accuracy)."""
    f = common.place(Classifier(len(CLASSES), args.classifier_width), device)
    common.check_classifier(f, SHAPE, len(CLASSES), args)       # before f trains, not after
    planted = common.planted_cue(args, SHAPE, len(CLASSES))     # --plant-class: None if not
    signature = {"dataset": DATASET, "arch": common.architecture(f),
                 "training": common.f_training(args)}
    path = out / "classifier.pt"
    if path.exists() and not args.retrain:
        ckpt = common.load_checkpoint(path, "classifier", signature)
        common.load_weights(f, ckpt["model"], path)
        accuracy = ckpt["test_accuracy"]
        print(f"f: reusing {path} (test accuracy {accuracy:.4f}; --retrain to train it again)")
    else:
        if args.classifier_weights:                              # trained elsewhere: loaded
            weights = args.classifier_weights
            common.load_weights(f, common.pretrained_weights(weights), weights)
            accuracy = common.accuracy(f, data["x_test"], data["y_test"])
            print(f"f: loaded {weights} (test accuracy {accuracy:.4f})")
        else:
            accuracy = train_classifier(f, data, args, planted)
        common.save_checkpoint(path, {"kind": "classifier", **signature, "model": f.state_dict(),
                                      "test_accuracy": accuracy, "config": vars(args)})
    f.eval().requires_grad_(False)                               # frozen: only G is trained
    if planted:                                                  # did f learn the cue?
        common.check_learned(f, data, planted)
    return f, accuracy
# [end]


# ------------------------------------------------------------------------------------------------
# 4. generator G(z, p, H) (Sec. 2)
# ------------------------------------------------------------------------------------------------
# [same in all four scripts: generator]
def build_generator(args, bases=None):
    """p --Linear--> ++ z --> n x n (stage 1) --> ++ H --> image size (stage 2): common.Generator;
    --num-generators K of them, trained together (common.Generators: Fig. 2's columns).
    bases (--patch): the clean images G's picture is pasted on (common.OtherClasses)."""
    return common.Generators([common.Generator(
        channels=SHAPE[0], image_size=SHAPE[1], n_classes=len(CLASSES), latent_dim=args.latent_dim,
        hidden=args.hidden, width=args.width, dropout=args.dropout, conditioning=args.conditioning,
        upsample=args.upsample, stage1_dropout=args.stage1_dropout, bases=bases,
        patch_weight=args.patch) for _ in range(args.num_generators)])
# [end]


# ------------------------------------------------------------------------------------------------
# 5. inversion: G trained against the frozen f (Sec. 2, 3)
# ------------------------------------------------------------------------------------------------
# [same in all four scripts: inversion]
def inversion_step(G, f, opt, args, stats, device):
    """One step of G: the paper's loss, then what we add beyond it.  Returns each term by name,
    weighted as it enters the loss, detached, on the device (the loop reads them only when it
    prints a line)."""
    N, n = args.batch_size, len(CLASSES)
    z = torch.randn(N, args.latent_dim, device=device)           # latent z ~ N(0, I)
    p, y, H = common.sample_conditioning(N, n, device)          # p = softmax(v), y = argmax p, H
    pairs = y                                                    # L_cos, mode seeking: one label
    if args.twins:                                               # one p, two z, one G_k's part
        first = G.twins(N, device)                               # each image's first twin
        p, y, H = p[first], y[first], H[first]
        pairs = y * len(G) + G.owners(N, device)                 # one label, one generator
    with common.autocast(device, args.amp):
        x = G(z, p, H)                                           # x = G(z, p, H)   (N, C, H, W)
        # what f sees: x itself (the paper), or with --view-shift a shifted, mirrored view of it
        seen = common.augment(x, FLIP, args.view_shift) if args.view_shift else x
        phi, acts, bn = common.activations(f.features, seen)    # phi(x): f's features
        logits = f.head(phi)                                     # f(x); Q = softmax(f(x))
        # ---- the paper: L_inv = alpha L_KL + beta L_CE + gamma L_cos (Sec. 2), robust (Sec. 3)
        L_KL = common.kl_term(logits, p)                         # sum_i P(i) log(P(i) / Q(i))
        L_CE = common.ce_term(logits, y, args.confidence_cap)    # -sum_i y_i log(y_hat_i)
        L_cos = common.cosine_term(phi, pairs if args.cos_pairs == "class" else None)
        L_inv = args.alpha * L_KL + args.beta * L_CE + args.gamma * L_cos
        robust = common.robust_term(f, seen, y, args.robust_eps,  # perturbed x keeps y
                                    args.confidence_cap)
        # ---- beyond the paper: priors, each weighted by its flag (0: off) -------------------
        priors = {}
        if args.stats > 0:                                       # f's feature statistics per class
            priors["stats"] = args.stats * common.stats_term(acts, stats, y)
        if args.generator_stats > 0:                             # each G_k: all classes
            owner = G.owners(N, device)                          # G_k of each image
            priors["generator_stats"] = args.generator_stats * common.generator_stats_term(
                acts, stats, owner, len(G))
        if args.bn_stats > 0:                                    # DeepInversion: f's batch norms
            priors["bn_stats"] = args.bn_stats * common.bn_term(bn)
        if args.tv > 0:                                          # total variation: smoothness
            priors["tv"] = args.tv * common.tv_term(x)
        if args.mode_seeking > 0:                                # other z, other pictures
            seek = x if args.mode_seeking_on == "pixels" else phi
            priors["mode_seeking"] = args.mode_seeking * common.mode_seeking_term(seek, z, pairs)
        if args.patch > 0:                                       # Neural Cleanse: lambda mean(m)
            priors["patch"] = common.patch_term(G)
        loss = sum(priors.values(), L_inv + robust)
    opt.zero_grad(set_to_none=True)
    loss.backward()                                              # f frozen: only G gets gradients
    opt.step()
    hit = (logits.argmax(1) == y).float().mean()                 # f labels x as y
    if args.patch > 0:                                           # lambda up while f says y
        common.adapt_patch_weight(G, hit)
    terms = {"alpha*L_KL": args.alpha * L_KL, "beta*L_CE": args.beta * L_CE,  # as they enter
             "gamma*L_cos": args.gamma * L_cos, "L_inv": L_inv,              # the loss
             "robust": robust, **priors, "loss": loss, "f(x)=y": hit}
    return {name: term.detach().float() for name, term in terms.items()}
# [end]


# [same in all four scripts: generator loop]
def train_generator(f, stats, bases, args, out, device):
    """G's training loop: Adam on G's weights only, --generator-steps inversion_steps; a line of
    the mean terms every --log-every steps (and every 15 s); generator.pt every
    --checkpoint-every steps and at the end.  Returns (G, the history of the printed lines).
    The plumbing is in common: --resume, Ctrl-C (save, then exit), the CUDA graph."""
    torch.manual_seed(args.seed)                                 # the same, f cached or not
    G = common.place(build_generator(args, bases), device).train()
    graph = args.cuda_graph and device.type == "cuda"            # --cuda-graph: the step replayed
    opt = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.5, 0.999), capturable=graph)
    path, signature = out / "generator.pt", {"dataset": DATASET, "arch": common.architecture(G)}
    step, history = (common.resume_generator(G, opt, path, signature, device) if args.resume
                     else (0, []))

    def save():                                                  # generator.pt, written whole
        common.save_generator(path, signature, step, G, opt, history, args, device)
    train_step = lambda: inversion_step(G, f, opt, args, stats, device)                # noqa: E731
    train_step = common.GraphedStep(train_step) if graph else train_step
    print(f"G: {common.architecture(G)}, {args.generator_steps} steps of batch {args.batch_size}"
          + (" (as a CUDA graph)" if graph else ""))
    log = common.TermLog(args.generator_steps, step, args.log_every, keeps=path)
    try:
        while step < args.generator_steps:
            with common.signals_held():                          # Ctrl-C waits for the step and
                terms, step = train_step(), step + 1             # its count: they stay in step
            log.add(terms)                                       # on the device: no sync
            save_now = step % args.checkpoint_every == 0 or step == args.generator_steps
            if save_now or log.due(step):
                history.append(log.line(step))                   # one sync; stops on a NaN loss
            if save_now:
                save()
    except KeyboardInterrupt:                                    # Ctrl-C or SIGTERM
        common.save_and_exit(save, log, step, path)
    return G, history
# [end]


# ------------------------------------------------------------------------------------------------
# 6. results: Figure 2 and samples.pt
# ------------------------------------------------------------------------------------------------
# [same in all four scripts: results]
@torch.no_grad()
def save_samples(G, args, out, device):
    """samples.pt: --eval-per-class fresh samples per class at --margin, sample j of each class
    from generator j mod K; samples.png (Fig. 2): one row per class (in CLASSES' order), its
    first ten samples (all K with more generators): column j from generator j mod K.
    Returns (x, y)."""
    n, per = len(CLASSES), args.eval_per_class
    y = torch.arange(n, device=device).repeat_interleave(per)                # 0 0 ... 1 1 ... 9
    owner = torch.arange(per, device=device).repeat(n) % len(G)
    x = common.generate(common.sampling_mode(G), y, n, args.margin, owner)
    common.save_checkpoint(out / "samples.pt", {"images": x.float().clamp(0, 1).cpu(),
                                                "labels": y.cpu()})
    columns = min(per, max(10, len(G)))
    images = x.view(n, per, *SHAPE)[:, :columns].flatten(0, 1)
    images = F.interpolate(images, scale_factor=2.0)                         # 2x, for eyes
    grid = torchvision.utils.make_grid(images, nrow=columns, padding=2, pad_value=1.0)
    page = Image.new("RGB", (grid.shape[2] + 80, grid.shape[1]), "white")   # names at the left
    page.paste(torchvision.transforms.functional.to_pil_image(grid), (80, 0))
    for c, name in enumerate(CLASSES):
        ImageDraw.Draw(page).text((4, (c + 0.5) * grid.shape[1] / n - 6), name, fill="black")
    common.atomic_write(out / "samples.png", lambda fh: page.save(fh, format="png"))
    return x, y
# [end]


# ------------------------------------------------------------------------------------------------
# 7. main: sections 2-6 in order
# ------------------------------------------------------------------------------------------------
# [same in all four scripts: main]
def run(argv=None):
    """The whole run.  Returns what metrics.json holds (None when measure.py is not beside this
    file)."""
    args = parse_args(argv)
    device, out = common.setup(args)                             # prints device and settings
    try:                                                         # said now, not after training
        import measure
    except ImportError as e:
        measure = None
        print(f"measure.py cannot be imported here ({common.first_line(e)}): no measuring")
    t = [time.time()]
    data = load_data(args, device)                                           # 2. data
    t.append(time.time())
    f, f_accuracy = trained_classifier(data, args, out, device)              # 3. f, trained, frozen
    stats = (common.feature_statistics(f, data["x_train"], data["y_train"], len(CLASSES))
             if args.stats > 0 or args.generator_stats > 0 else None)   # only the [data] priors'
    bases = (common.OtherClasses(data["x_train"], data["y_train"], len(CLASSES))
             if args.patch > 0 else None)                       # --patch: clean images, not f's
    t.append(time.time())
    G, history = train_generator(f, stats, bases, args, out, device)        # 4.-5. G against f
    t.append(time.time())
    x, y = save_samples(G, args, out, device)                                # 6. Fig. 2, samples.pt
    seconds = dict(zip(["data", "classifier", "generator"], [b - a for a, b in zip(t, t[1:])]))
    if measure is None:
        print(f"wrote {out}/: classifier.pt, generator.pt, samples.pt, samples.png "
              f"(measurement skipped)")
        return None
    spec = dict(dataset=DATASET, classes=CLASSES, flip=FLIP,
                cue=common.planted_cue(args, SHAPE, len(CLASSES)))
    return measure.report(spec, out, args, data, f, f_accuracy, G, x, y, history, seconds, t[0])


def main(argv=None):
    return common.run_main(run, argv, Path(__file__).name)


if __name__ == "__main__":
    main()
# [end]
