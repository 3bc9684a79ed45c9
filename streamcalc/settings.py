"""One frozen settings object, built from CLI options and ``STREAMCALC_*`` environment variables."""

from __future__ import annotations

import re

import msgspec

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_NS = "default"
DEFAULT_GROUP = "streamcalc"
#: Longest a plugin function may run, in seconds (0 = no limit).
DEFAULT_FUNCTION_TIMEOUT_S = 1.0

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*")
_PASSWORD_PARAM = re.compile(r"(?i)([?&](?:password|pass|pwd)=)[^&#\s]*")


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (safe for logs).

    Masks user-info passwords in any letter case of the scheme, including ones
    that hold an unescaped ``@`` (the user-info ends at the last ``@`` of the
    authority), and ``password=`` (``pass=``, ``pwd=``) query parameters.
    """
    return _URL.sub(lambda m: _mask_one(m.group(0)), text)


def _mask_one(url: str) -> str:
    scheme, _, rest = url.partition("://")
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    authority, tail = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    at = authority.rfind("@")
    if at >= 0:
        userinfo, host = authority[:at], authority[at + 1 :]
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:***@{host}" if colon else f"***@{host}"
    return f"{scheme}://{authority}" + _PASSWORD_PARAM.sub(r"\1***", tail)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a worker or a command needs to know; immutable once built."""

    redis_url: str = DEFAULT_REDIS_URL
    cluster: bool = False
    """Treat the Redis URL as a Redis Cluster node without asking (``--cluster``)."""
    ns: str = DEFAULT_NS
    group: str = DEFAULT_GROUP
    consumer: str = ""
    batch: int = 500
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    """The interface of ``/metrics`` and ``/healthz`` (``127.0.0.1``: this host only)."""
    log_format: str = "auto"
    wait_s: float = 30.0
    export_values: bool = False
    heartbeat_file: str = ""
    retain_ms: int | None = None
    retain_len: int | None = None
    stuck_after_s: float = 60.0
    lease_ms: int = 10_000
    """How long a partition's lease lasts unless its owner renews it."""
    cache_keys: int = 100_000
    """Most keys whose slot state a worker keeps in memory, per partition it owns."""
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
