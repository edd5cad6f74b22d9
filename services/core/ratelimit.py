"""Per-key request rate and concurrent-upload limits, shared by every API replica through Redis.

The rate is a GCRA (generic cell rate algorithm): one Redis key per API key holds the theoretical
arrival time of the next request, so a key may burst up to its per-minute allowance and then gets one
request every ``60 / limit`` seconds. Redis's own clock is used so replicas never disagree.

Uploads in progress are members of a sorted set scored by their expiry: a replica that dies mid-upload
frees its slot when the expiry passes, never holding it for ever.

A synchronous client, called from a worker thread: its connection pool is not bound to one event loop.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS[1]: the key's TAT (ms). ARGV: interval ms, burst. Returns {allowed, retry_after_ms}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local excess = new_tat - now - burst * interval
if excess > 0 then return {0, excess} end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, 0}
"""

# KEYS[1]: the key's uploads. ARGV: token, cap, ttl ms. Returns {allowed, retry_after_ms}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return {0, 1000} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, 0}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0  # whole seconds, as the Retry-After header wants


ALLOW = Decision(True)


def _decision(reply: list[int]) -> Decision:
    allowed, retry_ms = int(reply[0]), int(reply[1])
    return Decision(bool(allowed), max(1, math.ceil(retry_ms / 1000)) if not allowed else 0)


class RateLimiter:
    """Limits per API key: ``per_minute`` requests (0: none) and ``max_uploads`` at once (0: none).

    If Redis cannot be reached the request is let through and the failure logged: an outage of the
    limiter must not take the API down with it."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        per_minute: int,
        max_uploads: int,
        upload_ttl_s: float,
        prefix: str = "tsmindex",
    ) -> None:
        self.client = client
        self.per_minute = per_minute
        self.max_uploads = max_uploads
        self.upload_ttl_ms = int(upload_ttl_s * 1000)
        self.prefix = prefix
        self._gcra = client.register_script(_GCRA)
        self._acquire = client.register_script(_ACQUIRE)

    def hit(self, key_id: str) -> Decision:
        """Count one request of ``key_id``."""
        if self.per_minute <= 0:
            return ALLOW
        interval_ms = 60_000 / self.per_minute
        try:
            reply = self._gcra(keys=[f"{self.prefix}:rate:{key_id}"], args=[interval_ms, self.per_minute])
        except RedisError as exc:
            log.warning("rate limiter unavailable, request allowed: %s", type(exc).__name__)
            return ALLOW
        return _decision(reply)

    def acquire_upload(self, key_id: str, token: str) -> Decision:
        """Take one of ``key_id``'s upload slots under ``token`` (release it with the same token)."""
        if self.max_uploads <= 0:
            return ALLOW
        try:
            reply = self._acquire(
                keys=[f"{self.prefix}:uploads:{key_id}"], args=[token, self.max_uploads, self.upload_ttl_ms]
            )
        except RedisError as exc:
            log.warning("upload limiter unavailable, upload allowed: %s", type(exc).__name__)
            return ALLOW
        return _decision(reply)

    def release_upload(self, key_id: str, token: str) -> None:
        if self.max_uploads <= 0:
            return
        try:
            self.client.zrem(f"{self.prefix}:uploads:{key_id}", token)
        except RedisError as exc:  # the slot expires on its own
            log.warning("upload slot not released: %s", type(exc).__name__)
