#!/bin/bash
# E screen: members alone and pair ensembles on PushT's 50 validation pairs, 2 threads, one at a time.
cd /work/runs/s39
PY="/work/main/.venv/bin/python"
export PYTHONPATH=/work/wt-39 OMP_NUM_THREADS=2
V=/work/runs/s36/KPR6k/PushT-v0/data/validation.lance
S0=/work/runs/s36/KPR6k/PushT-v0/seed0/ckpt
S1=/work/runs/s36/KPR6k/PushT-v0/seed1/ckpt
S2=/work/runs/s36/held/PushT-v0/seed2/ckpt
A="--data $V --episodes 50 --planner icem --no-video"
run() { name=$1; shift; echo "== $name $(date +%T)"; "$@" > $name.json 2> $name.log; echo "rc=$? $(date +%T)"; }
run w_s0 $PY ens_eval.py $S0 -- eval --ckpt $S0 $A --out w_s0
run s2 $PY -m worldmodel eval --ckpt $S2 $A --out s2
run E01 $PY ens_eval.py $S0,$S1 -- eval --ckpt $S0 $A --out E01
run E02 $PY ens_eval.py $S0,$S2 -- eval --ckpt $S0 $A --out E02
run E12 $PY ens_eval.py $S1,$S2 -- eval --ckpt $S1 $A --out E12
