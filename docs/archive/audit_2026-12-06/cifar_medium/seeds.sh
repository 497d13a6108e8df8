#!/bin/bash
# issue 38: CIFAR-10 --medium --audit, seeds 1 and 2 of G with seed 0's fs and judges copied in
# (the planted f of /tmp/a38/planted, the clean f of /tmp/a38/clean), validation split; each clean
# run rescored for its planted run's cue. One thread a run (2 cores of an AMD EPYC with AVX-512,
# beside the two lanes of another driver).
cd /work/main
export OMP_NUM_THREADS=1
V="--medium --validation --data-dir data --distill-steps 0 --audit"
lane() {  # seed
  local s=$1
  for kind in planted clean; do
    mkdir -p /tmp/a38/${kind}$s; cp /tmp/a38/$kind/{classifier,judge,judge2}.pt /tmp/a38/${kind}$s/
  done
  python cifar10_inversion.py $V --plant-class 0 --seed $s --out-dir /tmp/a38/planted$s \
    > /tmp/a38/planted$s.log 2>&1
  python cifar10_inversion.py $V --seed $s --out-dir /tmp/a38/clean$s > /tmp/a38/clean$s.log 2>&1
  python measure.py /tmp/a38/clean$s --cue-of /tmp/a38/planted$s --distill-steps 0 \
    > /tmp/a38/clean${s}_cue.log 2>&1
}
lane 1 & lane 2 & wait
echo done > /tmp/a38/DONE_SEEDS
