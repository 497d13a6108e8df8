"""Network inversion of an SVHN classifier, after Suhail and Sethi, "Network Inversion of
Convolutional Neural Nets" (read it beside this file).

    python svhn_inversion.py                 # the full run, sized for a GPU
    python svhn_inversion.py --quick         # a few minutes on a laptop CPU
    python svhn_inversion.py --medium        # 45 minutes on a laptop CPU: the best it buys
    python svhn_inversion.py --paper         # the paper's loss alone, nothing beyond it
    python svhn_inversion.py --fake-data --dry-run      # smoke test: no data, seconds

The file follows the paper, top to bottom:
  1. config         the flags (python svhn_inversion.py --help) and this dataset's defaults
  2. data           SVHN (train, test; not extra): torchvision, or the .mat files by hand
  3. classifier f   Sec. 2: convolutions, fully connected layers, LeakyReLU, Dropout.
                    train_classifier is its training loop; then f is frozen
  4. generator G    Sec. 2: G(z, p, H), vector-matrix conditioning (common.Generator)
  5. inversion      Sec. 2: p = softmax(v), y = argmax p, hot matrix H; x = G(z, p, H);
                    L_inv = alpha KL(P||Q) + beta CE + gamma L_cos (inversion_step);
                    Sec. 3: the robust term; beyond the paper, marked: priors, levers.
                    train_generator is G's training loop: logging, checkpoints, --resume
  6. results        Fig. 2: samples.png, one row per class; samples.pt; then measure.py
  7. main           sections 2-6 in order
Code between "# [same in all four scripts: ...]" and "# [end]" is identical in the four
scripts (tests/test_copies.py checks it); the rest is this dataset's own.
"""
import math
import sys
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
FLIP = False                                                     # a mirrored digit is another shape
DEFAULTS = dict(                                                 # this dataset's flag defaults
    classifier_epochs=15, classifier_batch_size=512, classifier_lr=2e-3, classifier_width=64,
    augment=True, train_subset=0,                                # f's data: shifts (and flips); all of it
    generator_steps=3000, batch_size=256, lr=2e-3, latent_dim=64, hidden=64, width=128, dropout=0.3,
    alpha=1.0, beta=5.0, gamma=10.0, cos_pairs="class",          # L_inv's weights (not in the paper); L_cos in rows
    robust_eps=0.05, stats=1.0, tv=0.0, bn_stats=1.0,            # Sec. 3 in our form; three priors
    view_shift=2, upsample="resize", mode_seeking=1.0,           # colour: shifted views, no checkerboard, varied rows
    margin=1.0, log_every=100, eval_per_class=100, distill_steps=2000)
QUICK = dict(classifier_epochs=2, augment=False, train_subset=15000, classifier_batch_size=128,
             classifier_width=24, generator_steps=400, batch_size=32, width=64, log_every=50,
             eval_per_class=40, distill_steps=80, judge_width=16,   # --quick: 5 min, 2 CPU cores
             view_shift=0, upsample="transposed", gamma=1.0,     # the colour levers off, as measured
             cos_pairs="all", bn_stats=0.0, mode_seeking=0.0)      # (docs/results.md)
MEDIUM = dict(classifier_epochs=15, classifier_batch_size=256, classifier_width=32, generator_steps=1500,
              batch_size=64, log_every=100, distill_steps=500)   # --medium: 45 min on 2 CPU cores

# [same in all four scripts: flags]
def parse_args(argv=None):
    """The flags of common.FLAGS with this dataset's DEFAULTS (QUICK for --quick, MEDIUM for --medium)."""
    return common.parse_args(argv, __doc__.split("\n\n")[0], DATASET, DEFAULTS, dict(quick=QUICK, medium=MEDIUM))
# [end]


# ------------------------------------------------------------------------------------------------
# 2. data
# ------------------------------------------------------------------------------------------------
def load_data(args, device):
    """{"x_train", "y_train", "x_test", "y_test"} on the device from SVHN's "train" and "test" (not "extra")."""
    if args.fake_data:
        return common.to_device(*common.fake_splits(SHAPE, len(CLASSES)), SHAPE, args, device)
    folder, names = Path(args.data_dir), ["train_32x32.mat", "test_32x32.mat"]       # torchvision's layout
    present = all((folder / name).is_file() for name in names)           # else torchvision downloads
    svhn = lambda split: torchvision.datasets.SVHN(args.data_dir, split, download=not present)  # noqa: E731
    try:
        splits = [common.open_dataset(lambda: svhn(split), DATASET, folder, names) for split in ("train", "test")]
        splits = [(s.data, s.labels) for s in splits]        # torchvision: (N, 3, 32, 32), digit 0 as 0
    except common.UserError:
        if not present:
            raise
        # torchvision refuses a file whose md5 sum is not the published one (a subset, say): read it here
        splits = [read_mat(folder / name, DATASET) for name in names]
    return common.to_device(*splits, SHAPE, args, device)


def read_mat(path, name):
    """(x uint8 (N, 3, 32, 32), y (N,)) from an SVHN file: MATLAB {"X": uint8 (32, 32, 3, N), "y": (N, 1), 0 as 10}."""
    from scipy.io import loadmat
    try:
        mat = loadmat(path)
        x, y = torch.as_tensor(mat["X"]).permute(3, 2, 0, 1), torch.as_tensor(mat["y"].astype("int64")).flatten()
    except Exception as e:          # a truncated or foreign file: one line, as open_dataset says it
        raise common.UserError(f"{name}: {path} is not a readable SVHN .mat file ({type(e).__name__}); "
                               f"put the official file there, or run with --fake-data") from None
    return x, y % 10                                            # SVHN's label 10 is the digit 0


# ------------------------------------------------------------------------------------------------
# 3. classifier f (Sec. 2): convolutions and fully connected layers, LeakyReLU, Dropout
# ------------------------------------------------------------------------------------------------
class Classifier(nn.Module):
    """Beyond the paper's list, batch norm: a short run then reaches a useful accuracy on colour images."""

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
def train_classifier(f, data, args):
    """f's training loop: Adam with a one-cycle learning rate, batches indexed from the split on
    the device, augmented there.  Prints progress every 15 s and each epoch; returns test accuracy."""
    x, y, B, E = data["x_train"], data["y_train"], args.classifier_batch_size, args.classifier_epochs
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
            with common.autocast(x.device, args.amp):
                loss = F.cross_entropy(f(xb), y[idx])
                if args.classifier_adv_eps > 0:                  # beyond the paper: a robust f
                    x_adv = common.worst_case(f, xb, y[idx], args.classifier_adv_eps, random_start=True).detach()
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
        print(f"f epoch {epoch + 1}/{E}: test accuracy {accuracy:.4f}, {common.eta(t0, (epoch + 1) * steps, E * steps)}")
    return accuracy


def trained_classifier(data, args, out, device):
    """f from out/classifier.pt if it was trained the same way, else trained and saved there;
    then frozen (eval mode: dropout off; no gradient reaches its weights).  (f, test accuracy)."""
    f = common.place(Classifier(len(CLASSES), args.classifier_width), device)
    common.check_bn_stats(f, args)                               # before f trains, not after
    signature = {"dataset": DATASET, "arch": common.architecture(f), "training": common.f_training(args)}
    path = out / "classifier.pt"
    if path.exists() and not args.retrain:
        ckpt = common.load_checkpoint(path, "classifier", signature)
        f.load_state_dict(ckpt["model"])
        accuracy = ckpt["test_accuracy"]
        print(f"f: reusing {path} (test accuracy {accuracy:.4f}; --retrain to train it again)")
    else:
        accuracy = train_classifier(f, data, args)
        common.save_checkpoint(path, {"kind": "classifier", **signature, "model": f.state_dict(),
                                      "test_accuracy": accuracy, "config": vars(args)})
    f.eval().requires_grad_(False)                               # frozen: only G is trained
    return f, accuracy
# [end]


# ------------------------------------------------------------------------------------------------
# 4. generator G(z, p, H) (Sec. 2)
# ------------------------------------------------------------------------------------------------
# [same in all four scripts: generator]
def build_generator(args):
    """p --Linear--> ++ z --> n x n (stage 1) --> ++ H --> image size (stage 2); common.Generator,
    --num-generators of them trained together (common.Generators: Fig. 2's columns)."""
    return common.Generators([common.Generator(
        channels=SHAPE[0], image_size=SHAPE[1], n_classes=len(CLASSES), latent_dim=args.latent_dim,
        hidden=args.hidden, width=args.width, dropout=args.dropout, conditioning=args.conditioning,
        upsample=args.upsample, stage1_dropout=args.stage1_dropout) for _ in range(args.num_generators)])
# [end]


# ------------------------------------------------------------------------------------------------
# 5. inversion: G trained against the frozen f (Sec. 2, 3)
# ------------------------------------------------------------------------------------------------
# [same in all four scripts: inversion]
def inversion_step(G, f, opt, args, stats, device):
    """One step of G.  Returns common.TERMS, detached, on the device (read only when logged)."""
    N, n = args.batch_size, len(CLASSES)
    z = torch.randn(N, args.latent_dim, device=device)           # latent z ~ N(0, I)
    p, y, H = common.sample_conditioning(N, n, device)          # p = softmax(v), y = argmax p, H
    with common.autocast(device, args.amp):
        x = G(z, p, H)                                           # x = G(z, p, H)   (N, C, H, W)
        seen = common.augment(x, FLIP, args.view_shift) if args.view_shift else x   # beyond the paper
        phi, acts, bn = common.activations(f.features, seen)    # phi(x), the features of L_cos
        logits = f.head(phi)                                     # f(x); Q = softmax(f(x))
        L_inv, terms = common.inversion_loss(logits, phi, p, y, args.alpha, args.beta, args.gamma, args.cos_pairs)
        loss = L_inv                                             # alpha KL + beta CE + gamma L_cos
        if args.robust_eps > 0:                                  # Sec. 3: perturbed x keeps label y
            loss = loss + common.robust_term(f, seen, y, args.robust_eps)
        if args.stats > 0:                                       # beyond the paper: f's statistics
            loss = loss + args.stats * common.stats_term(acts, stats, y)
        if args.bn_stats > 0:                                    # beyond the paper: DeepInversion's
            loss = loss + args.bn_stats * common.bn_term(bn)
        if args.tv > 0:                                          # beyond the paper: smoothness
            loss = loss + args.tv * common.tv_term(x)
        if args.mode_seeking > 0:                                # beyond the paper: varied rows
            loss = loss + args.mode_seeking * common.mode_seeking_term(x if args.mode_seeking_on == "pixels"
                                                                       else phi, z, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()                                              # f is frozen: gradients reach G only
    opt.step()
    hit = (logits.argmax(1) == y).float().mean()                 # f labels x as y
    return torch.stack([loss, terms["kl"], terms["ce"], terms["cos"], loss - L_inv, hit]).detach().float()
# [end]


# [same in all four scripts: generator loop]
def train_generator(f, stats, args, out, device):
    """G's training loop: Adam on G's weights only, --generator-steps inversion_steps.
    Prints the mean terms every --log-every steps (and every 15 s), saves generator.pt every
    --checkpoint-every steps, at the end and on Ctrl-C; --resume continues from it.  The loss
    terms stay on the device between lines.  Returns (G, the printed history)."""
    torch.manual_seed(args.seed)                                 # the same whether f was cached or not
    G = common.place(build_generator(args), device).train()
    graph = args.cuda_graph and device.type == "cuda"            # --cuda-graph: the step replayed
    opt = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.5, 0.999), capturable=graph)
    path = out / "generator.pt"
    signature = {"dataset": DATASET, "arch": common.architecture(G)}
    step, history = 0, {key: [] for key in ("step",) + common.TERMS}
    if args.resume and path.exists():
        ckpt = common.load_checkpoint(path, "generator", signature)
        G.load_state_dict(ckpt["model"])
        common.load_optimizer(opt, ckpt["optimizer"], graph)         # from any device or mode
        step, history = ckpt["step"], ckpt["history"]
        common.rng_state(device, ckpt["rng"])
        print(f"G: resuming {path} from step {step}")

    def save():
        common.save_checkpoint(path, {"kind": "generator", **signature, "step": step, "model": G.state_dict(),
                                      "optimizer": opt.state_dict(), "history": history,
                                      "rng": common.rng_state(device), "config": vars(args)})
    train_step = lambda: inversion_step(G, f, opt, args, stats, device)                 # noqa: E731
    train_step = common.GraphedStep(train_step) if graph else train_step
    print(f"G: {common.architecture(G)}, {args.generator_steps} steps of batch {args.batch_size}"
          + (" (as a CUDA graph)" if graph else ""))
    sums, since, start, t0 = 0, step, step, time.time()
    last = t0
    try:
        while step < args.generator_steps:
            with common.signals_held():                          # a Ctrl-C waits for the step and its count,
                sums, step = sums + train_step(), step + 1       # so a checkpoint's step matches its weights
            done, due = step == args.generator_steps, time.time() - last > 15
            if due or done or step % args.log_every == 0 or step % args.checkpoint_every == 0:
                mean, sums, since, last = (sums / (step - since)).tolist(), 0, step, time.time()   # one sync
                if not all(map(math.isfinite, mean)):
                    raise common.UserError(f"the loss became {mean[0]} by step {step}; stopped, and the last "
                                           f"good checkpoint {path} is kept; try a smaller --lr")
                for key, value in zip(("step",) + common.TERMS, [step] + mean):
                    history[key].append(value)
                print(f"G step {step}/{args.generator_steps}  L_inv {mean[0] - mean[4]:.4f} (KL {mean[1]:.4f} "
                      f"CE {mean[2]:.4f} cos {mean[3]:.4f})  robust+priors {mean[4]:.4f}  f(x)=y {mean[5]:.3f}  "
                      f"{common.eta(t0, step - start, args.generator_steps - start)}")
                if done or step % args.checkpoint_every == 0:
                    save()
    except KeyboardInterrupt:
        if not torch.is_tensor(sums) or torch.isfinite(sums).all():   # never save after a bad loss
            save()
            print(f"\ninterrupted at step {step}: saved {path}; run again with --resume to continue",
                  file=sys.stderr)
        raise SystemExit(130) from None
    return G, history
# [end]


# ------------------------------------------------------------------------------------------------
# 6. results: Figure 2 and samples.pt
# ------------------------------------------------------------------------------------------------
# [same in all four scripts: results]
@torch.no_grad()
def save_samples(G, args, out, device):
    """samples.pt: --eval-per-class fresh samples per class at --margin, sample j of each class
    from generator j mod K; samples.png (Fig. 2): one row per class (in CLASSES' order), its first
    ten samples (or K, with more generators): column j from generator j mod K.  Returns (x, y)."""
    n, per = len(CLASSES), args.eval_per_class
    y = torch.arange(n, device=device).repeat_interleave(per)                # 0 0 ... 1 1 ... 9
    owner = torch.arange(per, device=device).repeat(n) % len(G)
    x = common.generate(common.sampling_mode(G), y, n, args.margin, owner)
    common.save_checkpoint(out / "samples.pt", {"images": x.float().clamp(0, 1).cpu(), "labels": y.cpu()})
    columns = min(per, max(10, len(G)))
    images = F.interpolate(x.view(n, per, *SHAPE)[:, :columns].flatten(0, 1), scale_factor=2.0)  # 2x, for eyes
    grid = torchvision.utils.make_grid(images, nrow=columns, padding=2, pad_value=1.0)   # (3, H', W')
    page = Image.new("RGB", (grid.shape[2] + 80, grid.shape[1]), "white")           # class names at left
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
    """The whole run.  Returns what metrics.json holds (None when measure.py is not beside this file)."""
    args = parse_args(argv)
    device, out = common.setup(args, dict(quick=QUICK, medium=MEDIUM))
    t = [time.time()]
    data = load_data(args, device)                                           # 2. data
    t.append(time.time())
    f, f_accuracy = trained_classifier(data, args, out, device)              # 3. f, trained, frozen
    stats = common.feature_statistics(f, data["x_train"], data["y_train"], len(CLASSES))   # prior's targets
    t.append(time.time())
    G, history = train_generator(f, stats, args, out, device)               # 4.-5. G against f
    t.append(time.time())
    x, y = save_samples(G, args, out, device)                                # 6. Fig. 2, samples.pt
    seconds = dict(zip(["data", "classifier", "generator"], [b - a for a, b in zip(t, t[1:])]))
    try:
        import measure
    except ImportError:
        print(f"wrote {out}/: classifier.pt, generator.pt, samples.pt, samples.png "
              f"(measure.py is not beside this script: measurement skipped)")
        return None
    return measure.report(dict(dataset=DATASET, classes=CLASSES, flip=FLIP), out, args, data, f, f_accuracy,
                          G, x, y, history, seconds, t[0])


def main(argv=None):
    return common.run_main(run, argv, Path(__file__).name)


if __name__ == "__main__":
    main()
# [end]
