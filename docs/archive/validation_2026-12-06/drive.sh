#!/bin/bash
# issue 39: levers at --quick length on the validation split, three seeds, arms sharing f and the
# judges per seed. SVHN: A = --quick, B = A + twins, generator prior, --stats 3 (its --medium
# data levers). CIFAR-10: C = --quick + twins, generator prior, --stats 3; D = the same, --stats 1.
# One thread per run; lane S after /tmp/x/DONE_A, lane C after /tmp/x/DONE_B (AVX2 EPYC).
cd /work/main
export OMP_NUM_THREADS=1
V="--quick --validation --data-dir data --distill-steps 0"
L="--twins --generator-stats 1"
arm() {  # script out-dir from-dir flags...
  local s=$1 out=$2 from=$3; shift 3
  if [ -n "$from" ]; then mkdir -p $out; cp $from/{classifier,judge,judge2}.pt $out/; fi
  python ${s}_inversion.py $V --out-dir $out "$@" > $out.log 2>&1
}
laneS() {
  while [ ! -f /tmp/x/DONE_A ]; do sleep 20; done
  arm svhn /tmp/l39/svhn_B0 /tmp/l39/svhn_A0 --seed 0 $L --stats 3
  while pgrep -f "svhn_A1" > /dev/null; do sleep 10; done
  arm svhn /tmp/l39/svhn_B1 /tmp/l39/svhn_A1 --seed 1 $L --stats 3
  arm svhn /tmp/l39/svhn_A2 "" --seed 2
  arm svhn /tmp/l39/svhn_B2 /tmp/l39/svhn_A2 --seed 2 $L --stats 3
  echo done > /tmp/l39/DONE_S
}
laneC() {
  while [ ! -f /tmp/x/DONE_B ]; do sleep 20; done
  for s in 0 1 2; do
    arm cifar10 /tmp/l39/cifar_C$s "" --seed $s $L --stats 3
    arm cifar10 /tmp/l39/cifar_D$s /tmp/l39/cifar_C$s --seed $s $L --stats 1
  done
  echo done > /tmp/l39/DONE_C
}
laneS & laneC & wait
