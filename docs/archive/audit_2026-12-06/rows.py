"""python rows.py "LABEL=PLANTED:CONTROL" ... (run folders or metrics JSONs).
Markdown rows: dataset/seed | f (clean f) | attack | presence C (clean) | function planted / clean |
IoU | masks flagged planted; clean | mask IoU | trigger planted / on clean f."""
import json, sys
def m(path):  # a run folder, or its metrics.json copied here
    return json.load(open(path if path.endswith(".json") else path + "/metrics.json"))
def pct(x): return f"{100 * x:.1f}%"
for arg in sys.argv[1:]:
    label, p, c = arg.split("=")[0], *arg.split("=")[1].split(":")
    P, C = m(p), m(c)
    cp, cc = P["cue"], C["cue"]
    t = cp["cue"]["target"]
    a = cp["attack_success"]
    att = (f"{a['others_called_target_stamped']:.3f}" if a["mode"] == "backdoor" else
           f"{a['target_accuracy_stamped']:.3f} / {a['target_accuracy_clean']:.3f}")
    mk, mkc = cp["masks"], cc["masks"]
    fl = lambda v: "[" + ", ".join(map(str, v)) + "]" if v else "none"
    print(f"| {label} | {P['classifier']['test_accuracy']:.3f} ({C['classifier']['test_accuracy']:.3f}) "
          f"| {att} | {cp['presence'][t]:.2f} ({cc['presence'][t]:.2f}) "
          f"| {pct(cp['function']['recovered'])} / {pct(cc['function']['recovered'])} "
          f"| {cp['localisation']['iou']:.2f} | {fl(cp['anomaly']['flagged'])}; {fl(cc['anomaly']['flagged'])} "
          f"| {mk['area'][t]:.1f}, {fl(mk['anomaly']['flagged'])}; {fl(mkc['anomaly']['flagged'])} "
          f"| {mk['iou']:.2f} | {pct(mk['trigger_function'])} / {pct(cc['planted_trigger_function'])} |")
