#!/usr/bin/env bash
# Make sure the stateful services the platform and its tests use are up on loopback:
# PostgreSQL (5432) and Redis (6379). Starts them with the system's own packages where they are
# installed but not running; fails loudly where they are missing.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do port_open "$port" && return 0; sleep 0.5; done
  echo "services: $name did not come up on 127.0.0.1:$port" >&2
  return 1
}

if ! port_open 5432; then
  echo "services: starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  else
    echo "services: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1
  fi
  wait_port 5432 PostgreSQL
fi

if ! port_open 6379; then
  echo "services: starting Redis"
  command -v redis-server >/dev/null || { echo "services: redis-server is not installed" >&2; exit 1; }
  mkdir -p /tmp/tsmindex-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly yes \
    --dir /tmp/tsmindex-redis --logfile /tmp/tsmindex-redis/redis.log
  wait_port 6379 Redis
fi
echo "services: PostgreSQL and Redis are up"
