"""How large is a Fréchet distance in the judge's features?  For one finished run: its samples
(samples.pt) and a ladder of stand-ins made from real training images, each scored against the
real test images with the run's own judge, as metrics.json's frechet_distance is; the same per
class (with the part due to the feature means alone, "(means)"); and a figure,
frechet_scale.png in the run's folder, of what each stand-in looks like.

    python tools/frechet_scale.py runs/FashionMNIST --data-dir data
    python tools/frechet_scale.py runs/CIFAR10 --script cifar10_inversion --data-dir data

The stand-ins: training images drawn per class as many as there are samples (the floor at this
sample size), the same with Gaussian pixel noise or a Gaussian blur, a per-class Gaussian model
of the pixels (mean and covariance of each class's training images, sampled), and each class's
mean image.  measure.frechet_references computes the first few in every run.
"""
import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
import measure  # noqa: E402


def pixel_gaussian(x, y, labels, n):
    """Per class: draw as many images as labels asks for from N(mean, covariance) of that
    class's training pixels, clipped to [0, 1]."""
    out = torch.empty(len(labels), *x.shape[1:])
    for c in range(n):
        xc = x[y == c].flatten(1).double()
        cov = torch.cov(xc.T) + 1e-4 * torch.eye(xc.shape[1], dtype=torch.double)
        model = torch.distributions.MultivariateNormal(xc.mean(0), covariance_matrix=cov)
        out[labels == c] = model.sample((int((labels == c).sum()),)).float().view(-1, *x.shape[1:])
    return out.clamp(0, 1)


def stand_ins(data, labels, n):
    """measure.stand_in_images (more noise levels), blurred images and the pixel model; every
    set in the order of labels."""
    import torchvision.transforms.functional as TF
    shared = measure.stand_in_images(data, labels, n, noise=(0.02, 0.05, 0.1))
    real = shared["training_images"]
    return {"training images": real,
            **{f"  + noise {s:g}": shared[f"training_images_noise_{s:g}"]
               for s in (0.02, 0.05, 0.1)},
            "  blurred, sigma 0.5 px": TF.gaussian_blur(real, 5, 0.5),
            "  blurred, sigma 1 px": TF.gaussian_blur(real, 5, 1.0),
            "per-class Gaussian pixel model": pixel_gaussian(data["x_train"], data["y_train"],
                                                             labels, n),
            "class mean images": shared["class_mean_images"]}


def run(argv=None):
    ap = common.argument_parser(__doc__)
    ap.add_argument("run_dir", help="a finished run's --out-dir (samples.pt, judge.pt)")
    ap.add_argument("--script", default="fashion_inversion",
                    choices=["mnist_inversion", "fashion_inversion", "svhn_inversion",
                             "cifar10_inversion"],
                    help="the script that made the run")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--fake-data", action="store_true", help="the run was made with --fake-data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    script = importlib.import_module(args.script)
    run_dir = Path(args.run_dir)
    for name in ("samples.pt", "judge.pt"):
        if not (run_dir / name).is_file():
            raise common.UserError(f"{run_dir / name} not found: "
                                   "give the --out-dir of a finished run")
    torch.manual_seed(args.seed)
    data = script.load_data(script.parse_args(["--data-dir", args.data_dir, "--device", "cpu"]
                                              + ["--fake-data"] * args.fake_data),
                            torch.device("cpu"))
    n = len(script.CLASSES)
    judge = measure.Judge(script.SHAPE[0], n)
    ckpt = common.load_checkpoint(run_dir / "judge.pt", "judge", {"dataset": script.DATASET})
    common.load_weights(judge, ckpt["model"], run_dir / "judge.pt")
    judge.eval()
    x, labels = measure.read_samples(run_dir / "samples.pt", script.SHAPE, n)
    real_feats = measure.features_of(judge, data["x_test"])
    rows = {"samples (samples.pt)": x, **stand_ins(data, labels, n)}
    feats = {name: measure.features_of(judge, images) for name, images in rows.items()}
    dist = {name: measure.frechet_distance(phi, real_feats) for name, phi in feats.items()}
    print(f"{'images, scored against the test set':<36} {'Frechet':>9} {'/ training images':>18}")
    for name, d in dist.items():
        print(f"{name:<36} {d:9.3f} {d / dist['training images']:18.1f}")
    print(f"\nper class, against that class's test images: {'samples':>8} {'(means)':>8} "
          f"{'training':>9}")
    for c, name in enumerate(script.CLASSES):
        fake, real = feats["samples (samples.pt)"][labels == c], real_feats[data["y_test"] == c]
        own = feats["training images"][labels == c]
        means = (fake.double().mean(0) - real.double().mean(0)).square().sum().item()
        print(f"  {name:<42} {measure.frechet_distance(fake, real):8.2f} {means:8.2f} "
              f"{measure.frechet_distance(own, real):9.2f}")
    print(f"pixels above 0.9: samples {(x > 0.9).float().mean():.1%}, test images "
          f"{(data['x_test'] > 0.9).float().mean():.1%}; "
          f"mean pixel {x.mean():.3f} and {data['x_test'].mean():.3f}")
    # one image per class
    firsts = torch.stack([torch.nonzero(labels == c)[0, 0] for c in range(n)])
    measure.image_grid(run_dir / "frechet_scale.png", [v[firsts] for v in rows.values()],
                             [k.strip() for k in rows], list(script.CLASSES),
                             "samples and the Frechet distance's stand-ins, one column per class")
    print(f"wrote {run_dir / 'frechet_scale.png'}")
    return dist


if __name__ == "__main__":
    common.run_main(run, None, "tools/frechet_scale.py")
