#!/usr/bin/env bash
# One prepared run on a lent GPU machine, in order of importance, each stage skipped when the
# time budget (seconds, first argument; default 450) would run out: the CUDA tests, the
# default Fashion-MNIST run (real data, timed end to end), the benchmark, default-length runs
# of the other scripts on fake data of the real size (timing only), the default generator
# without the CUDA graph and with --amp, more seeds, --tv 0, the benchmark's --compile rows.
# Expects the Fashion-MNIST .gz files in gpu_data/FashionMNIST/raw (git-ignored; carry it).
# Everything lands in $OUT: table.txt, the default run's samples.png, and all.tgz (every log,
# metrics.json and figure).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT" runs/logs
budget=${1:-450}; t0=$(date +%s)
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
i, s, nat = m["inversion"], m["seconds"], m["inversion_by_margin"]["natural"]
print(f"  {sys.argv[1]}: f {m['classifier']['test_accuracy']:.4f} judge_test {m['judge']['test_accuracy']:.4f} "
      f"tgt {i['target_accuracy']:.3f} judge {i['judge_accuracy']:.3f} div {i['diversity_ratio']:.3f} "
      f"(natural: tgt {nat['target_accuracy']:.3f} judge {nat['judge_accuracy']:.3f} div {nat['diversity_ratio']:.3f}) "
      f"fd {i['frechet_distance']:.2f}/{i['frechet_distance_real']:.2f} nn {i['nn_distance']:.2f} | seconds: "
      + " ".join(f"{k} {v:.1f}" for k, v in s.items()))
PY
}
cached() {  # name flags... : the generator phase only, on the default run's f and judge
  local name=$1; shift
  mkdir -p runs/$name; cp runs/fashion/classifier.pt runs/fashion/judge.pt runs/$name/ 2>/dev/null
  stage "$name" 90 python3 fashion_inversion.py --data-dir gpu_data --out-dir runs/$name "$@" && summ "$name" runs/$name
}
finish() {
  tar czf "$OUT/all.tgz" runs/logs runs/*/metrics.json runs/*/*.png 2>/dev/null
  cp runs/fashion/samples.png "$OUT/fashion_samples.png" 2>/dev/null
  echo; echo "== table"; cat "$OUT/table.txt"
}
trap finish EXIT
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
} | tee "$OUT/table.txt"
stage tests 100 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py; tail -2 runs/logs/tests.log
NG=(); grep -qE "[0-9]+ (failed|error)" runs/logs/tests.log && NG=(--no-cuda-graph)   # keep the rest going
stage fashion 170 python3 fashion_inversion.py --data-dir gpu_data --out-dir runs/fashion "${NG[@]}"
summ default runs/fashion
stage benchmark 120 python3 benchmark.py --device cuda --no-compile; tail -14 runs/logs/benchmark.log
stage cifar_fake 150 python3 cifar10_inversion.py --fake-data --fake-size 50000 --out-dir runs/cifar; summ cifar-fake runs/cifar
cached no_graph --no-cuda-graph
cached amp --amp
stage mnist_fake 100 python3 mnist_inversion.py --fake-data --fake-size 60000 --out-dir runs/mnist; summ mnist-fake runs/mnist
stage svhn_fake 160 python3 svhn_inversion.py --fake-data --fake-size 73257 --out-dir runs/svhn; summ svhn-fake runs/svhn
cached seed1 --seed 1
cached seed2 --seed 2
cached tv0 --tv 0
cached amp_seed1 --amp --seed 1
stage benchmark_compile 150 python3 benchmark.py --device cuda; tail -14 runs/logs/benchmark_compile.log
