"""The ``streamcalc`` command line (SPEC §5): a thin layer over the library.

Exit codes: 0 ok; 2 bad usage or invalid input; 1 runtime failure (Redis
unreachable, ...). Every failure is one line on stderr, never a traceback
(``STREAMCALC_DEBUG=1`` shows one for bug reports).

One module a command group (``graph``, ``send``, ``worker``, ``values``,
``status``, ``history`` with ``tail``, ``dead``, ``trim``, ``demo``); every
option and its env var in :mod:`streamcalc.cli.options`; settings, client and
output in :mod:`streamcalc.cli.helpers`; the app that gathers the commands in
:mod:`streamcalc.cli.app`. Here only the entry point.
"""

from __future__ import annotations

import os
import re

import redis
import typer

from streamcalc.cli.app import app
from streamcalc.errors import StreamcalcError
from streamcalc.settings import mask_url

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app; every error becomes one line and an exit code."""
    debug = os.environ.get("STREAMCALC_DEBUG") == "1"
    try:
        # Standalone mode: typer itself reports usage errors (exit 2) and --help (exit 0).
        app(args=argv, prog_name="streamcalc", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except StreamcalcError as exc:
        if debug:
            raise
        typer.echo(f"streamcalc: error: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    except redis.RedisError as exc:
        if debug:
            raise
        typer.echo(f"streamcalc: redis error: {_one_line(mask_url(str(exc)))}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, with the way to see more
        if debug:
            raise
        message = _one_line(mask_url(f"{type(exc).__name__}: {exc}"))
        typer.echo(f"streamcalc: internal error: {message} (STREAMCALC_DEBUG=1 for more)", err=True)
        return 1
    return 0


def _one_line(text: str) -> str:
    """One line, with any other control character shown escaped (never sent to the terminal)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", " ".join(text.split()))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
