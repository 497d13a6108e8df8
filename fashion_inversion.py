"""Network inversion of a Fashion-MNIST CNN, after Suhail and Sethi, "Network Inversion of
Convolutional Neural Nets" (read it beside this file).

    python fashion_inversion.py                 # full run (sized for a GPU)
    python fashion_inversion.py --quick         # a few minutes on a laptop CPU
    python fashion_inversion.py --fake-data --dry-run --device cpu    # smoke test, no data

Where the paper is implemented (sections of this file, top to bottom):
    1. config                     the flags (the same in all four scripts), this dataset's defaults
    2. data                       Fashion-MNIST as whole tensors on the device
    3. classifier f   (Sec. 2)    "convolution and fully connected layers ... Leaky-ReLU ...
                                  Dropout"; trained, tested, frozen; phi = its last hidden layer
    4. generator G    (Sec. 2)    G(z, p, H): Linear(p) ++ z -> n x n -> ++ H -> image
                                  (common.Generator)
    5. inversion      (Sec. 2, 3) p = softmax(v), y = argmax p, H (common.sample_conditioning);
                                  L_inv = alpha KL(P||Q) + beta CE + gamma L_cos
                                  (common.inversion_loss); robust term of Sec. 3 (--robust-eps);
                                  beyond the paper, marked as such: a feature-statistics
                                  prior (--stats, on by default) and total variation (--tv, on
                                  by default for this dataset, not with --quick)
    6. results        (Fig. 2)    samples.png: one row per class, drawn at the arg-max margin
                                  --margin (Sec. 2 "intensity"); metrics.json, samples.pt, ...

Only G is trained in step 5; f's weights are frozen and receive no gradient.
"""
import sys

import torch
import torch.nn as nn

import common

# ---------------------------------------------------------------------------------------------
# 1. config
# ---------------------------------------------------------------------------------------------
DATASET = "FashionMNIST"
SHAPE = (1, 28, 28)                                              # (C, H, W)
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FLIP = True                                                      # clothes may be mirrored
DEFAULTS = dict(common.DEFAULTS, tv=5.0)    # total variation: no stripes at full length
QUICK = dict(common.QUICK, tv=0.0)          # (in 600 short steps it costs diversity; README)
# (common.DEFAULTS: alpha, beta, gamma, steps, ...; QUICK: the --quick laptop preset)


def parse_args(argv=None):
    ap = common.build_parser(DATASET, " ".join(__doc__.split("\n\n")[0].split()), DEFAULTS, QUICK)
    return common.finish_args(ap, argv, QUICK)


# ---------------------------------------------------------------------------------------------
# 2. data
# ---------------------------------------------------------------------------------------------
def load_data(args, device):
    """{"x_train", "y_train", "x_test", "y_test"}: x (N, 1, 28, 28) in [0, 1], y (N,)."""
    return common.load_data(DATASET, SHAPE, args, device)


# ---------------------------------------------------------------------------------------------
# 3. classifier f (Section 2): convolutions + fully connected, LeakyReLU, Dropout
# ---------------------------------------------------------------------------------------------
class Classifier(nn.Module):
    def __init__(self, n_classes=10, width=32, hidden=256):
        super().__init__()
        c = width
        self.features = nn.Sequential(                           # phi(x): the features of L_cos
            nn.Conv2d(1, c, 3, padding=1), nn.LeakyReLU(0.1),
            nn.MaxPool2d(2),                                     # (c, 14, 14)
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.LeakyReLU(0.1),
            nn.MaxPool2d(2), nn.Dropout(0.25),                   # (2c, 7, 7)
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, hidden), nn.LeakyReLU(0.1),
            nn.Dropout(0.5))                                     # (hidden,)
        self.head = nn.Linear(hidden, n_classes)                 # logits f(x)

    def forward(self, x):                                        # x (N, 1, 28, 28)
        return self.head(self.features(x))                      # (N, n)


# ---------------------------------------------------------------------------------------------
# 4. generator G(z, p, H) (Section 2)
# ---------------------------------------------------------------------------------------------
def build_generator(args):
    return common.Generator(channels=SHAPE[0], image_size=SHAPE[1], n_classes=len(CLASSES),
                            latent_dim=args.latent_dim, hidden=args.hidden, width=args.width,
                            dropout=args.dropout, upsample=args.upsample,
                            conditioning=args.conditioning)


# ---------------------------------------------------------------------------------------------
# 5. inversion: one training step of G against the frozen f
# ---------------------------------------------------------------------------------------------
def inversion_step(G, f, opt, args, device):
    N, n = args.batch_size, len(CLASSES)
    z = torch.randn(N, args.latent_dim, device=device)           # latent z ~ N(0, I)
    p, y, H = common.sample_conditioning(N, n, device)          # p = softmax(v), y = argmax p, H
    with common.autocast(device, args.amp):
        x = G(z, p, H)                                           # x = G(z, p, H)  (N, 1, 28, 28)
        phi, acts = common.activations(f.features, x)           # phi(x), features for L_cos
        logits = f.head(phi)                                     # f(x); Q = softmax(f(x))
        L_inv, terms = common.inversion_loss(logits, phi, p, y, args.alpha, args.beta, args.gamma)
        loss = L_inv                                             # alpha KL + beta CE + gamma L_cos
        if args.robust_eps > 0:                                  # Sec. 3: perturbed x keeps y
            loss = loss + args.robust_weight * common.robust_term(f, x, y, args.robust_eps)
        if args.stats > 0:                                       # beyond the paper: data statistics
            loss = loss + args.stats * common.stats_term(acts, f.stats, y)
        if args.tv > 0:                                          # beyond the paper: smoothness
            loss = loss + args.tv * common.tv_term(x)
    opt.zero_grad(set_to_none=True)
    loss.backward()                                              # gradients reach G only
    opt.step()
    return loss, {**terms, "extra": (loss - L_inv).detach()}


# ---------------------------------------------------------------------------------------------
# 6. results, and main: the sections above, in the paper's order (common.run_experiment):
#    load_data -> Classifier trained and frozen (and the judge, for measuring only) ->
#    build_generator trained with inversion_step against the frozen f -> samples, figures, metrics
# ---------------------------------------------------------------------------------------------
def run(argv=None):
    return common.run_experiment(sys.modules[__name__], argv)


def main(argv=None):
    return common.run_main(run, argv, "fashion_inversion.py")


if __name__ == "__main__":
    main()
