#!/usr/bin/env bash
# Run a command inside the project's environment, creating it first if needed.
#
#   ./run.sh sgdtemp two-minima --quick --out runs/two-minima
#   ./run.sh pytest
#
# Idempotent: the first call installs the system data packages (as root, through apt-get),
# creates .venv, installs the CPU build of PyTorch when no torch is installed yet (a plain
# `pip install torch` would pull a multi-GB CUDA build on a CPU-only machine) and installs
# sgdtemp in editable mode with its dev tools and the optional Ray/Dask/Parquet/monitor extras
# (keeping that torch). Later calls only run the command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PY=${PYTHON:-python3}
VENV=.venv
# Fashion-MNIST (the offline default data set) and Chromium (the report's rendering test).
APT_PACKAGES=(dataset-fashion-mnist chromium)
TORCH_CPU_PIN=${SGDTEMP_TORCH:-torch==2.13.0}

missing_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing_apt+=("$pkg")
done
if [ ${#missing_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "run.sh: installing ${missing_apt[*]} with apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_apt[@]}" >&2
  else
    echo "run.sh: optional system packages missing (${missing_apt[*]}); install them with" \
         "'sudo apt-get install ${missing_apt[*]}'" >&2
  fi
fi

stamp="$VENV/.sgdtemp-installed"
want=$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "run.sh: installing sgdtemp into $VENV" >&2
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/pip" install -q "$TORCH_CPU_PIN" >&2
  fi
  # Extras that depend on torch (Lightning, accelerate) must keep the torch installed above (the
  # CPU build), never pull another: pin the installed release (its +cpu local label matches).
  torch_now=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
  "$VENV/bin/pip" install -q -e ".[dev,cluster,parquet,monitor]" "torch==$torch_now" >&2
  echo "$want" > "$stamp"
fi

export PATH="$PWD/$VENV/bin:$PATH"
exec "$@"
