#!/bin/bash
# issue 39, CIFAR-10 arms in two lanes (the SVHN lane stopped after two seeds: its judges at
# --quick score 0.32 on held-out digits, too weak to decide anything). One thread per run.
cd /work/main
export OMP_NUM_THREADS=1
V="--quick --validation --data-dir data --distill-steps 0"
L="--twins --generator-stats 1"
arm() {
  local s=$1 out=$2 from=$3; shift 3
  if [ -n "$from" ]; then mkdir -p $out; cp $from/{classifier,judge,judge2}.pt $out/; fi
  python ${s}_inversion.py $V --out-dir $out "$@" > $out.log 2>&1
}
lane1() {
  while kill -0 11422 2>/dev/null; do sleep 10; done
  arm cifar10 /tmp/l39/cifar_D0 /tmp/l39/cifar_C0 --seed 0 $L --stats 1
  arm cifar10 /tmp/l39/cifar_C1 "" --seed 1 $L --stats 3
  arm cifar10 /tmp/l39/cifar_D1 /tmp/l39/cifar_C1 --seed 1 $L --stats 1
  echo done > /tmp/l39/DONE_1
}
lane2() {
  while kill -0 12371 2>/dev/null; do sleep 10; done
  arm cifar10 /tmp/l39/cifar_C2 "" --seed 2 $L --stats 3
  arm cifar10 /tmp/l39/cifar_D2 /tmp/l39/cifar_C2 --seed 2 $L --stats 1
  echo done > /tmp/l39/DONE_2
}
lane1 & lane2 & wait
