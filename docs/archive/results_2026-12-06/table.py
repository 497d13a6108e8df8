"""The README's "What the additions buy" table from three seeds: mean (lowest-highest).
    python docs/archive/results_2026-12-06/table.py   (reads the metrics beside it)"""
import json, statistics, sys
from pathlib import Path
HERE = Path(__file__).parent
NAMES = {"fashion": "Fashion-MNIST", "cifar10": "CIFAR-10"}
MODES = [("paper", "`--paper`", "f"), ("data-free", "`--data-free`", "f"),
         ("defaults", "defaults", "f and the training images")]
KEYS = ["target_accuracy", "judge_accuracy", "recall", "precision", "coverage", "density"]
seeds = [int(s) for s in sys.argv[1:]] or [0, 1, 2]
def cell(vs, real=None):
    m, lo, hi = statistics.fmean(vs), min(vs), max(vs)
    t = f"{m:.3f} ({lo:.3f}-{hi:.3f})" if len(vs) > 1 else f"{m:.3f}"
    return t + (f" [{statistics.fmean(real):.3f}]" if real else "")
for d in NAMES:
    for mode, label, learns in MODES:
        ms = [json.load(open(HERE / f"{d}_s{s}_{mode}.json")) for s in seeds]
        inv = [m["inversion"] for m in ms]
        cells = []
        for k in KEYS:
            real = [i[k + "_real"] for i in inv] if k + "_real" in inv[0] else None
            cells.append(cell([i[k] for i in inv], real))
        g = [m["distillation"]["from_generator"] for m in ms]
        r = [m["distillation"]["from_training_images"] for m in ms]
        fs = [m["classifier"]["test_accuracy"] for m in ms]
        print(f"| {NAMES[d]} {label} | {learns} | " + " | ".join(cells)
              + f" | {cell(g)} / {statistics.fmean(r):.3f} |  f {min(fs):.3f}-{max(fs):.3f}")
