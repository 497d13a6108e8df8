#!/usr/bin/env bash
# The one prepared run for a lent GPU machine, in order of importance, each stage skipped when the
# time budget (seconds, first argument; default 480) would run out: the CUDA tests, the default
# (full-length) runs of Fashion-MNIST, MNIST and CIFAR-10 on real data, the benchmark, then more
# seeds.  Expects gpu_data/ (git-ignored; carry it) holding ../shared/data's make_data.py,
# cifar10_jpeg.pt.xz and mnist/*.gz, and Debian's Fashion-MNIST .gz files in gpu_data/fashion/
# (docs/contributing.md).  Everything lands in $OUT: table.txt, each run's samples.png, and
# all.tgz (every log, metrics.json and figure).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT" runs/logs
budget=${1:-480}; t0=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t0) )); }
stage() {  # name max_seconds command... : run it with a timeout, or skip it when time is short
  local name=$1 max=$2; shift 2
  local l=$(left); [ "$l" -gt 20 ] || { echo "$name: skipped (budget)" | tee -a "$OUT/table.txt"; return 1; }
  [ "$max" -lt "$l" ] || max=$l
  local s=$(date +%s)
  timeout "$max" "$@" > "runs/logs/$name.log" 2>&1; local rc=$?
  echo "$name: rc $rc, $(( $(date +%s) - s )) s wall" | tee -a "$OUT/table.txt"
}
summ() {  # name dir
  python3 - "$1" "$2" <<'PY' | tee -a "$OUT/table.txt"
import json, sys
try:
    m = json.load(open(sys.argv[2] + "/metrics.json"))
except Exception as e:
    print(f"  {sys.argv[1]}: no metrics ({e})"); sys.exit()
i, s, nat, d = m["inversion"], m["seconds"], m["inversion_by_margin"]["natural"], m["distillation"]
print(f"  {sys.argv[1]}: f {m['classifier']['test_accuracy']:.4f} judge_test {m['judge']['test_accuracy']:.4f} "
      f"tgt {i['target_accuracy']:.3f} judge {i['judge_accuracy']:.3f} div {i['diversity_ratio']:.3f} "
      f"cos {i['feature_cosine']:.3f}/{i['feature_cosine_real']:.3f} (natural: judge {nat['judge_accuracy']:.3f}) "
      f"recall {i.get('recall')}/{i.get('recall_real')} coverage {i.get('coverage')}/{i.get('coverage_real')} "
      f"fd {i['frechet_distance']:.2f}/{i['frechet_distance_real']:.2f} nn {i['nn_distance']:.2f} "
      f"distill {d.get('from_generator', 0):.4f}/{d.get('from_training_images', 0):.4f} "
      f"pieces {i.get('pieces', {})} | seconds: " + " ".join(f"{k} {v:.1f}" for k, v in s.items() if k != "measure_parts"))
PY
}
run() {  # name script flags... : a default run on real data, from a fresh --out-dir
  local name=$1 script=$2; shift 2
  stage "$name" "$MAX" python3 "$script" --data-dir gpu_data/data --out-dir "runs/$name" "$@" && summ "$name" "runs/$name"
  cp "runs/$name/samples.png" "$OUT/${name}_samples.png" 2>/dev/null
}
finish() {
  tar czf "$OUT/all.tgz" runs/logs runs/*/metrics.json runs/*/*.png 2>/dev/null
  echo; echo "== table"; cat "$OUT/table.txt"
}
trap finish EXIT
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  git log --oneline -1
} | tee "$OUT/table.txt"
mkdir -p gpu_data/data/FashionMNIST/raw
python3 gpu_data/make_data.py --out gpu_data/data --only mnist cifar10 > runs/logs/data.log 2>&1
for f in gpu_data/fashion/*.gz; do gunzip -c "$f" > "gpu_data/data/FashionMNIST/raw/$(basename "${f%.gz}")"; done
stage tests 180 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py; tail -2 runs/logs/tests.log
MAX=120 run fashion fashion_inversion.py
MAX=120 run mnist mnist_inversion.py
MAX=200 run cifar10 cifar10_inversion.py
stage benchmark 120 python3 benchmark.py --device cuda; tail -12 runs/logs/benchmark.log
MAX=120 run mnist_seed1 mnist_inversion.py --seed 1
MAX=200 run cifar10_seed1 cifar10_inversion.py --seed 1
