#!/bin/bash
# issue 38: CIFAR-10 --medium --audit on the TEST split, seeds 0-2, each seed its own planted and
# clean f (trained in the runs); seed 0's runs train the judges, seeds 1 and 2 copy them (judges
# do not depend on f). One thread a run, two lanes side by side (2 cores, AMD EPYC with AVX-512).
# As run on 2026-12-07: lane_planted ran to the end; lane_clean was stopped during clean0's
# second judge (22 minutes at one thread, the same weights as planted0's: same split, same
# seed; the first judges were checked equal), its work then done by laneb3.sh, with planted0's
# judge2.pt copied into clean0-2 as soon as it was written.
cd /work/main
export OMP_NUM_THREADS=1
T=/tmp/t38
V="--medium --data-dir data --distill-steps 0 --audit"
lane_planted() {
  for s in 0 1 2; do
    if [ $s -gt 0 ]; then cp $T/planted0/{judge,judge2}.pt $T/planted$s/ 2>/dev/null || \
      { mkdir -p $T/planted$s; cp $T/planted0/{judge,judge2}.pt $T/planted$s/; }; fi
    python cifar10_inversion.py $V --seed $s --plant-class 0 --out-dir $T/planted$s > $T/planted$s.log 2>&1
  done
}
lane_clean() {
  for s in 0 1 2; do
    if [ $s -gt 0 ]; then
      while [ ! -f $T/planted0/judge2.pt ]; do sleep 30; done
      mkdir -p $T/clean$s; cp $T/planted0/{judge,judge2}.pt $T/clean$s/
    fi
    python cifar10_inversion.py $V --seed $s --out-dir $T/clean$s > $T/clean$s.log 2>&1
    while [ ! -f $T/planted$s/metrics.json ]; do sleep 30; done
    python measure.py $T/clean$s --cue-of $T/planted$s --distill-steps 0 > $T/clean${s}_cue.log 2>&1
  done
}
lane_planted &
lane_clean
wait
echo done > $T/DONE
