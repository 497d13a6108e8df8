#!/bin/bash
# issue 39: CIFAR-10 --stats 3 (C, the --medium default) against --stats 1 (D) at --medium length
# on the validation split, seeds 0-2 of G; every arm reuses one f and both judges (trained once by
# the base run: --generator-steps 1, seed 0), copied into its --out-dir. One thread a run, two
# lanes side by side (2 cores of an AMD EPYC with AVX-512). The base run, before it, alone, two threads:
#   python cifar10_inversion.py --medium --validation --data-dir data --distill-steps 0 \
#     --generator-steps 1 --out-dir /tmp/m39/base
# Table: python tools/compare_seeds.py "C=/tmp/m39/C0,/tmp/m39/C1,/tmp/m39/C2" \
#   "D=/tmp/m39/D0,/tmp/m39/D1,/tmp/m39/D2"  (table.md)
cd /work/main
export OMP_NUM_THREADS=1
V="--medium --validation --data-dir data --distill-steps 0"
arm() {  # out-dir flags...
  local out=$1; shift
  mkdir -p $out; cp /tmp/m39/base/{classifier,judge,judge2}.pt $out/
  python cifar10_inversion.py $V --out-dir $out "$@" > $out.log 2>&1
}
while pgrep -f "out-dir /tmp/m39/base" > /dev/null; do sleep 20; done
lane1() { arm /tmp/m39/C0 --seed 0; arm /tmp/m39/D1 --seed 1 --stats 1; arm /tmp/m39/C2 --seed 2; }
lane2() { arm /tmp/m39/D0 --seed 0 --stats 1; arm /tmp/m39/C1 --seed 1; arm /tmp/m39/D2 --seed 2 --stats 1; }
lane1 & lane2 & wait
echo done > /tmp/m39/DONE
