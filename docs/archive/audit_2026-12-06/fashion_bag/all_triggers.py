"""Issue 38, Fashion-MNIST's bag: every class's recovered trigger (m_y, the median of row y's
samples) of the --quick --audit runs of 2026-12-06 (seeds 0-2, planted f and clean f), pasted on
the clean test images of the other classes, on the run's own f and on the other runs' clean fs.
From the repository root (needs data/; one thread):
python docs/archive/audit_2026-12-06/fashion_bag/all_triggers.py RUN_DIR..."""
import argparse, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
import common, cue, measure  # noqa: E402
import fashion_inversion as script  # noqa: E402


def load(run, data_args):
    first = common.load_checkpoint(run / "generator.pt", "generator", {})
    args = argparse.Namespace(**{**vars(script.parse_args([])), **first["config"]})
    f = script.Classifier(len(script.CLASSES), args.classifier_width)
    common.load_weights(f, common.load_checkpoint(run / "classifier.pt", "classifier", {})["model"],
                        run / "classifier.pt")
    f.eval().requires_grad_(False)
    masks = common.masks_of(first["model"])
    x, y = measure.read_samples(run / "samples.pt", script.SHAPE, len(script.CLASSES))
    return f, masks, x, y


runs = [Path(r) for r in sys.argv[1:]]
args = script.parse_args(["--quick", "--data-dir", "data"])
data = script.load_data(args, torch.device("cpu"))
xt, yt = data["x_test"], data["y_test"]
loaded = {r.name: load(r, args) for r in runs}
fs = {name: v[0] for name, v in loaded.items()}
for name, (f, masks, x, y) in loaded.items():
    area = masks.float().flatten(1).sum(1)
    print(f"{name}: mask area per class {[round(a) for a in area.tolist()]}")
    for c in range(len(script.CLASSES)):
        trig = cue.recovered_trigger(x[y == c], masks[c])
        other = xt[yt != c]
        base = cue.rate(cue.predictions(f, other) == c)
        rates = {n: cue.trigger_function(g, trig, other, c) for n, g in fs.items()}
        print(f"  class {c} ({script.CLASSES[c]}): area {area[c]:.1f}, clean images to {c}: "
              f"{base:.3f}; trigger -> {c}: " + ", ".join(f"{n} {r:.3f}" for n, r in rates.items()))
