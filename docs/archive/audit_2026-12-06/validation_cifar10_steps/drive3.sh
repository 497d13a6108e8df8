#!/bin/bash
# issue 38, 2026-12-06: CIFAR-10 --quick --audit on the validation split, seeds 0-2, G for 400
# steps (--quick's) against 1600, planted (class 0, default cue) and clean; the 1600-step runs
# reuse the 400-step runs' f and judges; each clean run rescored for its planted run's cue.
cd /work/main
export OMP_NUM_THREADS=1
O=/tmp/s47/val
mkdir -p $O
Q="--quick --audit --validation --data-dir data --distill-steps 0"
for seed in 0 1 2; do
  python cifar10_inversion.py $Q --seed $seed --plant-class 0 --out-dir $O/p400_$seed \
    > $O/p400_$seed.log 2>&1
  mkdir -p $O/c400_$seed; cp $O/p400_$seed/judge*.pt $O/c400_$seed/
  python cifar10_inversion.py $Q --seed $seed --out-dir $O/c400_$seed > $O/c400_$seed.log 2>&1
  for r in p c; do mkdir -p $O/${r}1600_$seed
    cp $O/${r}400_$seed/classifier.pt $O/${r}400_$seed/judge*.pt $O/${r}1600_$seed/; done
  python cifar10_inversion.py $Q --seed $seed --plant-class 0 --generator-steps 1600 \
    --out-dir $O/p1600_$seed > $O/p1600_$seed.log 2>&1
  python cifar10_inversion.py $Q --seed $seed --generator-steps 1600 --out-dir $O/c1600_$seed \
    > $O/c1600_$seed.log 2>&1
  for k in 400 1600; do
    python measure.py $O/c${k}_$seed --cue-of $O/p${k}_$seed --distill-steps 0 \
      > $O/c${k}_${seed}_ctl.log 2>&1; done
done
echo done > $O/DONE
