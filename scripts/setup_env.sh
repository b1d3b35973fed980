#!/usr/bin/env bash
# Builds the project virtualenv. Called by the Makefile whenever a dependency file changed.
# Order matters: the CPU torch wheel goes in first, then everything else under constraints.txt,
# so no package can drag in a multi-GB CUDA build.
set -euo pipefail
PY=${1:-python3}
VENV=${2:-.venv}
TORCH=2.13.0

say() { echo "[setup] $*"; }

# open3d imports libusb at load time; it is a Debian package, not a wheel.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian libusb-1.0-0 (needed by open3d)"
    (apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1) || \
      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libusb-1.0-0 >/dev/null)
  else
    echo "[setup] error: open3d needs the Debian package libusb-1.0-0; run: sudo apt-get install libusb-1.0-0" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

if ! "$VENV/bin/python" -c "import torch,sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH')" 2>/dev/null; then
  wheel=$(ls /opt/wheels/torch-$TORCH+cpu-*.whl 2>/dev/null | head -1 || true)
  if [ -n "$wheel" ]; then
    say "installing torch $TORCH (CPU) from $wheel"
    $PIP install "$wheel"
  else
    say "installing torch $TORCH (CPU) from the PyTorch CPU index"
    $PIP install "torch==$TORCH+cpu" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

say "installing requirements under constraints.txt"
$PIP install -c constraints.txt -r requirements.txt
# auto_LiRPA 0.3 declares torch<1.13 but runs on 2.13 with the patches in geo_rs/bounds/lirpa_compat.py.
$PIP install --no-deps "auto_LiRPA==0.3"
$PIP install --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import torch; print('[setup] torch', torch.__version__)"
