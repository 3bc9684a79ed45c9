"""Every option of the command line, each tied to its env var here and nowhere else.

:func:`option` names an option's environment variable ``STREAMCALC_<OPTION>``
(``--lease-ms`` reads ``STREAMCALC_LEASE_MS``); every command makes
its options with it, and the options most commands take are defined once below.
"""

from __future__ import annotations

from enum import StrEnum
from functools import partial
from typing import Annotated, Any

import typer

from streamcalc.durations import duration_ms
from streamcalc.errors import UsageError

ENV_PREFIX = "STREAMCALC_"

#: How a duration option is written; a bare number is refused (is it ms or s?), but 0 is 0.
DURATION_HELP = "a number and a unit: 500ms, 30s, 10m, 1h, 2d, 1w"


def env_var(flag: str, scope: str = "") -> str:
    """The env var of an option: ``--lease-ms`` (or ``--x/--no-x``) -> ``STREAMCALC_LEASE_MS``.

    A ``scope`` goes between prefix and name (``demo``: ``STREAMCALC_DEMO_NS``),
    for an option that must not follow the shared one of the same name.
    """
    name = flag.split("/")[0].lstrip("-").replace("-", "_").upper()
    return ENV_PREFIX + (f"{scope.upper()}_" if scope else "") + name


def option(flag: str, *decls: str, help: str | None = None, scope: str = "", **kw: Any) -> Any:
    """The typer option ``flag`` (and short ``decls``), also read from :func:`env_var`."""
    return typer.Option(flag, *decls, envvar=env_var(flag, scope), help=help, **kw)


def duration(text: str | int, flag: str) -> int:
    """Milliseconds of a duration option's text; a bad one is a UsageError (exit 2) naming it.

    An int is an option's default, already in milliseconds.
    """
    if isinstance(text, int):
        return text
    try:
        return duration_ms(text)
    except ValueError as exc:
        raise UsageError(f"bad {flag} {text!r}: {exc}") from None


def duration_option(flag: str, help: str, **kw: Any) -> Any:
    """An option whose value is a duration in ms (``--since 1h`` -> 3600000).

    A bad one is a UsageError (exit 2, one line) naming the option, raised
    while the command line is parsed.
    """
    return option(
        flag,
        help=f"{help} ({DURATION_HELP}).",
        parser=partial(duration, flag=flag),
        metavar="DURATION",
        **kw,
    )


class LogFormat(StrEnum):
    """``--log-format``: JSON lines, the console renderer, or auto (console on a terminal)."""

    auto = "auto"
    json = "json"
    console = "console"


class LogLevel(StrEnum):
    """``--log-level``: the least severe level logged."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class GraphFormat(StrEnum):
    """``graph show --format``."""

    text = "text"
    json = "json"
    dot = "dot"
    mermaid = "mermaid"


def choice_option(flag: str, help: str) -> Any:
    """An option of fixed choices (an Enum): listed in help, completed, any letter case."""
    return option(flag, help=help, case_sensitive=False)


RedisUrl = Annotated[
    str, option("--redis-url", metavar="URL", help="Redis URL (redis://, rediss://, unix://).")
]
Namespace = Annotated[
    str, option("--ns", metavar="NS", help="Namespace: its keys live under sc:{NS}:.")
]
JsonFlag = Annotated[bool, option("--json", help="Print JSON instead of text.")]
KeyOption = Annotated[
    str | None,
    option(
        "--key", metavar="KEY", help="Only this key's values (an entry's @key).", show_default=False
    ),
]
Plugins = Annotated[
    str,
    option(
        "--plugins",
        metavar="MODULES",
        help="Trusted plugin modules, comma-separated (each with its submodules); "
        "no other module is ever imported.",
    ),
]


def trusted(text: str) -> tuple[str, ...]:
    """The modules of a ``--plugins`` option; a bad one is a UsageError (exit 2)."""
    from streamcalc.graph.plugins import trusted_modules

    try:
        return trusted_modules(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
