#!/usr/bin/env bash
# Certified pose from the coupled MILP verifier's candidate sets on posed runway + cuboid data (issue 11):
# make-data → train configs/keypoint/posed_verify.yaml → keypoint verify (noise ε) → pose-bound --certifier milp,
# plus two sampling checks (argmax of sampled noisy crops inside the candidate sets; PnP poses of sampled
# candidate configurations the proof covers within the pose bounds): violations must be 0. Prints a table.
#
#   scripts/pose_milp_study.sh OUT [IMAGES [EPS...]]     (defaults: 10 images, ε 1e-4 3e-4)
#   env: PY (python, default python), HEAVY (a prefix for long commands, e.g. /work/bin/heavy),
#        TRAIN (default 600), VAL (200), TIME_LIMIT (MILP s per instance, 30), POSE_TIME (pose bound s, 5)
# 1 torch thread; on a 2-core machine ~40 s training, ~20 s verify per instance and ε.
set -euo pipefail
OUT=${1:?usage: $0 OUT [IMAGES [EPS...]]}; N=${2:-10}; shift $(($# < 2 ? $# : 2))
if [ $# -gt 0 ]; then EPS=("$@"); else EPS=(1e-4 3e-4); fi
PY=${PY:-python}; HEAVY=${HEAVY:-}; export OMP_NUM_THREADS=1
GEO=($PY -m geo_rs.cli)
mkdir -p "$OUT"
[ -f "$OUT/data/val/cameras.json" ] || {
  "${GEO[@]}" keypoint make-data "$OUT/data/train" --posed runway cuboid --num-images "${TRAIN:-600}" --seed 0
  "${GEO[@]}" keypoint make-data "$OUT/data/val" --posed runway cuboid --num-images "${VAL:-200}" --seed 1; }
sed -e "s#runs/keypoint/posed_data#$OUT/data#g" configs/keypoint/posed_verify.yaml > "$OUT/posed_verify.yaml"
[ -f "$OUT/det/last.pt" ] || $HEAVY "${GEO[@]}" keypoint train "$OUT/posed_verify.yaml" --out-dir "$OUT/det" --quiet
CK=$OUT/det/last.pt
for e in "${EPS[@]}"; do
  $HEAVY "${GEO[@]}" keypoint verify "$CK" --data "$OUT/data/val" --images "$N" --perturbation noise \
    --eps "$e" --spec l1:0 --method coupled --reachable interval --time-limit "${TIME_LIMIT:-30}" --quiet \
    --out "$OUT/kpv_$e"
  cand=$(ls "$OUT/kpv_$e"/candidates/noise_*.json)
  $HEAVY "${GEO[@]}" keypoint pose-bound "$CK" --data "$OUT/data/val" --images "$N" --certifier milp \
    --candidates "$cand" --max-rot-deg 5 --time-limit "${POSE_TIME:-5}" --figures 2 --quiet \
    --out "$OUT/pose_$e"
done
$HEAVY $PY scripts/pose_milp_check.py "$OUT" "$N" "${EPS[@]}"
