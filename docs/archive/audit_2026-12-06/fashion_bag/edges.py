"""Issue 38: the share of each class's clean Fashion-MNIST test images with ink (> 0.3) in both
side-edge bands (columns 0-2 and 25-27) of rows 0-7 and of rows 2-15.  From the repository root:
python docs/archive/audit_2026-12-06/fashion_bag/edges.py (needs data/)."""
import sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
import fashion_inversion as s  # noqa: E402

d = s.load_data(s.parse_args(["--quick", "--data-dir", "data"]), torch.device("cpu"))
x, y = d["x_test"], d["y_test"]
for r0, r1 in [(0, 8), (2, 16)]:
    both = (x[:, 0, r0:r1, 0:3].amax((1, 2)) > 0.3) & (x[:, 0, r0:r1, 25:28].amax((1, 2)) > 0.3)
    print(f"rows {r0}-{r1 - 1}:", " ".join(f"{s.CLASSES[c][:7]} {both[y == c].float().mean():.2f}"
                                       for c in range(10)))
