#!/bin/bash
# issue 38, 2026-12-06: shortcut mode on SVHN and CIFAR-10 with --generator-steps 1600 (seed 0; f
# and judges copied from the 400-step shortcut runs and their clean controls).
cd /work/main
export OMP_NUM_THREADS=1
O=/tmp/s47
Q="--quick --audit --seed 0 --data-dir data --distill-steps 0 --generator-steps 1600"
one() {  # script, planted name, clean name
  local s=$1 p=$2 c=$3
  for r in $p $c; do mkdir -p $O/${r}_1600; cp $O/$r/classifier.pt $O/$r/judge*.pt $O/${r}_1600/; done
  python ${s}_inversion.py $Q --plant-class 0 --plant-mode shortcut --out-dir $O/${p}_1600 \
    > $O/${p}_1600.log 2>&1
  if [ ! -f $O/${c}_1600/samples.pt ]; then
    python ${s}_inversion.py $Q --out-dir $O/${c}_1600 > $O/${c}_1600.log 2>&1; fi
  python measure.py $O/${c}_1600 --cue-of $O/${p}_1600 --distill-steps 0 > $O/${p}_1600_ctl.log 2>&1
}
one svhn svhn0s_p svhn0_c & one cifar10 cifar0s_p cifar0_c & wait
echo done > $O/DONE5
