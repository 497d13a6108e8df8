#!/usr/bin/env bash
# One prepared run on a lent GPU machine: default-length runs, the benchmark, and a sweep of
# inversion variants on the real Fashion-MNIST.  Expects the Fashion-MNIST .gz files in
# gpu_data/FashionMNIST/raw (git-ignored; carried along).  Writes logs and a table to $OUT.
# Usage: bash tools/gpu_check.sh [seconds budget for the sweep]
#        MODE=defaults bash tools/gpu_check.sh     (default runs of all four scripts only)
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
budget=${1:-300}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
summ() {  # name dir
  python3 - "$1" "$2" <<'PY' | tee -a "$OUT/table.txt"
import json, sys
try:
    m = json.load(open(sys.argv[2] + "/metrics.json"))
except Exception as e:
    print(f"{sys.argv[1]:<16} failed: {e}"); sys.exit()
i, s, nat = m["inversion"], m["seconds"], m["inversion_by_margin"]["natural"]
print(f"{sys.argv[1]:<16} f {m['classifier']['test_accuracy']:.4f} judge_test {m['judge']['test_accuracy']:.4f} "
      f"tgt {i['target_accuracy']:.3f} judge {i['judge_accuracy']:.3f} div {i['diversity_ratio']:.3f} "
      f"(natural margin: tgt {nat['target_accuracy']:.3f} judge {nat['judge_accuracy']:.3f} div {nat['diversity_ratio']:.3f}) "
      f"fd {i['frechet_distance']:.2f}/{i['frechet_distance_real']:.2f} nn {i['nn_distance']:.2f} "
      f"sec data {s['data']:.1f} clf {s['classifier']:.1f} judge {s['judge']:.1f} gen {s['generator']:.1f} total {s['total']:.1f}")
PY
}
# 1. the default Fashion-MNIST run, end to end, timed
/usr/bin/time -f "%e s wall" python3 fashion_inversion.py --data-dir gpu_data --out-dir runs/fashion \
  > "$OUT/fashion_default.log" 2>&1; tail -3 "$OUT/fashion_default.log"; summ default runs/fashion
[ "${MODE:-all}" = "defaults" ] && {
  # 2'. full default runs of the other scripts on fake data of the real size (timing only)
  for spec in "cifar10_inversion CIFAR10 50000" "svhn_inversion SVHN 73257" "mnist_inversion MNIST 60000"; do
    set -- $spec
    /usr/bin/time -f "%e s wall" python3 $1.py --fake-data --fake-size $3 --out-dir runs/$2 > "$OUT/$2.log" 2>&1
    tail -1 "$OUT/$2.log"; summ "$2-fake" runs/$2
  done
  for f in samples.png nearest.png intensity.png metrics.json; do cp runs/fashion/$f "$OUT/fashion_$f"; done
  echo; echo "== table"; cat "$OUT/table.txt"; exit 0; }
# 2. the benchmark
timeout 100 python3 benchmark.py --device cuda > "$OUT/benchmark.log" 2>&1; tail -12 "$OUT/benchmark.log"
# 3. sweep: generator variants on the cached default classifier
start=$(date +%s)
run() {  # name flags...
  local name=$1; shift
  [ $(( $(date +%s) - start )) -lt "$budget" ] || { echo "$name skipped (budget)" | tee -a "$OUT/table.txt"; return; }
  mkdir -p runs/sw_$name; cp runs/fashion/classifier.pt runs/fashion/judge.pt runs/sw_$name/ 2>/dev/null
  timeout 150 python3 fashion_inversion.py --data-dir gpu_data --out-dir runs/sw_$name "$@" > "$OUT/sw_$name.log" 2>&1
  summ "$name" runs/sw_$name
}
run paper --beta 1 --robust-eps 0 --stats 0
run resize --upsample resize
run stats_all --stats-by all
run gamma0 --gamma 0
run alpha0 --alpha 0
run steps6000 --generator-steps 6000
run adv01 --retrain --classifier-adv-eps 0.1
for n in paper stats_all adv01; do cp runs/sw_$n/samples.png "$OUT/${n}_samples.png" 2>/dev/null; done
echo; echo "== table"; cat "$OUT/table.txt"
