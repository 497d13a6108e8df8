#!/bin/bash
# issue 38, after the three seeds: CIFAR-10 --medium --audit on the test set, seed 0, with another
# cue (a 5x5 checker top-left for class 3) and with shortcut mode (the default square, class 0's
# own images stamped, labels kept). The control of each is seed 0's clean run (the same recipe
# and seed), rescored for that cue. Judges copied from planted0. One thread a run, two lanes.
cd /work/main
export OMP_NUM_THREADS=1
T=/tmp/t38
V="--medium --data-dir data --distill-steps 0 --audit --seed 0"
for k in checker0 shortcut0; do mkdir -p $T/$k; cp $T/planted0/{judge,judge2}.pt $T/$k/; done
mkdir -p $T/clean0_checker $T/clean0_shortcut
( while [ ! -f $T/planted2/metrics.json ]; do sleep 10; done
  python cifar10_inversion.py $V --plant-class 3 --plant-pattern checker --plant-corner top-left \
    --plant-size 5 --out-dir $T/checker0 > $T/checker0.log 2>&1 ) &
while [ ! -f $T/DONE ]; do sleep 10; done
python cifar10_inversion.py $V --plant-class 0 --plant-mode shortcut --out-dir $T/shortcut0 \
  > $T/shortcut0.log 2>&1
wait
# the controls: clean0's files copied, so its own metrics.json keeps the default cue's scores
for k in checker shortcut; do
  cp $T/clean0/{classifier,generator,judge,judge2}.pt $T/clean0/samples.pt $T/clean0/metrics.json $T/clean0_$k/
done
python measure.py $T/clean0_checker --cue-of $T/checker0 --distill-steps 0 > $T/clean0_checker.log 2>&1 &
python measure.py $T/clean0_shortcut --cue-of $T/shortcut0 --distill-steps 0 > $T/clean0_shortcut.log 2>&1
wait
echo done > $T/MORE_DONE
