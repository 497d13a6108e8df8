"""Network inversion of an SVHN CNN, after Suhail and Sethi, "Network Inversion of
Convolutional Neural Nets" (read it beside this file).

    python svhn_inversion.py                 # full run (sized for a GPU)
    python svhn_inversion.py --quick         # a few minutes on a laptop CPU
    python svhn_inversion.py --fake-data --dry-run --device cpu    # smoke test, no data

Where the paper is implemented (sections of this file, top to bottom):
    1. config                     the flags (the same in all four scripts), this dataset's defaults
    2. data                       SVHN (train and test; not "extra") as whole tensors on the device
    3. classifier f   (Sec. 2)    "convolution and fully connected layers ... Leaky-ReLU ...
                                  Dropout"; trained, tested, frozen; phi = its last hidden layer
    4. generator G    (Sec. 2)    G(z, p, H): Linear(p) ++ z -> n x n -> ++ H -> image
                                  (common.Generator)
    5. inversion      (Sec. 2, 3) p = softmax(v), y = argmax p, H (common.sample_conditioning);
                                  L_inv = alpha KL(P||Q) + beta CE + gamma L_cos
                                  (common.inversion_loss); robust term of Sec. 3 (--robust-eps);
                                  beyond the paper, marked as such: a feature-statistics
                                  prior (--stats, on by default) and total variation (--tv)
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
DATASET = "SVHN"
SHAPE = (3, 32, 32)                                              # (C, H, W)
CLASSES = [str(d) for d in range(10)]                            # house-number digits
FLIP = False                                                     # a mirrored digit is another shape
DEFAULTS = dict(common.DEFAULTS, classifier_batch_size=512)
QUICK = dict(common.QUICK, train_subset=20000)
# (common.DEFAULTS: alpha, beta, gamma, steps, ...; QUICK: the --quick laptop preset)


def parse_args(argv=None):
    ap = common.build_parser(DATASET, " ".join(__doc__.split("\n\n")[0].split()), DEFAULTS, QUICK)
    return common.finish_args(ap, argv, QUICK)


# ---------------------------------------------------------------------------------------------
# 2. data
# ---------------------------------------------------------------------------------------------
def load_data(args, device):
    """{"x_train", "y_train", "x_test", "y_test"}: x (N, 3, 32, 32) in [0, 1], y (N,)."""
    return common.load_data(DATASET, SHAPE, args, device)


# ---------------------------------------------------------------------------------------------
# 3. classifier f (Section 2): convolutions + fully connected, LeakyReLU, Dropout;
#    batch norm added (ours) so that a short run reaches a useful accuracy on colour images
# ---------------------------------------------------------------------------------------------
class Classifier(nn.Module):
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
        x = G(z, p, H)                                           # x = G(z, p, H)  (N, 3, 32, 32)
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
    return common.run_main(run, argv, "svhn_inversion.py")


if __name__ == "__main__":
    main()
