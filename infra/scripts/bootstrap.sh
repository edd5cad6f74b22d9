#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install tsmindex into it.
#
# The heavy dependencies (torch, TorchServe, ...) are installed into a venv kept under
# $TSMINDEX_VENV_CACHE (default ~/.cache/tsmindex/venvs), keyed by the hash of pyproject.toml, so a
# fresh clone with unchanged dependencies is ready in seconds. .venv is a symlink to it; the
# project itself is installed editable (no deps) on every run so the venv points at this clone.
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
cache_root=${TSMINDEX_VENV_CACHE:-$HOME/.cache/tsmindex/venvs}
# Key on the dependency declarations only, so editing tool config does not rebuild torch.
key=$( (sed -n '/^dependencies = \[/,/^\[project.scripts\]/p' pyproject.toml; "$python" --version) \
  | sha256sum | cut -c1-16)
venv="$cache_root/$key"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "bootstrap: building venv $venv"
  rm -rf "$venv"
  mkdir -p "$cache_root"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  # torch first and on its own: pip then takes it from the local wheel cache where there is one.
  "$venv/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1"
  "$venv/bin/pip" install -q -e ".[serve,onnx,dev]"
  touch "$venv/.complete"
fi

if [ -e .venv ] && [ ! -L .venv ]; then
  echo "bootstrap: .venv exists and is not the cached venv; using it as is"
  venv=$(pwd)/.venv
else
  ln -sfn "$venv" .venv
fi
# Editable install of this clone (cheap): keeps the console script and imports pointed here.
.venv/bin/pip install -q --no-deps -e . >/dev/null
echo "bootstrap: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
