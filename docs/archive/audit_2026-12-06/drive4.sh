#!/bin/bash
# issue 38, 2026-12-06: CIFAR-10 --quick --audit --generator-steps 1600 on the test split, seeds 1
# and 2 (seed 0 in drive.sh), reusing the 400-step runs' f and judges.
cd /work/main
export OMP_NUM_THREADS=1
O=/tmp/s47
Q="--quick --audit --data-dir data --distill-steps 0 --generator-steps 1600"
one() {
  local seed=$1
  for r in p c; do mkdir -p $O/cifar${seed}_1600_$r
    cp $O/cifar${seed}_$r/classifier.pt $O/cifar${seed}_$r/judge*.pt $O/cifar${seed}_1600_$r/; done
  python cifar10_inversion.py $Q --seed $seed --plant-class 0 --out-dir $O/cifar${seed}_1600_p \
    > $O/cifar${seed}_1600_p.log 2>&1
  python cifar10_inversion.py $Q --seed $seed --out-dir $O/cifar${seed}_1600_c \
    > $O/cifar${seed}_1600_c.log 2>&1
  python measure.py $O/cifar${seed}_1600_c --cue-of $O/cifar${seed}_1600_p --distill-steps 0 \
    > $O/cifar${seed}_1600_ctl.log 2>&1
}
one 1 & one 2 & wait
echo done > $O/DONE4
