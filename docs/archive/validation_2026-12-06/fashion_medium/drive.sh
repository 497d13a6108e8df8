#!/bin/bash
# issue 39: Fashion-MNIST's --medium recipe re-decided on the validation split, three seeds of G.
# One f and both judges trained once (base), copied into six runs: C = today's --medium (ten
# generators, twins, the generator prior, gamma 10 with class pairs, mode seeking, --stats 10,
# --tv 15), D = the --medium defaults before the recipe (commit 11286b1's parent): one generator,
# gamma 1 over all pairs, --stats 1, no generator prior, --tv 5, no mode seeking, no twins.
# 2 cores of an AMD EPYC with AVX-512; the base run alone with two threads, then one thread a run,
# two runs side by side.
cd /work/main
V="--medium --validation --data-dir data --distill-steps 0"
D_FLAGS="--num-generators 1 --gamma 1 --cos-pairs all --stats 1 --generator-stats 0 --tv 5 \
  --mode-seeking 0 --no-twins"
OMP_NUM_THREADS=2 python fashion_inversion.py $V --generator-steps 1 --out-dir /tmp/f39/base \
  > /tmp/f39/base.log 2>&1 || exit 1
export OMP_NUM_THREADS=1
run() {  # arm seed
  local d=/tmp/f39/$1$2
  mkdir -p $d; cp /tmp/f39/base/{classifier,judge,judge2}.pt $d/
  local extra=""; [ $1 = D ] && extra="$D_FLAGS"
  python fashion_inversion.py $V --seed $2 $extra --out-dir $d > $d.log 2>&1
}
lane() { for s in "$@"; do run ${s:0:1} ${s:1}; done; }
lane C0 D1 C2 & lane D0 C1 D2 & wait
echo done > /tmp/f39/DONE
