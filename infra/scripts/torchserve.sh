#!/usr/bin/env bash
# Run a local TorchServe for the tsmindex model archive, without Docker.
#
#   infra/scripts/torchserve.sh start [ARCHIVE.mar]   # default var/model-store/tsm.mar
#   infra/scripts/torchserve.sh status
#   infra/scripts/torchserve.sh stop
#
# start returns once a worker of the model is READY on the management API (/ping says Healthy while
# the worker is still loading). stop returns once every TorchServe process is gone.
# Everything of one server lives in its run directory (TSMINDEX_TORCHSERVE_RUN_DIR, default
# var/torchserve): config.properties, key_file.json (its tokens), logs/, tmp/ (pid file, extracted
# models). Addresses, batch size and workers come from the TSMINDEX_* settings.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="${TSMINDEX_TORCHSERVE_RUN_DIR:-$ROOT/var/torchserve}"
BIN="${TSMINDEX_BIN_DIR:-$ROOT/.venv/bin}"
READY_TIMEOUT_S="${TSMINDEX_TORCHSERVE_READY_TIMEOUT_S:-300}"
STOP_TIMEOUT_S="${TSMINDEX_TORCHSERVE_STOP_TIMEOUT_S:-60}"
PID_FILE="$RUN_DIR/tmp/.model_server.pid"  # TorchServe writes it under $TMPDIR
KEY_FILE="$RUN_DIR/key_file.json"

die() { echo "torchserve.sh: $*" >&2; exit 1; }

server_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

management_key() {
    "$BIN/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["management"]["key"])' "$KEY_FILE"
}

# 0 when at least one worker of the model reports READY.
worker_ready() {
    local key
    [[ -f "$KEY_FILE" ]] || return 1
    key="$(management_key 2>/dev/null)" || return 1
    curl -sf --max-time 5 -H "Authorization: Bearer $key" "$MANAGEMENT_URL/models/$MODEL_NAME" \
        | "$BIN/python" -c 'import json, sys; d = json.load(sys.stdin); sys.exit(0 if any(w.get("status") == "READY" for m in d for w in m.get("workers", [])) else 1)' 2>/dev/null
}

start() {
    local archive="${1:-$ROOT/var/model-store/tsm.mar}"
    [[ -f "$archive" ]] || die "no model archive at $archive (build one with: tsmindex model build)"
    archive="$(cd "$(dirname "$archive")" && pwd)/$(basename "$archive")"
    if pid="$(server_pid)"; then die "already running (pid $pid) in $RUN_DIR"; fi

    mkdir -p "$RUN_DIR/model-store" "$RUN_DIR/logs" "$RUN_DIR/tmp"
    rm -f "$KEY_FILE" "$PID_FILE"
    ln -sfn "$archive" "$RUN_DIR/model-store/$(basename "$archive")"
    local assignments
    assignments="$("$BIN/tsmindex" model serve-config --archive "$archive" --out "$RUN_DIR/config.properties")"
    eval "$assignments"  # MODEL_NAME, MANAGEMENT_URL, BATCH_SIZE
    echo "starting TorchServe: model $MODEL_NAME, batch size $BATCH_SIZE, run dir $RUN_DIR"

    # setsid: the server and its workers get their own process group, which stop waits on.
    # The malloc settings keep glibc from returning and re-mapping the large per-batch buffers.
    (
        cd "$RUN_DIR"
        export TMPDIR="$RUN_DIR/tmp" TEMP="$RUN_DIR/tmp" LOG_LOCATION="$RUN_DIR/logs" METRICS_LOCATION="$RUN_DIR/logs"
        export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 OMP_WAIT_POLICY=PASSIVE
        setsid "$BIN/torchserve" --start --ts-config "$RUN_DIR/config.properties" \
            --model-store "$RUN_DIR/model-store" --models "$MODEL_NAME=$(basename "$archive")" \
            --no-config-snapshots >"$RUN_DIR/logs/launcher.log" 2>&1 </dev/null
    )

    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until worker_ready; do
        if ! server_pid >/dev/null && ((SECONDS > 5)); then
            tail -n 40 "$RUN_DIR/logs/ts_log.log" "$RUN_DIR/logs/launcher.log" >&2 2>/dev/null || true
            die "TorchServe exited during start; logs in $RUN_DIR/logs"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 40 "$RUN_DIR/logs/model_log.log" >&2 2>/dev/null || true
            stop
            die "no worker READY within ${READY_TIMEOUT_S}s; logs in $RUN_DIR/logs"
        fi
        sleep 1
    done
    echo "TorchServe ready (pid $(server_pid)); tokens in $KEY_FILE"
}

stop() {
    local pid pgid
    if ! pid="$(server_pid)"; then
        echo "TorchServe is not running in $RUN_DIR"
        rm -f "$PID_FILE"
        return 0
    fi
    pgid="$(ps -o pgid= -p "$pid" | tr -d ' ')"
    kill -TERM "$pid"  # the frontend stops its workers on SIGTERM
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while pgrep -g "$pgid" >/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "TorchServe did not stop in ${STOP_TIMEOUT_S}s; killing process group $pgid" >&2
            kill -KILL -- "-$pgid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
        fi
        sleep 0.5
    done
    rm -f "$PID_FILE" "$KEY_FILE"
    echo "TorchServe stopped"
}

status() {
    local pid
    if pid="$(server_pid)"; then
        echo "running (pid $pid) in $RUN_DIR"
    else
        echo "not running in $RUN_DIR"
        return 3
    fi
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start [ARCHIVE.mar] | stop | status" ;;
esac
