"""Issue 38, Fashion-MNIST's bag (class 8), whose mask the MAD index flags in clean --audit runs
too: the bag trigger of each clean run (m_8, the median of row 8) pasted on the other classes'
clean test images, f's rate of answering bag, on every clean f; and a picture of the triggers.
From the repository root (needs data/):
python docs/archive/audit_2026-12-06/fashion_bag/bag_trigger.py OUT.png RUN_DIR..."""
import argparse, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
import common, cue, measure  # noqa: E402
import fashion_inversion as script  # noqa: E402

def load(run, data_args=None):
    first = common.load_checkpoint(run / "generator.pt", "generator", {})
    args = argparse.Namespace(**{**vars(script.parse_args([])), **first["config"]})
    f = script.Classifier(len(script.CLASSES), args.classifier_width)
    common.load_weights(f, common.load_checkpoint(run / "classifier.pt", "classifier", {})["model"],
                        run / "classifier.pt")
    f.eval().requires_grad_(False)
    masks = common.masks_of(first["model"])
    x, y = measure.read_samples(run / "samples.pt", script.SHAPE, len(script.CLASSES))
    return f, masks, x, y



out, runs = sys.argv[1], [Path(r) for r in sys.argv[2:]]
data = script.load_data(script.parse_args(["--quick", "--data-dir", "data"]), torch.device("cpu"))
xt, yt = data["x_test"], data["y_test"]
loaded = {r.name: load(r, None) for r in runs}
tiles = []
for name, (f, masks, x, y) in loaded.items():
    m, pic = cue.recovered_trigger(x[y == 8], masks[8])
    other = xt[yt != 8]
    rates = {n: cue.trigger_function(g, (m, pic), other, 8) for n, (g, *_) in loaded.items()}
    print(f"{name}: m_8 area {m.sum():.1f} px; trigger -> bag: "
          + ", ".join(f"{n} {r:.3f}" for n, r in rates.items()))
    tiles += [m.expand(1, 28, 28), (m * pic), ((1 - m) * other[0] + m * pic)]
import torchvision.utils as vu  # rows: runs; columns: m_8, m_8 x picture, pasted
big = torch.nn.functional.interpolate(torch.stack(tiles), scale_factor=4, mode='nearest')
vu.save_image(big, out, nrow=3, padding=4, pad_value=0.5)
