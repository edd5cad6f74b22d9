#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine and run them:
#   venv + dependencies, PostgreSQL and Redis up. TorchServe, the S3-compatible server and
#   Prometheus are started by the test fixtures themselves (real processes on loopback).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash infra/scripts/bootstrap.sh
bash infra/scripts/services.sh
if ! command -v prometheus >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test: installing Debian's prometheus package"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null || echo "test: prometheus install failed"
fi
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
exec .venv/bin/python -m pytest "$@"
