#!/bin/bash
# issue 39: SVHN's --medium recipe re-decided on the validation split, three seeds of G. One f and
# both judges trained once (base), copied into six runs: A = today's --medium (ten generators,
# twins, the generator prior, --stats 3), B = the --medium defaults before the recipe (the same
# but --no-twins --generator-stats 0 --stats 1). 2 cores of an AMD EPYC with AVX-512, one thread
# a run, two runs side by side; each lane starts when a lane of the Fashion-MNIST driver ends.
cd /work/main
export OMP_NUM_THREADS=1
V="--medium --validation --data-dir data --distill-steps 0"
B_FLAGS="--no-twins --generator-stats 0 --stats 1"
run() {  # arm seed
  local d=/tmp/s39/$1$2
  mkdir -p $d; cp /tmp/s39/base/{classifier,judge,judge2}.pt $d/
  local extra=""; [ $1 = B ] && extra="$B_FLAGS"
  python svhn_inversion.py $V --seed $2 $extra --out-dir $d > $d.log 2>&1
}
lane() { for s in "$@"; do run ${s:0:1} ${s:1}; done; }
until [ -f /tmp/f39/D2/metrics.json ]; do sleep 20; done
python svhn_inversion.py $V --generator-steps 1 --out-dir /tmp/s39/base > /tmp/s39/base.log 2>&1 \
  || exit 1
lane A0 B1 A2 &
until [ -f /tmp/f39/C2/metrics.json ]; do sleep 20; done
lane B0 A1 B2 &
wait
echo done > /tmp/s39/DONE
