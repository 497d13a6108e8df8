"""A check on the archived metrics, not a measure of measure.py: which rows' presence is more than
the threshold's calibration rate q (1% of clean test images pass) explains?  One-sided binomial
test of a row's hits among its samples, Bonferroni over the classes (p < 0.05 / n), beside the
MAD index's flags.  python docs/archive/audit_2026-12-06/binomial_flags.py (from the repo root)."""
import glob
import json
import os

from scipy.stats import binom

here = os.path.dirname(os.path.abspath(__file__))
files = sorted(glob.glob(f"{here}/*.json")) + sorted(
    glob.glob(f"{here}/../audit_2026-12-05/what_f_answers/*.json"))
for path in files:
    m = json.load(open(path))
    c = m["cue"]
    n, q, k = m["config"]["eval_per_class"], c["calibration_quantile"], len(c["presence"])
    kept = [y for y, p in enumerate(c["presence"]) if binom.sf(round(p * n) - 1, n, q) < 0.05 / k]
    print(f"{os.path.basename(path):34s} C={c['cue']['target']}  MAD index flags "
          f"{str(c['anomaly']['flagged']):14s} binomial {kept}")
