#!/bin/bash
# issue 38, 2026-12-06: seeds 1 and 2 of --quick --audit on SVHN, CIFAR-10, Fashion-MNIST
# (planted class 0, default cue, and the clean control with the judges copied; the control
# rescored for the planted run's cue), and CIFAR-10 seed 0 at --generator-steps 1600 (f and
# judges copied from the seed-0 runs). One thread per run, two lanes side by side.
cd /work/main
export OMP_NUM_THREADS=1
O=/tmp/s47
Q="--quick --audit --data-dir data --distill-steps 0"
pair() {  # script, seed, name: planted (judges trained), clean (judges copied), control rescored
  local s=$1 seed=$2 n=$3
  python ${s}_inversion.py $Q --seed $seed --plant-class 0 --out-dir $O/${n}_p > $O/${n}_p.log 2>&1
  mkdir -p $O/${n}_c; cp $O/${n}_p/judge*.pt $O/${n}_c/
  python ${s}_inversion.py $Q --seed $seed --out-dir $O/${n}_c > $O/${n}_c.log 2>&1
  python measure.py $O/${n}_c --cue-of $O/${n}_p --distill-steps 0 > $O/${n}_ctl.log 2>&1
}
longer() {  # name of a seed-0 pair, steps: the same fs and judges, G trained longer
  local n=$1 k=$2 s=$3
  for r in p c; do mkdir -p $O/${n}_${k}_$r; cp $O/${n}_$r/*.pt $O/${n}_${k}_$r/
    rm -f $O/${n}_${k}_$r/generator.pt $O/${n}_${k}_$r/samples.pt; done
  python ${s}_inversion.py $Q --seed 0 --plant-class 0 --generator-steps $k \
    --out-dir $O/${n}_${k}_p > $O/${n}_${k}_p.log 2>&1
  python ${s}_inversion.py $Q --seed 0 --generator-steps $k --out-dir $O/${n}_${k}_c \
    > $O/${n}_${k}_c.log 2>&1
  python measure.py $O/${n}_${k}_c --cue-of $O/${n}_${k}_p --distill-steps 0 > $O/${n}_${k}_ctl.log 2>&1
}
laneA() { pair cifar10 0 cifar0; longer cifar0 1600 cifar10; pair cifar10 1 cifar1
          pair cifar10 2 cifar2; echo done > $O/DONE_A; }
laneB() { pair svhn 1 svhn1; pair svhn 2 svhn2; pair fashion 1 fashion1; pair fashion 2 fashion2
          echo done > $O/DONE_B; }
laneA & laneB & wait
