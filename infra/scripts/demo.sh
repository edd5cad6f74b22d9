#!/usr/bin/env bash
# First run on a fresh machine: set up the environment, then index generated sample videos in
# embedded mode (one process: SQLite under var/, in-process inference) and print their labels.
# The model is TSMINDEX_CHECKPOINT_PATH when set (on sample videos), else the shipped motion model
# (model_store/weights/) on motion clips generated with a seed it was not trained on.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash infra/scripts/bootstrap.sh
exec .venv/bin/tsmindex demo "$@"
