#!/usr/bin/env bash
# The one-command GPU check (issue 14). From the repository root, on a machine with an NVIDIA GPU:
#
#     bash scripts/gpu_check.sh          # or: make gpu-check
#
# 1. Stops at once, with one line and exit 1, when there is no GPU (no nvidia-smi, or it lists none):
#    nothing is installed or built before that.
# 2. Finds a Python >= 3.11 with a CUDA build of torch and the project's dependencies, in this order:
#    $GPU_CHECK_PYTHON, .venv-gpu/ (an earlier run's), the system python3, .venv/. If none has both, it
#    builds .venv-gpu/: on top of the system python's CUDA torch when there is one (a venv with
#    --system-site-packages; that torch is kept), else with the CUDA wheel of torch==2.13.0 from PyPI
#    (PyPI's Linux wheels are the CUDA builds; the PyTorch CPU index and /opt/wheels are not used), then
#    requirements.txt pinned to that torch. The Makefile's .venv/ (CPU wheel) is never changed.
# 3. Runs scripts/gpu_check.py: a short CUDA nerf training through nerfacc's OccGridEstimator (its CUDA
#    extension is compiled once with nvcc), Smooth.certify and weak_sdf timings on CUDA against the CPU;
#    then the CUDA tests (pytest -k "cuda or gpu"; a skipped one counts as a failure).
# 4. Prints one summary; exit status 0 only if every check passed. Details: runs/gpu_check/.
#
# Time: ~10 minutes on a fresh machine (torch download, one nvcc build of nerfacc, ~2-3 min of checks);
# ~3 minutes when .venv-gpu/ and the nerfacc build exist. GPU_CHECK_QUICK=1: tiny sizes.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
OUT=runs/gpu_check
VENV=.venv-gpu
TORCH_VERSION=2.13.0
START=$(date +%s)

say() { echo "[gpu-check] $*" >&2; }
die() {
  echo "[gpu-check] $*" >&2
  echo "GPU CHECK: FAILED — $*"
  exit 1
}

# -- 1. a GPU, before anything slow ------------------------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 ||
  die "no NVIDIA GPU here (nvidia-smi not found): this check needs a machine with a CUDA GPU and its driver"
GPUS=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1) ||
  die "nvidia-smi failed: $(echo "$GPUS" | head -1)"
GPUS=$(echo "$GPUS" | grep -v '^\s*$' || true)
[ -n "$GPUS" ] || die "nvidia-smi lists no GPU"
say "GPU: $(echo "$GPUS" | head -1)"
mkdir -p "$OUT"

# -- 2. a Python with CUDA torch and the dependencies ------------------------------------------------
py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
cuda_torch() {
  "$1" -c 'import sys, torch; sys.exit(not (torch.version.cuda and torch.cuda.is_available()))' >/dev/null 2>&1
}
has_deps() {
  PYTHONPATH="$ROOT" "$1" -c 'import numpy, scipy, statsmodels, skimage, trimesh, open3d, nerfacc, pydantic, yaml
import tqdm, matplotlib, PIL, pytest, ninja, geo_rs.smoothing, nerf.train' >/dev/null 2>&1
}
torch_info() { "$1" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")' 2>&1 | tail -1; }

PY=""
for cand in "${GPU_CHECK_PYTHON:-}" "$VENV/bin/python" python3 .venv/bin/python; do
  [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 || continue
  if py_ok "$cand" && cuda_torch "$cand" && has_deps "$cand"; then PY=$cand; break; fi
done

install_libusb() {  # open3d loads libusb at import (as in scripts/setup_env.sh)
  ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian libusb-1.0-0 (needed by open3d)"
    (apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1) ||
      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1) ||
      die "could not install libusb-1.0-0 (open3d needs it): run apt-get install libusb-1.0-0"
  else
    die "open3d needs the Debian package libusb-1.0-0: run sudo apt-get install libusb-1.0-0"
  fi
}

build_venv() {
  local base="" cand
  for cand in python3 python3.12 python3.11 python3.13; do  # a system python with CUDA torch first
    if command -v "$cand" >/dev/null 2>&1 && py_ok "$cand" && cuda_torch "$cand"; then base=$cand; break; fi
  done
  if [ -z "$base" ]; then  # else the Pythons open3d-cpu 0.20 has wheels for, oldest first
    for cand in python3.11 python3.12 python3; do
      if command -v "$cand" >/dev/null 2>&1 && py_ok "$cand"; then base=$cand; break; fi
    done
  fi
  [ -n "$base" ] || die "no Python >= 3.11 found (python3, python3.11, python3.12)"
  local pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
  if cuda_torch "$base"; then
    say "building $VENV on $base's CUDA torch ($(torch_info "$base"))"
    "$base" -m venv --system-site-packages "$VENV" || die "could not create $VENV"
  else
    say "building $VENV with the CUDA wheel of torch==$TORCH_VERSION from PyPI (a few GB, minutes)"
    "$base" -m venv "$VENV" || die "could not create $VENV (python3-venv missing?)"
    env -u PIP_FIND_LINKS timeout 540 $pip install "torch==$TORCH_VERSION" --index-url https://pypi.org/simple ||
      die "could not install torch==$TORCH_VERSION from PyPI (no network, or no wheel for this Python/platform)"
  fi
  cuda_torch "$VENV/bin/python" ||
    die "torch in $VENV cannot use this GPU ($(torch_info "$VENV/bin/python"); driver: $(echo "$GPUS" | head -1))"
  install_libusb
  "$VENV/bin/python" -c 'import torch; print("torch==" + torch.__version__)' > "$VENV/torch-pin.txt"
  env -u PIP_FIND_LINKS timeout 300 $pip install -c "$VENV/torch-pin.txt" -r requirements.txt ninja ||
    die "could not install requirements.txt into $VENV"
  $pip install --no-deps "auto_LiRPA==0.3" >/dev/null 2>&1 || say "auto_LiRPA not installed (not needed here)"
  $pip install --no-deps --no-build-isolation -e . || die "could not install geo-rs into $VENV"
  cuda_torch "$VENV/bin/python" || die "installing the requirements replaced the CUDA torch in $VENV"
}

if [ -z "$PY" ]; then
  build_venv
  PY=$VENV/bin/python
fi
has_deps "$PY" || die "$PY still misses a dependency: PYTHONPATH=. $PY -c 'import nerf.train, nerfacc, ninja'"
TORCH=$(torch_info "$PY")
say "python: $PY ($TORCH)"

# nerfacc builds its CUDA extension with nvcc: find the toolkit if it is not on PATH yet
if ! command -v nvcc >/dev/null 2>&1; then
  for d in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-*; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then
      export PATH="$d/bin:$PATH" CUDA_HOME="$d"
      break
    fi
  done
fi
if command -v nvcc >/dev/null 2>&1; then
  NVCC="$(command -v nvcc) ($(nvcc --version | grep -o 'release [0-9.]*' | head -1))"
else
  NVCC="not found: nerfacc's OccGridEstimator cannot be built, the nerf check will fail"
fi
say "nvcc: $NVCC"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# torch builds nerfacc's extension with the `ninja` of the python's own bin folder
export PATH="$(dirname "$(command -v "$PY")"):$PATH"

# -- 3. the checks (the first CUDA use of nerfacc compiles its extension), then the CUDA tests ---------
say "nerf training, Smooth.certify and weak_sdf on CUDA (scripts/gpu_check.py) ..."
QUICK=()
[ "${GPU_CHECK_QUICK:-0}" = 1 ] && QUICK=(--quick)
# GPU_CHECK_DEVICE=cpu: a self-test of this script's plumbing on the CPU, not a GPU check
timeout 420 "$PY" scripts/gpu_check.py --device "${GPU_CHECK_DEVICE:-cuda}" --out "$OUT" "${QUICK[@]}" \
  > "$OUT/checks.log" 2>&1
CHECK_RC=$?

say "CUDA tests (pytest -k 'cuda or gpu') ..."
timeout 240 "$PY" -m pytest -q -p no:cacheprovider -rs -k "cuda or gpu" tests > "$OUT/pytest.log" 2>&1
TEST_RC=$?
TEST_LINE=$(grep -E ' in [0-9.]+s|no tests ran' "$OUT/pytest.log" | tail -1 | tr -d '=')
SKIPS=$(grep -c '^SKIPPED' "$OUT/pytest.log" || true)
if [ $TEST_RC = 0 ] && [ "$SKIPS" = 0 ]; then TESTS="PASS"; else TESTS="FAIL"; fi
[ $TEST_RC = 124 ] && TEST_LINE="timed out after 240 s"

# -- 4. one summary ----------------------------------------------------------------------------------
check_line() { grep -E "^$1: " "$OUT/checks.log" | tail -1 | cut -d' ' -f2-; }
echo
echo "==================== GPU CHECK ($(date -u +%Y-%m-%dT%H:%MZ)) ===================="
echo "gpu      : $(echo "$GPUS" | head -1)   [$(echo "$GPUS" | wc -l) GPU(s)]"
echo "python   : $PY ($TORCH)"
echo "nvcc     : $NVCC"
echo "tests    : $TESTS $TEST_LINE (skipped: $SKIPS; log $OUT/pytest.log)"
for name in weak_sdf certify nerf; do
  line=$(check_line $name)
  echo "$(printf '%-9s' "$name"): ${line:-FAIL (no result: $(tail -1 "$OUT/checks.log" | cut -c1-200))}"
done
[ $CHECK_RC = 124 ] && echo "checks   : timed out after 420 s (see $OUT/checks.log)"
echo "total    : $(($(date +%s) - START)) s; details in $OUT/ (gpu_check.json, checks.log, pytest.log)"
if [ "$TESTS" = PASS ] && [ $CHECK_RC = 0 ]; then
  echo "GPU CHECK: PASSED"
  exit 0
fi
echo "GPU CHECK: FAILED (see above)"
exit 1
