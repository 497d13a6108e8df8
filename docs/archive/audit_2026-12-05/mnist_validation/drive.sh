#!/bin/bash
# issue 38/39: the --audit preset's choice (L_CE alone) against the paper's loss with the same
# masks, on the validation split, three seeds; MNIST --quick, one thread per run, two at a time
cd /work/main
export OMP_NUM_THREADS=1
M="python mnist_inversion.py --quick --validation --data-dir data --distill-steps 0"
(OMP_NUM_THREADS=1 python measure.py /tmp/audit/cifar_clean --cue-of /tmp/audit/cifar_planted --distill-steps 0 > /tmp/audit/cifar_control.log 2>&1)
for s in 0 1 2; do
  $M --audit --plant-class 0 --seed $s --out-dir /tmp/v/audit_p$s > /tmp/v/audit_p$s.log 2>&1 &
  $M --audit --seed $s --out-dir /tmp/v/audit_c$s > /tmp/v/audit_c$s.log 2>&1
  wait
  for k in p c; do mkdir -p /tmp/v/paper_$k$s; cp /tmp/v/audit_$k$s/{classifier,judge,judge2}.pt /tmp/v/paper_$k$s/; done
  $M --paper --patch 1 --plant-class 0 --seed $s --out-dir /tmp/v/paper_p$s > /tmp/v/paper_p$s.log 2>&1 &
  $M --paper --patch 1 --seed $s --out-dir /tmp/v/paper_c$s > /tmp/v/paper_c$s.log 2>&1
  wait
  python measure.py /tmp/v/audit_c$s --cue-of /tmp/v/audit_p$s --distill-steps 0 > /tmp/v/audit_ctl$s.log 2>&1 &
  python measure.py /tmp/v/paper_c$s --cue-of /tmp/v/paper_p$s --distill-steps 0 > /tmp/v/paper_ctl$s.log 2>&1
  wait
done
echo done > /tmp/v/DONE
