#!/bin/bash
# issue 39: the README's "What the additions buy" table at three seeds (each seed its own f and
# judges, trained in the defaults' run and copied into the --paper and --data-free runs), test set,
# --quick, today's code; one thread a run, one lane per dataset (2 cores, AMD EPYC with AVX-512).
cd /work/main
export OMP_NUM_THREADS=1
Q="--quick --data-dir data"
lane() {  # script
  local s=$1
  for seed in 0 1 2; do
    local d=/tmp/add/${s}_s$seed
    python ${s}_inversion.py $Q --seed $seed --out-dir ${d}_defaults > ${d}_defaults.log 2>&1
    for mode in paper data-free; do
      mkdir -p ${d}_$mode; cp ${d}_defaults/{classifier,judge,judge2}.pt ${d}_$mode/
      python ${s}_inversion.py $Q --seed $seed --$mode --out-dir ${d}_$mode > ${d}_$mode.log 2>&1
    done
  done
}
mkdir -p /tmp/add
lane fashion & lane cifar10 & wait
echo done > /tmp/add/DONE
