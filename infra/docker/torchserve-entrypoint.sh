#!/usr/bin/env bash
# Serve /models/${TSMINDEX_MODEL_NAME:-tsm}.mar in the foreground. TorchServe writes its tokens to
# /srv/torchserve/key_file.json, a volume the API and workers mount read-only.
set -euo pipefail
run_dir=/srv/torchserve
archive="/models/${TSMINDEX_MODEL_NAME:-tsm}.mar"
[[ -f "$archive" ]] || { echo "no model archive at $archive" >&2; exit 1; }
mkdir -p "$run_dir/logs" "$run_dir/tmp"
eval "$(tsmindex model serve-config --archive "$archive" --out "$run_dir/config.properties")"
cd "$run_dir"
export TMPDIR="$run_dir/tmp" LOG_LOCATION="$run_dir/logs" METRICS_LOCATION="$run_dir/logs"
exec torchserve --foreground --ts-config "$run_dir/config.properties" --model-store /models \
    --models "$MODEL_NAME=$(basename "$archive")" --no-config-snapshots
