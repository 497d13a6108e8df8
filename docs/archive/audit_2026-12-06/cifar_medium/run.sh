#!/bin/bash
# issue 38: CIFAR-10 --medium --audit, planted (class 0, the default cue) and its clean control,
# on the validation split: the clean f and both judges are the base run's of issue 39's
# /tmp/m39/base (the same --medium --validation f); the planted f trains here. Niced, one thread
# each: they fill the cores the --stats lanes leave (2 cores of an AMD EPYC with AVX-512).
cd /work/main
export OMP_NUM_THREADS=1
V="--medium --validation --data-dir data --distill-steps 0 --audit"
mkdir -p /tmp/a38/planted /tmp/a38/clean
nice -n 19 python cifar10_inversion.py $V --plant-class 0 --out-dir /tmp/a38/planted \
  > /tmp/a38/planted.log 2>&1 &
while pgrep -f "out-dir /tmp/m39/base" > /dev/null; do sleep 20; done
cp /tmp/m39/base/{judge,judge2}.pt /tmp/a38/planted/
cp /tmp/m39/base/{classifier,judge,judge2}.pt /tmp/a38/clean/
nice -n 19 python cifar10_inversion.py $V --out-dir /tmp/a38/clean > /tmp/a38/clean.log 2>&1
wait
nice -n 19 python measure.py /tmp/a38/clean --cue-of /tmp/a38/planted --distill-steps 0 \
  > /tmp/a38/clean_cue.log 2>&1
echo done > /tmp/a38/DONE
