#!/bin/bash
# issue 38: seed-0 --quick --audit, planted (class 0, default cue) and clean, all four sets, with
# the measures added 2026-12-05 (what f answers to, the recovered trigger); then two non-default
# cues on MNIST. One thread per run, two lanes side by side (AVX2 EPYC).
cd /work/main
export OMP_NUM_THREADS=1
Q="--quick --audit --seed 0 --data-dir data --distill-steps 0"
pair() {  # script name: planted, judges copied, clean, control rescored
  s=$1; n=$2
  python ${s}_inversion.py $Q --plant-class 0 --out-dir /tmp/x/${n}_p > /tmp/x/${n}_p.log 2>&1
  mkdir -p /tmp/x/${n}_c; cp /tmp/x/${n}_p/judge*.pt /tmp/x/${n}_c/
  python ${s}_inversion.py $Q --out-dir /tmp/x/${n}_c > /tmp/x/${n}_c.log 2>&1
  python measure.py /tmp/x/${n}_c --cue-of /tmp/x/${n}_p --distill-steps 0 > /tmp/x/${n}_ctl.log 2>&1
}
laneA() {
  pair mnist mnist; pair svhn svhn
  mkdir -p /tmp/x/oa; cp /tmp/x/mnist_p/judge*.pt /tmp/x/oa/
  python mnist_inversion.py $Q --plant-class 3 --plant-pattern checker --plant-corner top-left \
    --plant-size 5 --out-dir /tmp/x/oa > /tmp/x/oa.log 2>&1
  cp -r /tmp/x/mnist_c /tmp/x/oa_c
  python measure.py /tmp/x/oa_c --cue-of /tmp/x/oa --distill-steps 0 > /tmp/x/oa_ctl.log 2>&1
  echo done > /tmp/x/DONE_A
}
laneB() {
  pair fashion fashion; pair cifar10 cifar
  mkdir -p /tmp/x/ob; cp /tmp/x/mnist_p/judge*.pt /tmp/x/ob/
  python mnist_inversion.py $Q --plant-class 7 --plant-corner top-right --plant-size 3 \
    --plant-colour 0.6 --out-dir /tmp/x/ob > /tmp/x/ob.log 2>&1
  cp -r /tmp/x/mnist_c /tmp/x/ob_c
  python measure.py /tmp/x/ob_c --cue-of /tmp/x/ob --distill-steps 0 > /tmp/x/ob_ctl.log 2>&1
  echo done > /tmp/x/DONE_B
}
laneA & laneB & wait
