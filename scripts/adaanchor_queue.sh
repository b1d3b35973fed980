#!/usr/bin/env bash
# Queue the AdaAnchor study as one short heavy job per (split, seed, method) so other work can
# interleave: each run goes through /work/bin/heavy (if present) with one torch thread.
#   scripts/adaanchor_queue.sh occlusion 0 "regression heatmap ..."   (defaults: every method)
set -u
split=${1:-occlusion}; seed=${2:-0}
methods=${3:-"heatmap fixanchor adaanchor adaanchor_refined regression adaanchor_add adaanchor_single_anchor adaanchor_no_local"}
heavy=/work/bin/heavy; [ -x "$heavy" ] || heavy=""
export OMP_NUM_THREADS=1
for m in $methods; do
  $heavy ${PYTHON:-python} scripts/adaanchor_ablation.py train --split "$split" --seeds "$seed" --only "$m" --quiet || exit $?
done
