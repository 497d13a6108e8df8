#!/bin/bash
# issue 38: CIFAR-10 --medium --audit, seed 1 with its own fs (planted and clean trained in the
# runs), the judges of seed 0's runs copied in; validation split; one thread a run, side by side
# (2 cores of an AMD EPYC with AVX-512).
cd /work/main
export OMP_NUM_THREADS=1
V="--medium --validation --data-dir data --distill-steps 0 --audit --seed 1"
for k in planted1 clean1; do cp /tmp/a38/clean/{judge,judge2}.pt /tmp/a38s/$k/; done
python cifar10_inversion.py $V --plant-class 0 --out-dir /tmp/a38s/planted1 > /tmp/a38s/planted1.log 2>&1 &
python cifar10_inversion.py $V --out-dir /tmp/a38s/clean1 > /tmp/a38s/clean1.log 2>&1
wait
python measure.py /tmp/a38s/clean1 --cue-of /tmp/a38s/planted1 --distill-steps 0 > /tmp/a38s/clean1_cue.log 2>&1
echo done > /tmp/a38s/DONE
