"""Logging setup for the CLI (library code only asks structlog for loggers).

JSON lines when stderr is not a terminal, a console renderer when it is (in
colour, unless ``NO_COLOR`` is set); every string passes through
:func:`streamcalc.settings.mask_url`, so a Redis password never reaches a log line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from streamcalc.settings import mask_url


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and "@" in value:
            event[key] = mask_url(value)
    return event


def _colors() -> bool:
    """Colours on a terminal, unless NO_COLOR is set to anything but "" (no-color.org)."""
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog for this process: ``fmt`` is json, console or auto."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=_colors())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
