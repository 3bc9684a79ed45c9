"""One frozen settings object, built from CLI options and ``STREAMCALC_*`` environment variables."""

from __future__ import annotations

import re

import msgspec

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_NS = "default"
DEFAULT_GROUP = "streamcalc"
#: Longest a plugin function may run, in seconds (0 = no limit).
DEFAULT_FUNCTION_TIMEOUT_S = 1.0

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-z+]+://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and messages)."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a worker or a command needs to know; immutable once built."""

    redis_url: str = DEFAULT_REDIS_URL
    ns: str = DEFAULT_NS
    group: str = DEFAULT_GROUP
    consumer: str = ""
    batch: int = 500
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    metrics_port: int | None = None
    log_format: str = "auto"
    wait_s: float = 30.0
    export_values: bool = False
    heartbeat_file: str = ""
    retain_ms: int | None = None
    retain_len: int | None = None
    stuck_after_s: float = 60.0
    lease_ms: int = 10_000
    """How long a partition's lease lasts unless its owner renews it (S12)."""
    cache_keys: int = 100_000
    """Most keys whose slot state a worker keeps in memory, per partition it owns (S11)."""
    function_timeout_s: float = DEFAULT_FUNCTION_TIMEOUT_S
    max_future_ms: int = 5 * 60_000
    """How far an entry's ``@ts`` may lie ahead of its ID time (0: no limit)."""
    plugins: tuple[str, ...] = ()
    """Modules (and their submodules) whose plugin functions this worker imports and runs."""

    @property
    def stuck_after(self) -> float:
        """Seconds without progress after which ``/healthz`` calls a worker stuck."""
        return max(self.stuck_after_s, 10 * self.block_ms / 1000)

    @property
    def safe_url(self) -> str:
        """The Redis URL with its password masked."""
        return mask_url(self.redis_url)
