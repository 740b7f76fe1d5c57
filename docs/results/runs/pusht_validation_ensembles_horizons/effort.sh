#!/bin/bash
cd /work/runs/s39
PY="/work/main/.venv/bin/python"
export PYTHONPATH=/work/wt-39b OMP_NUM_THREADS=2
V=/work/runs/s36/KPR6k/PushT-v0/data/validation.lance
C0=/work/runs/s36/KPR6k/PushT-v0/seed0/ckpt
C1=/work/runs/s36/KPR6k/PushT-v0/seed1/ckpt
C2=/work/runs/s36/held/PushT-v0/seed2/ckpt
for W in 0.02 0.1; do for s in 0 1 2; do
  c=C$s; name=EF${W}_s$s; echo "== $name $(date +%T)"
  $PY -m worldmodel eval --ckpt ${!c} --data $V --episodes 50 --planner icem --objective terminal_l2=1,effort=$W --no-video --out $name > $name.json 2> $name.log
  echo "rc=$? $(date +%T) $(grep -h 'successes in' $name.log)"
done; done
