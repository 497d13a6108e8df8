#!/bin/bash
# Lane B of run.sh, as it ran (its third form): clean1 was started with planted0's judge.pt
# copied in and ran to its end (planted0's judge2.pt was copied in before it needed it, by
#   while [ ! -f planted0/judge2.pt ]; do sleep 5; done; sleep 5; cp planted0/judge2.pt clean{0,1,2}/
# ); then clean0 (stopped in its second judge) and each clean run are scored by measure.py for
# their planted run's cue: the controls.
cd /work/main
export OMP_NUM_THREADS=1
T=/tmp/t38
V="--medium --data-dir data --distill-steps 0 --audit"
while pgrep -f "out-dir $T/clean1" >/dev/null; do sleep 10; done
until grep -q copied $T/copy.out; do sleep 10; done
python measure.py $T/clean0 --cue-of $T/planted0 --distill-steps 0 > $T/clean0_cue.log 2>&1
python cifar10_inversion.py $V --seed 2 --out-dir $T/clean2 > $T/clean2.log 2>&1
while [ ! -f $T/planted1/metrics.json ]; do sleep 30; done
python measure.py $T/clean1 --cue-of $T/planted1 --distill-steps 0 > $T/clean1_cue.log 2>&1
while [ ! -f $T/planted2/metrics.json ]; do sleep 30; done
python measure.py $T/clean2 --cue-of $T/planted2 --distill-steps 0 > $T/clean2_cue.log 2>&1
echo done > $T/DONE
