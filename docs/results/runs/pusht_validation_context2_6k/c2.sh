#!/bin/bash
# C2: two seeds side by side at 1 thread each, then the validation pairs at 2 threads.
cd /work/runs/s39
export PYTHONPATH=/work/wt-39b
PY=/work/main/.venv/bin/python
for s in 0 1; do OMP_NUM_THREADS=1 $PY /work/runs/s38/stages.py recipe_C2.json C2 $s > train_C2_s$s.log 2>&1 & done
wait
echo "trainings done $(date +%T)"
OMP_NUM_THREADS=2 $PY -m worldmodel bench planning --recipe recipe_C2.json --out C2 --seeds 0 1 --validation --json > valC2.json 2> valC2.log
echo "validation done rc=$? $(date +%T)"
