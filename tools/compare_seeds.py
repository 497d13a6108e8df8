"""A choice between recipes, each run with several seeds: per measure, each recipe's mean and
spread (lowest to highest seed), and whether the difference from the first recipe exceeds the
spread (every seed of one recipe above every seed of the other).  Reads metrics.json only.

    python tools/compare_seeds.py "base=runs/a0,runs/a1,runs/a2" "lever=runs/b0,runs/b1,runs/b2"

A recipe is NAME=RUN,RUN,...; the first is the baseline.  Runs scored on different splits (test
and --validation) are refused: a lever is chosen on the validation split, and the chosen defaults
are reported on the test set once.  Plumbing, not the method.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

# (row name, path into metrics.json); a path through "C" reads the planted cue's class
MEASURES = [
    ("f accuracy", ("classifier", "test_accuracy")),
    ("target (f on samples)", ("inversion", "target_accuracy")),
    ("judge on samples", ("inversion", "judge_accuracy")),
    ("recall", ("inversion", "recall")),
    ("precision", ("inversion", "precision")),
    ("coverage", ("inversion", "coverage")),
    ("density", ("inversion", "density")),
    ("Frechet", ("inversion", "frechet_distance")),
    ("2nd judge on samples", ("inversion", "second_judge", "judge_accuracy")),
    ("2nd judge recall", ("inversion", "second_judge", "recall")),
    ("2nd judge precision", ("inversion", "second_judge", "precision")),
    ("2nd judge coverage", ("inversion", "second_judge", "coverage")),
    ("2nd judge density", ("inversion", "second_judge", "density")),
    ("distillation: student on G", ("distillation", "from_generator")),
    ("distillation: student on real", ("distillation", "from_training_images")),
    ("cue: attack success", ("cue", "attack_success", "others_called_target_stamped")),
    ("cue: presence, row C", ("cue", "presence", "C")),
    ("cue: anomaly index, C", ("cue", "anomaly", "index", "C")),
    ("cue: function", ("cue", "function", "recovered")),
    ("cue: IoU", ("cue", "localisation", "iou")),
    ("cue: mask area, C", ("cue", "masks", "area", "C")),
    ("cue: mask anomaly, C", ("cue", "masks", "anomaly", "index", "C")),
    ("cue: mask in box, C", ("cue", "masks", "in_box", "C")),
    ("cue: mask near the box, C", ("cue", "masks", "near_box", "C")),
    ("cue: mask IoU", ("cue", "masks", "iou")),
]


def read(metrics, path):
    """The value at path in metrics (None where absent); "C" stands for the cue's class."""
    v = metrics
    for key in path:
        if key == "C":
            key = metrics["cue"]["cue"]["target"]
        try:
            v = v[key]
        except (KeyError, IndexError, TypeError):
            return None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def recipe(text):
    """NAME=RUN,RUN,... -> (name, [metrics dicts])."""
    name, sep, runs = text.partition("=")
    if not sep or not name or not runs:
        raise common.UserError(f"{text!r}: give a recipe as NAME=RUN_DIR,RUN_DIR,...")
    loaded = []
    for run in runs.split(","):
        if not run:
            raise common.UserError(f"{text!r}: an empty run folder between commas")
        path = Path(run) / "metrics.json"
        if not path.is_file():
            raise common.UserError(f"{path} not found: give finished runs' --out-dir")
        with common.reading(path, "metrics file", "score the run again with measure.py"):
            loaded.append(json.loads(path.read_text()))
    return name, loaded


def compare(recipes):
    """Rows (measure, [(mean, low, high) per recipe], [exceeds per recipe after the first])."""
    rows = []
    for label, path in MEASURES:
        values = [[read(m, path) for m in runs] for _, runs in recipes]
        if any(v is None for vs in values for v in vs):
            continue                                      # a measure not in every run
        stats = [(statistics.fmean(vs), min(vs), max(vs)) for vs in values]
        base = stats[0]
        exceeds = [s[1] > base[2] or s[2] < base[1] for s in stats[1:]]
        rows.append((label, stats, exceeds))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipes", nargs="+", help="NAME=RUN_DIR,RUN_DIR,... (the first: baseline)")
    cli = ap.parse_args(argv)
    recipes = [recipe(text) for text in cli.recipes]
    splits = {m.get("split", "test") for _, runs in recipes for m in runs}
    if len(splits) > 1:
        raise common.UserError("these runs mix the test and the validation split: compare runs "
                               "scored on one")
    datasets = sorted({str(m.get("dataset")) for _, runs in recipes for m in runs})
    if len(datasets) > 1:
        raise common.UserError(f"these runs are of several datasets ({', '.join(datasets)}): "
                               f"compare runs of one")
    names = [name for name, _ in recipes]
    few = min(len(r) for _, r in recipes) < 3
    print(f"split: {splits.pop()}; seeds per recipe: "
          + ", ".join(f"{n} {len(r)}" for n, r in recipes)
          + ("  (fewer than three: a choice cannot rest on this)" if few else ""))
    print("| measure | " + " | ".join(names) + " | " +
          " | ".join(f"{n} vs {names[0]}: beyond the spread?" for n in names[1:]) + " |")
    print("|---" * (2 * len(names)) + "|")
    for label, stats, exceeds in compare(recipes):
        cells = [f"{mean:.3f} ({low:.3f}-{high:.3f})" for mean, low, high in stats]
        print(f"| {label} | " + " | ".join(cells) + " | " +
              " | ".join("yes" if e else "no" for e in exceeds) + " |")


if __name__ == "__main__":
    common.run_main(main, None, "tools/compare_seeds.py")
