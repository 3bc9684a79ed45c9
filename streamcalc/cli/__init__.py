"""The ``streamcalc`` command line: a thin layer over the library.

Exit codes: 0 ok; 2 bad usage or invalid input; 1 runtime failure (Redis
unreachable, ...). Every failure is one line on stderr, never a traceback
(``STREAMCALC_DEBUG=1`` shows one for bug reports), and typer's own usage
errors are one line too, not boxes.

One module a command group (``graph``, ``send``, ``worker``, ``values``,
``status``, ``history`` with ``tail``, ``dead``, ``trim``, ``demo``); every
option and its env var in :mod:`streamcalc.cli.options`; settings, client and
output in :mod:`streamcalc.cli.helpers`; the app that gathers the commands in
:mod:`streamcalc.cli.app`. Here only the entry point.

Start-up time matters (``send`` in a shell loop): nothing here or in the
command modules imports redis, the graph package or the ops at module level;
each command imports what it needs when it runs.
"""

from __future__ import annotations

import os
import re
import sys

import typer
from typer._click.exceptions import ClickException

from streamcalc.cli.app import app, app_for
from streamcalc.errors import StreamcalcError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app; every error becomes one line and an exit code."""
    debug = os.environ.get("STREAMCALC_DEBUG") == "1"
    try:
        args = sys.argv[1:] if argv is None else argv
        code = app_for(args)(args=args, prog_name="streamcalc", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ClickException as exc:  # typer's usage errors: one line, exit 2
        _error(_usage_message(exc))
        return exc.exit_code
    except typer.Abort:
        return 130
    except StreamcalcError as exc:
        if debug:
            raise
        _error(f"streamcalc: error: {_one_line(str(exc))}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        return _unexpected(exc)
    return code if isinstance(code, int) else 0


def _unexpected(exc: Exception) -> int:
    """A Redis error (exit 1, URL masked) or a bug: still one line, with the way to see more."""
    from streamcalc.settings import mask_url

    redis = sys.modules.get("redis")  # only a command that imported redis can raise its errors
    if redis is not None and isinstance(exc, redis.RedisError):
        from streamcalc.redis_errors import describe  # the code redis-py drops, the node and slot

        _error(f"streamcalc: redis error: {_one_line(mask_url(describe(exc)))}")
        return 1
    message = _one_line(mask_url(f"{type(exc).__name__}: {exc}"))
    _error(f"streamcalc: internal error: {message} (STREAMCALC_DEBUG=1 for more)")
    return 1


def _usage_message(exc: ClickException) -> str:
    """``streamcalc: error: ... (see 'streamcalc worker --help')``, on one line."""
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"streamcalc: error: {_one_line(exc.format_message())}{hint}"


def _error(line: str) -> None:
    typer.echo(line, err=True)


def _one_line(text: str) -> str:
    """One line, with any other control character shown escaped (never sent to the terminal)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", " ".join(text.split()))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
