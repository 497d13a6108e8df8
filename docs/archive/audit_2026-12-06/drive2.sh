#!/bin/bash
# issue 38, 2026-12-06: shortcut mode (class 0's own images stamped, labels kept) on all four
# sets, and a non-default cue (5x5 checker, top-left, class 3) on the colour sets; seed 0,
# --quick --audit, judges copied from the planted run; each clean control rescored for the cue.
cd /work/main
export OMP_NUM_THREADS=1
O=/tmp/s47
Q="--quick --audit --seed 0 --data-dir data --distill-steps 0"
CHECKER="--plant-class 3 --plant-pattern checker --plant-corner top-left --plant-size 5"
planted() {  # script, name, plant flags...
  local s=$1 n=$2; shift 2
  python ${s}_inversion.py $Q "$@" --out-dir $O/$n > $O/$n.log 2>&1
}
control() {  # script, planted run's name, clean run's name (made when missing)
  local s=$1 p=$2 c=$3
  if [ ! -f $O/$c/samples.pt ]; then
    mkdir -p $O/$c; cp $O/$p/judge*.pt $O/$c/
    python ${s}_inversion.py $Q --out-dir $O/$c > $O/$c.log 2>&1
  fi
  rm -rf $O/${p}_ctl; cp -r $O/$c $O/${p}_ctl
  python measure.py $O/${p}_ctl --cue-of $O/$p --distill-steps 0 > $O/${p}_ctl.log 2>&1
}
laneA() {
  planted mnist mnist0s_p --plant-class 0 --plant-mode shortcut; control mnist mnist0s_p mnist0_c
  planted svhn svhn0s_p --plant-class 0 --plant-mode shortcut; control svhn svhn0s_p svhn0_c
  planted svhn svhn0k_p $CHECKER; control svhn svhn0k_p svhn0_c
  echo done > $O/DONE2_A
}
laneB() {
  planted fashion fashion0s_p --plant-class 0 --plant-mode shortcut
  control fashion fashion0s_p fashion0_c
  planted cifar10 cifar0s_p --plant-class 0 --plant-mode shortcut; control cifar10 cifar0s_p cifar0_c
  planted cifar10 cifar0k_p $CHECKER; control cifar10 cifar0k_p cifar0_c
  echo done > $O/DONE2_B
}
laneA & laneB & wait
