#!/usr/bin/env bash
# The whole platform on this machine without Docker, against the local Redis and PostgreSQL:
#
#   infra/scripts/stack.sh up       # Redis (append-only), S3-compatible server (moto), TorchServe, API,
#                                   # Celery worker(s)
#   infra/scripts/stack.sh status
#   infra/scripts/stack.sh down     # returns once every process it started has exited
#
# Settings are the TSMINDEX_* variables (services/core/config.py). Development defaults, with
# generated secrets, are written once to $STACK_DIR/env; variables already set win over them.
#   TSMINDEX_STACK_DIR         pid files, logs, env, the API key created on first up (default var/stack)
#   TSMINDEX_STACK_COMPONENTS  what to start (default "redis s3 torchserve api worker"; drop torchserve
#                              or redis to use a server that is already running)
#   TSMINDEX_STACK_ARCHIVE     model archive (default var/model-store/tsm.mar, built on first up from
#                              TSMINDEX_CHECKPOINT_PATH, else from TSMINDEX_STACK_MODEL)
#   TSMINDEX_STACK_MODEL       a known model (`tsmindex models`; default TSMINDEX_DEFAULT_MODEL, the
#                              published Kinetics-400 TSM-R50, downloaded once), or "random" (offline
#                              pipeline checks: random weights, arbitrary labels)
#   TSMINDEX_STACK_WORKERS     worker processes (default 1)
#
# The stack's Redis is the broker: it runs with append-only persistence (as in docker-compose.yml) in
# $STACK_DIR/redis, on TSMINDEX_REDIS_URL's port (6390 by default, beside a system Redis on 6379), so a
# restart of it keeps the queued jobs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="${TSMINDEX_STACK_DIR:-$ROOT/var/stack}"
BIN="${TSMINDEX_BIN_DIR:-$ROOT/.venv/bin}"
COMPONENTS="${TSMINDEX_STACK_COMPONENTS:-redis s3 torchserve api worker}"
ARCHIVE="${TSMINDEX_STACK_ARCHIVE:-$ROOT/var/model-store/tsm.mar}"
WORKERS="${TSMINDEX_STACK_WORKERS:-1}"
MODEL="${TSMINDEX_STACK_MODEL:-}"
READY_TIMEOUT_S="${TSMINDEX_STACK_READY_TIMEOUT_S:-120}"
STOP_TIMEOUT_S="${TSMINDEX_STACK_STOP_TIMEOUT_S:-60}"
export TSMINDEX_TORCHSERVE_RUN_DIR="${TSMINDEX_TORCHSERVE_RUN_DIR:-$STACK_DIR/torchserve}"

die() { echo "stack.sh: $*" >&2; exit 1; }
has() { [[ " $COMPONENTS " == *" $1 "* ]]; }
port_of() { "$BIN/python" -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(p.port or 80)' "$1"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

load_env() {
    mkdir -p "$STACK_DIR/logs"
    if [[ ! -f "$STACK_DIR/env" ]]; then
        local secret
        secret() { "$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(24))'; }
        # Secrets: readable by this user only, from the moment the file exists.
        (umask 077 && : >"$STACK_DIR/env")
        cat >"$STACK_DIR/env" <<ENV
# Development settings of the local stack (generated; edit freely). Set variables win.
: "\${TSMINDEX_MODE:=platform}"
: "\${TSMINDEX_DATA_DIR:=$ROOT/var}"
: "\${TSMINDEX_API_KEYS_PEPPER:=$(secret)}"
: "\${TSMINDEX_WEBHOOK_SECRET:=$("$BIN/python" -c 'import base64, secrets; print("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())')}"
: "\${TSMINDEX_DATABASE_URL:=postgresql+psycopg://postgres@127.0.0.1:5432/tsmindex}"
: "\${TSMINDEX_REDIS_URL:=redis://127.0.0.1:6390/0}"
: "\${TSMINDEX_STORAGE_BACKEND:=s3}"
: "\${TSMINDEX_S3_ENDPOINT_URL:=http://127.0.0.1:9000}"
: "\${TSMINDEX_S3_BUCKET:=tsmindex}"
: "\${TSMINDEX_S3_ACCESS_KEY_ID:=dev}"
: "\${TSMINDEX_S3_SECRET_ACCESS_KEY:=$(secret)}"
: "\${TSMINDEX_INFERENCE_BACKEND:=torchserve}"
: "\${TSMINDEX_API_HOST:=127.0.0.1}"
: "\${TSMINDEX_API_PORT:=8000}"
ENV
    fi
    chmod 600 "$STACK_DIR/env"  # one written world-readable by an earlier version
    [[ ! -f "$STACK_DIR/api-key" ]] || chmod 600 "$STACK_DIR/api-key"
    # shellcheck disable=SC1091
    source "$STACK_DIR/env"
    : "${TSMINDEX_TORCHSERVE_KEY_FILE:=$TSMINDEX_TORCHSERVE_RUN_DIR/key_file.json}"
    export "${!TSMINDEX_@}"
}

pid_alive() { [[ -f "$STACK_DIR/$1.pid" ]] && kill -0 "$(cat "$STACK_DIR/$1.pid")" 2>/dev/null; }

# launch NAME COMMAND...: its own session (process group), pid file, log.
launch() {
    local name=$1; shift
    if pid_alive "$name"; then echo "$name already running (pid $(cat "$STACK_DIR/$name.pid"))"; return 0; fi
    (cd "$ROOT" && exec setsid "$@" >"$STACK_DIR/logs/$name.log" 2>&1 </dev/null) &
    echo $! >"$STACK_DIR/$name.pid"
}

wait_for() {  # wait_for NAME TEST...
    local name=$1; shift
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until "$@"; do
        if ! pid_alive "$name"; then tail -n 30 "$STACK_DIR/logs/$name.log" >&2; die "$name exited during start"; fi
        ((SECONDS < deadline)) || { tail -n 30 "$STACK_DIR/logs/$name.log" >&2; die "$name not ready in ${READY_TIMEOUT_S}s"; }
        sleep 0.5
    done
}

stop_one() {
    local name=$1 pid
    [[ -f "$STACK_DIR/$name.pid" ]] || return 0
    pid="$(cat "$STACK_DIR/$name.pid")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"  # the whole group: Celery's children too
        local deadline=$((SECONDS + STOP_TIMEOUT_S))
        while pgrep -g "$pid" >/dev/null || kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                echo "$name did not stop in ${STOP_TIMEOUT_S}s; killing it" >&2
                kill -KILL -- "-$pid" 2>/dev/null || true
                deadline=$((SECONDS + 10))
            fi
            sleep 0.2
        done
    fi
    rm -f "$STACK_DIR/$name.pid"
    echo "$name stopped"
}

key_known() {
    "$BIN/python" - "$1" <<'PY'
import sys
from sqlalchemy import select
from services.core.apikeys import pepper
from services.core.config import get_settings
from services.core.db import create_db_engine, session_factory
from services.core.models import ApiKey
from services.core.security import hash_api_key

settings = get_settings()
key = open(sys.argv[1]).read().strip()
engine = create_db_engine(settings.resolved_database_url)
with session_factory(engine)() as session:
    found = session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_api_key(key, pepper(settings))))
sys.exit(0 if found else 1)
PY
}

ensure_archive() {
    [[ -f "$ARCHIVE" ]] && return 0
    local source=()  # none: model build takes TSMINDEX_DEFAULT_MODEL
    [[ -n "$MODEL" ]] && source=(--model "$MODEL")
    if [[ -n "${TSMINDEX_CHECKPOINT_PATH:-}" ]]; then
        source=(--checkpoint "$TSMINDEX_CHECKPOINT_PATH")
    elif [[ "$MODEL" == random ]]; then
        local checkpoint="$TSMINDEX_DATA_DIR/models/tsm-random.pt"
        [[ -f "$checkpoint" ]] || "$BIN/python" -c 'import sys; from pathlib import Path; from workers.demo import write_random_checkpoint; write_random_checkpoint(Path(sys.argv[1]))' "$checkpoint"
        echo "model: random-init model ($checkpoint): labels are arbitrary; for the pipeline only"
        source=(--checkpoint "$checkpoint")
    else
        echo "model: ${MODEL:-the default known model} (downloaded once into the model cache)"
    fi
    "$BIN/tsmindex" model build "${source[@]}" --out "$(dirname "$ARCHIVE")" \
        --model-name "$(basename "$ARCHIVE" .mar)" || die "no model archive (see above)"
}

# The broker with append-only persistence: a queued job survives a restart of Redis.
start_redis() {
    local port; port="$(port_of "$TSMINDEX_REDIS_URL")"
    if ! pid_alive redis && port_open "$port"; then
        local aof; aof="$(redis-cli -p "$port" config get appendonly 2>/dev/null | tail -1)"
        echo "redis: a server not started by stack.sh listens on $port (appendonly: ${aof:-unknown}); using it"
        [[ "$aof" == yes ]] || echo "redis: WARNING: without appendonly a restart of it loses the queued jobs" >&2
        return 0
    fi
    mkdir -p "$STACK_DIR/redis"
    launch redis redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes \
        --appendfsync everysec --dir "$STACK_DIR/redis"
    wait_for redis port_open "$port"
    echo "redis ready on 127.0.0.1:$port (append-only file in $STACK_DIR/redis)"
}

up() {
    load_env
    if [[ -z "${TSMINDEX_STACK_SKIP_SERVICES:-}" ]]; then bash "$ROOT/infra/scripts/services.sh"; fi

    if has redis; then start_redis; fi

    if has s3; then
        local s3_port; s3_port="$(port_of "$TSMINDEX_S3_ENDPOINT_URL")"
        launch s3 "$BIN/moto_server" -H 127.0.0.1 -p "$s3_port"
        wait_for s3 port_open "$s3_port"
        "$BIN/python" - <<'PY'
import boto3, os
s3 = boto3.client("s3", endpoint_url=os.environ["TSMINDEX_S3_ENDPOINT_URL"], region_name="us-east-1",
                  aws_access_key_id=os.environ["TSMINDEX_S3_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["TSMINDEX_S3_SECRET_ACCESS_KEY"])
if os.environ["TSMINDEX_S3_BUCKET"] not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
    s3.create_bucket(Bucket=os.environ["TSMINDEX_S3_BUCKET"])
PY
        echo "s3 ready at $TSMINDEX_S3_ENDPOINT_URL (bucket $TSMINDEX_S3_BUCKET)"
    fi

    if has torchserve; then
        ensure_archive
        if ! bash "$ROOT/infra/scripts/torchserve.sh" status >/dev/null; then
            bash "$ROOT/infra/scripts/torchserve.sh" start "$ARCHIVE"
        fi
    fi
    if [[ -f "$ARCHIVE" && -z "${TSMINDEX_MODEL_VERSION:-}" ]]; then
        eval "$("$BIN/tsmindex" archive-env "$ARCHIVE")"  # feed clips the way the served model expects
    fi

    "$BIN/python" - <<'PY'
import os, psycopg
from sqlalchemy.engine import make_url
url = make_url(os.environ["TSMINDEX_DATABASE_URL"])
if url.get_backend_name() == "postgresql":
    admin = f"host={url.host or '127.0.0.1'} port={url.port or 5432} user={url.username or 'postgres'} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)).fetchone():
            conn.execute(f'CREATE DATABASE "{url.database}"')
PY
    "$BIN/tsmindex" db upgrade
    if [[ -f "$ARCHIVE" && "$TSMINDEX_INFERENCE_BACKEND" == torchserve ]]; then
        # The served version is the truth for every submitter (a shell, cron, another host), not an env.
        "$BIN/tsmindex" models register "$ARCHIVE"
    fi
    if [[ -f "$STACK_DIR/api-key" ]] && ! key_known "$STACK_DIR/api-key"; then
        rm -f "$STACK_DIR/api-key"  # a key of a database that is gone
    fi
    if [[ ! -f "$STACK_DIR/api-key" ]]; then
        (umask 077 && "$BIN/tsmindex" apikey create stack >"$STACK_DIR/api-key")
    fi

    if has api; then
        launch api "$BIN/python" -m uvicorn workers.api_app:create_app --factory \
            --host "$TSMINDEX_API_HOST" --port "$TSMINDEX_API_PORT"
        wait_for api curl -sf -o /dev/null "http://$TSMINDEX_API_HOST:$TSMINDEX_API_PORT/healthz"
        echo "api ready at http://$TSMINDEX_API_HOST:$TSMINDEX_API_PORT (docs at /docs)"
    fi
    if has worker; then
        # Prefork children share their metrics through files (served on TSMINDEX_WORKER_METRICS_PORT).
        mkdir -p "$STACK_DIR/worker-metrics"
        launch worker env PROMETHEUS_MULTIPROC_DIR="$STACK_DIR/worker-metrics" \
            "$BIN/celery" -A workers.celery_app worker --pool=prefork -c "$WORKERS" -Q index \
            --loglevel=INFO -n "tsmindex-$$@%h"
        wait_for worker grep -q " ready\." "$STACK_DIR/logs/worker.log"
        echo "worker ready ($WORKERS process(es))"
    fi
    echo "API key: $(cat "$STACK_DIR/api-key")  (also in $STACK_DIR/api-key); logs in $STACK_DIR/logs"
}

down() {
    load_env
    stop_one worker
    stop_one api
    if has torchserve; then bash "$ROOT/infra/scripts/torchserve.sh" stop; fi
    stop_one s3
    stop_one redis
}

status() {
    load_env
    local rc=0 name
    for name in redis s3 api worker; do
        if pid_alive "$name"; then echo "$name: running (pid $(cat "$STACK_DIR/$name.pid"))"
        elif [[ $name == redis ]] && has redis && port_open "$(port_of "$TSMINDEX_REDIS_URL")"; then
            echo "redis: running (not started by stack.sh)"
        elif has "$name"; then echo "$name: not running"; rc=3; fi
    done
    if has torchserve; then
        echo -n "torchserve: "; bash "$ROOT/infra/scripts/torchserve.sh" status || rc=3
    fi
    return $rc
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: $0 up | down | status" ;;
esac
