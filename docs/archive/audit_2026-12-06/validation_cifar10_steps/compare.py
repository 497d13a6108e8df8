"""Mean (lowest-highest) over seeds of the cue measures, 400 against 1600 steps, validation split."""
import json, statistics
import os
O = os.path.dirname(os.path.abspath(__file__)) + "/"   # the metrics JSONs beside this file
def get(k, s):
    P = json.load(open(f"{O}p{k}_{s}.json"))["cue"]; C = json.load(open(f"{O}c{k}_{s}.json"))["cue"]
    mk = P["masks"]; med = statistics.median(mk["area"])
    return {"function planted": P["function"]["recovered"], "function clean": C["function"]["recovered"],
            "IoU (mean sample)": P["localisation"]["iou"], "mask area C": mk["area"][0], "classes' median": med,
            "mask index C": mk["anomaly"]["index"][0], "flagged alone": float(mk["anomaly"]["flagged"] == [0]),
            "clean masks flag none": float(C["masks"]["anomaly"]["flagged"] == []),
            "near box": mk["near_box"][0], "in box": mk["in_box"][0], "mask IoU": mk["iou"],
            "trigger planted": mk["trigger_function"], "trigger on clean f": C["planted_trigger_function"]}
import sys
seeds = [int(s) for s in sys.argv[1:]] or [0, 1, 2]
for key in get(400, 0):
    out = []
    for k in (400, 1600):
        v = [get(k, s)[key] for s in seeds]
        out.append(f"{statistics.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})")
    lo4, hi4 = [float(x) for x in out[0].split("(")[1].rstrip(")").split("-")]
    lo16, hi16 = [float(x) for x in out[1].split("(")[1].rstrip(")").split("-")]
    beyond = "yes" if hi16 < lo4 or hi4 < lo16 else "no"
    print(f"| {key} | {out[0]} | {out[1]} | {beyond} |")
