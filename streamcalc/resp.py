"""A small synchronous Redis client for the CLI's one-shot commands, so that they start fast.

``streamcalc send C=4`` in a shell loop should cost what ``redis-cli`` costs,
not the tenth of a second that importing redis-py takes (it imports asyncio,
TLS, its cluster client and more, whatever the command). This client is a
socket and hiredis' reply parser (already a dependency): it speaks RESP2 to
one Redis server over TCP or a Unix socket, with a password or ACL user and a
database number. Anything else (TLS, other URL options, a Redis Cluster's
MOVED/ASK replies, ``--cluster``) raises :class:`FullClientNeeded`
before anything was written, and the command runs on redis-py instead.

Only commands that are safe to run again after a :class:`FullClientNeeded`
(reads, or one write that Redis refused whole) use it.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from streamcalc.errors import RedisUnavailable, StreamcalcError
from streamcalc.settings import mask_url

#: Error replies that mean "ask another node" or "not now": redis-py knows what to do.
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


#: A command and its arguments.
Command = tuple[str | bytes | int, ...]


class FullClientNeeded(Exception):
    """This URL or server needs redis-py; nothing was written."""


class RedisReplyError(StreamcalcError):
    """Redis answered a command with an error (exit 1)."""


class QuickRedis:
    """One connection to one Redis server, opened on the first command (a context manager)."""

    def __init__(self, url: str, timeout: float = 10.0, *, cluster: bool = False) -> None:
        if cluster or os.environ.get("STREAMCALC_CLUSTER", "") not in ("", "0"):
            raise FullClientNeeded("cluster mode")
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.scheme not in ("redis", "unix") or set(query) - {"db", "password"}:
            raise FullClientNeeded("a URL only redis-py reads")
        self.url = url
        self.timeout = timeout
        self._unix = parts.path if parts.scheme == "unix" else None
        try:
            self._address = (parts.hostname or "localhost", parts.port or 6379)
            path_db = parts.path.lstrip("/") if parts.scheme == "redis" else ""
            self._db = int(query.get("db") or path_db or 0)
        except ValueError as exc:
            raise RedisUnavailable(f"bad Redis URL {mask_url(url)}: {exc}") from None
        self._user = unquote(parts.username) if parts.username else None
        password = query.get("password") or parts.password
        self._password = unquote(password) if password else None
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader()

    def execute(self, *args: str | bytes | int) -> Any:
        """One command's reply (bytes, int, list or None); an error reply raises."""
        return self.pipeline([args])[0]

    def pipeline(self, commands: list[Command]) -> list[Any]:
        """The replies of several commands sent at once, in order; any error reply raises."""
        sock = self._connect()
        replies = self._send(sock, commands)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                self._raise(str(reply))
        return replies

    def __enter__(self) -> QuickRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a later command opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        try:
            if self._unix is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self._unix)
            else:
                sock = socket.create_connection(self._address, timeout=min(self.timeout, 5.0))
                sock.settimeout(self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise RedisUnavailable(f"cannot reach Redis at {mask_url(self.url)}: {exc}") from None
        hello: list[Command] = []
        if self._password is not None:
            user = (self._user,) if self._user else ()
            hello.append(("AUTH", *user, self._password))
        if self._db:
            hello.append(("SELECT", self._db))
        for reply in self._send(sock, hello) if hello else []:
            if isinstance(reply, hiredis.ReplyError):
                sock.close()
                raise RedisUnavailable(f"Redis at {mask_url(self.url)} refused us: {reply}")
        self._sock = sock
        return sock

    def _send(self, sock: socket.socket, commands: list[Command]) -> list[Any]:
        try:
            # hiredis types its argument as a 1-tuple; it takes any number of arguments.
            packed = (hiredis.pack_command(command) for command in commands)  # type: ignore[arg-type]
            sock.sendall(b"".join(packed))
            replies: list[Any] = []
            while len(replies) < len(commands):
                reply = self._reader.gets()
                if reply is False:
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionError("connection closed by the server")
                    self._reader.feed(data)
                    continue
                replies.append(reply)
        except OSError as exc:
            self.close()
            raise RedisUnavailable(f"lost Redis at {mask_url(self.url)}: {exc}") from None
        return replies

    def _raise(self, message: str) -> None:
        if message.startswith(_REDIRECTS):
            raise FullClientNeeded(message)
        if message.startswith("NOAUTH"):
            self.close()
            raise RedisUnavailable(f"Redis at {mask_url(self.url)} refused us: {message}")
        raise RedisReplyError(f"redis error: {message}")
