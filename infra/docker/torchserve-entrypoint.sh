#!/usr/bin/env bash
# Serve /models/${TSMINDEX_MODEL_NAME:-tsm}.mar in the foreground. TorchServe writes its tokens to
# /srv/torchserve/key_file.json (this container's alone); the inference key is copied to
# /srv/inference/key_file.json, the one volume the API and workers mount (read-only).
set -euo pipefail
run_dir=/srv/torchserve
archive="/models/${TSMINDEX_MODEL_NAME:-tsm}.mar"
[[ -f "$archive" ]] || { echo "no model archive at $archive" >&2; exit 1; }
mkdir -p "$run_dir/logs" "$run_dir/tmp"
eval "$(tsmindex model serve-config --archive "$archive" --out "$run_dir/config.properties")"
# The API and workers mount /srv/inference: give them the inference key alone, copied once TorchServe
# has written this start's keys (a stale copy of an earlier start is removed first).
rm -f "$run_dir/key_file.json" /srv/inference/key_file.json
(
    while [[ ! -s "$run_dir/key_file.json" ]]; do sleep 1; done
    umask 022
    python -c 'import json, sys; k = json.load(open(sys.argv[1]))["inference"]; json.dump({"inference": k}, sys.stdout)' \
        "$run_dir/key_file.json" >/srv/inference/key_file.json.tmp
    mv /srv/inference/key_file.json.tmp /srv/inference/key_file.json
) &
cd "$run_dir"
export TMPDIR="$run_dir/tmp" LOG_LOCATION="$run_dir/logs" METRICS_LOCATION="$run_dir/logs"
exec torchserve --foreground --ts-config "$run_dir/config.properties" --model-store /models \
    --models "$MODEL_NAME=$(basename "$archive")" --no-config-snapshots
