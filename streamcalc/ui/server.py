"""Serve the live page with uvicorn until Ctrl-C or SIGTERM; both stop it cleanly."""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

import redis

from streamcalc.errors import StreamcalcError
from streamcalc.settings import DEFAULT_GROUP
from streamcalc.ui.app import LivePage
from streamcalc.ui.reader import Reader


class ListenError(StreamcalcError):
    """The page's address cannot be listened on (in use, not ours); exit code 1."""


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); ListenError when it fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, IndexError) as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def page_url(sock: socket.socket) -> str:
    """The page's address for a browser (an IPv6 host in brackets)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


#: The names a page listening on a loopback address answers to.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def _loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(
    client: redis.Redis,
    ns: str,
    sock: socket.socket,
    *,
    group: str = DEFAULT_GROUP,
    allow_actions: bool = False,
    redis_url: str = "",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the page of namespace ``ns`` on ``sock`` until Ctrl-C or SIGTERM, then return.

    ``on_ready`` is called with the page's URL once it is listening.
    """
    import uvicorn

    page = LivePage(
        Reader(client, ns, group),
        allow_actions=allow_actions,
        redis_url=redis_url,
        hosts=LOOPBACK_NAMES if _loopback(sock) else None,
    )
    config = uvicorn.Config(page.app(), log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(page_url(sock))
    # uvicorn re-raises the signal that stopped it once it is done: SIGTERM then
    # ends the process like Ctrl-C, through the callers' clean-up.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if main else None
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        sock.close()
