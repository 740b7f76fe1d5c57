#!/bin/bash
cd /work/runs/s39
export PYTHONPATH=/work/wt-39b
PY=/work/main/.venv/bin/python
OMP_NUM_THREADS=2 $PY /work/runs/s38/stages.py recipe_R96.json R96 0 --data-only > data_R96.log 2>&1
echo "data done rc=$? $(date +%T)"
for s in 0 1; do OMP_NUM_THREADS=1 $PY /work/runs/s38/stages.py recipe_R96.json R96 $s > train_R96_s$s.log 2>&1 & done
wait
echo "trainings done $(date +%T)"
OMP_NUM_THREADS=2 $PY -m worldmodel bench planning --recipe recipe_R96.json --out R96 --seeds 0 1 --validation --json > valR96.json 2> valR96.log
echo "validation done rc=$? $(date +%T)"
