"""The live page's web app (Starlette): the page, its assets, and the JSON under ``/api/``.

Every route reads Redis through :class:`~streamcalc.ui.reader.Reader` (bounded
work per request) or answers from the :class:`~streamcalc.ui.sampler.Sampler`'s
memory. The app writes to Redis only through the two dead-letter actions, and
only when it was made with ``allow_actions``; they take a JSON body, which a
browser sends cross-site only after a CORS preflight this app never grants.
Served on a loopback address, it answers only requests for a loopback name.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import msgspec
import redis
import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from streamcalc.errors import StreamcalcError, UsageError
from streamcalc.ops import check_id, dead_purge, dead_retry, layout
from streamcalc.settings import mask_url
from streamcalc.ui.reader import Reader
from streamcalc.ui.sampler import Sampler, as_columns

_encoder = msgspec.json.Encoder()
_log = structlog.get_logger("streamcalc.ui")
STATIC = resources.files("streamcalc.ui") / "static"


class JSONResponse(Response):
    """A response of msgspec-encoded JSON (structs, lists, values)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def _error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


Handler = Callable[[Request], Any]


class _Refused(Exception):
    """An action the page was not started to allow (403)."""


def _json_route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Run a blocking handler in the thread pool; its errors become one-line JSON errors."""

    async def endpoint(request: Request) -> Response:
        try:
            result = await run_in_threadpool(handler, request)
        except _Refused as exc:
            return _error(403, str(exc))
        except UsageError as exc:
            return _error(400, str(exc))
        except StreamcalcError as exc:
            return _error(503, mask_url(str(exc)))
        except redis.RedisError as exc:
            return _error(503, mask_url(f"Redis: {exc}"))
        except Exception as exc:  # a bug: still one line of JSON, and a log line to report
            _log.exception("request failed", path=request.url.path)
            return _error(500, mask_url(f"internal error: {type(exc).__name__}: {exc}"))
        return result if isinstance(result, Response) else JSONResponse(result)

    return endpoint


class LivePage:
    """The routes of one namespace's page; :meth:`app` builds the Starlette app."""

    def __init__(
        self,
        reader: Reader,
        *,
        allow_actions: bool = False,
        redis_url: str = "",
        interval_s: float = 1.0,
        hosts: Sequence[str] | None = None,
    ) -> None:
        self.reader = reader
        self.allow_actions = allow_actions
        self.hosts = hosts
        self.redis_url = mask_url(redis_url)
        self.sampler = Sampler(reader, interval_s)

    def app(self) -> Starlette:
        """The Starlette app: ``/`` the page, ``/static`` its assets, ``/api/...`` the JSON."""
        api = [
            ("/api/meta", self.meta, ["GET"]),
            ("/api/graph", self.graph, ["GET"]),
            ("/api/values", self.values, ["GET"]),
            ("/api/node/{name}", self.node, ["GET"]),
            ("/api/status", self.status, ["GET"]),
            ("/api/series", self.series, ["GET"]),
            ("/api/dead", self.dead, ["GET"]),
            ("/api/keys", self.keys, ["GET"]),
            ("/api/live", self.live, ["GET"]),
        ]
        routes: list[Route | Mount] = [Route("/", self.index, methods=["GET"])]
        routes += [Route(path, _json_route(fn), methods=m) for path, fn, m in api]
        routes.append(Route("/api/dead/retry", self.retry, methods=["POST"]))
        routes.append(Route("/api/dead/purge", self.purge, methods=["POST"]))
        routes.append(Mount("/static", StaticFiles(directory=str(STATIC)), name="static"))
        # Only the names the page is served under: another site's name resolved to our
        # address (DNS rebinding) must not reach the page, let alone its actions.
        guard = (
            []
            if self.hosts is None
            else [Middleware(TrustedHostMiddleware, allowed_hosts=list(self.hosts))]
        )
        return Starlette(routes=routes, lifespan=self._lifespan, middleware=guard)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(self.sampler.start)
        try:
            yield
        finally:
            await run_in_threadpool(self.sampler.stop)

    async def index(self, request: Request) -> Response:
        """The page itself."""
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    def meta(self, request: Request) -> dict[str, Any]:
        """What the page shows in its header: namespace, Redis, whether actions are allowed."""
        return {
            "ns": self.reader.ns,
            "group": self.reader.group,
            "redis": self.redis_url,
            "allow_actions": self.allow_actions,
            "interval_ms": int(self.sampler.interval_s * 1000),
        }

    def graph(self, request: Request) -> Any:
        """The stored graph: every node with its kind, layer, arguments, formula and TTL."""
        return self.reader.graph()[1]

    def values(self, request: Request) -> Any:
        """Every node's latest value, age, freshness and slots for ``?key=`` (default: "")."""
        return self.reader.values(request.query_params.get("key", ""))

    def node(self, request: Request) -> Any:
        """One node for ``?key=``: slots, what it waits for, recent values."""
        return self.reader.node(request.path_params["name"], request.query_params.get("key", ""))

    def _overview(self) -> Any:
        overview, error = self.sampler.overview()
        if overview is None:
            raise StreamcalcError(error or "no sample of the namespace yet")
        return overview

    def status(self, request: Request) -> Any:
        """Partitions, owners, lag, pending, members and consumers (the newest sample)."""
        return self._overview().status

    def series(self, request: Request) -> Any:
        """The charts' samples as columns, after ``?since=`` ms (default: all kept)."""
        return as_columns(self.sampler.series(_int(request, "since", 0)))

    def dead(self, request: Request) -> Any:
        """The newest dead letters (newest first)."""
        return self._overview().dead_letters

    def keys(self, request: Request) -> Any:
        """``?prefix=``: a key search; without it, the key count, stalest and newest keys."""
        prefix = request.query_params.get("prefix")
        if prefix is None:
            return self._overview().keys
        return self.reader.search_keys(prefix, min(_int(request, "limit", 50), 500))

    def live(self, request: Request) -> Any:
        """One refresh of the page: values of ``?key=``, the newest sample, new chart points.

        Without ``key``, a keyed namespace whose empty key holds no value shows
        its most recently updated key.
        """
        overview, error = self.sampler.overview()
        key = request.query_params.get("key")
        if key is None:
            key = ""
            if overview is not None and overview.keys.newest:
                values = self.reader.values("")
                if all(n.ts is None for n in values.nodes.values()):
                    key = overview.keys.newest[0].key
        values = self.reader.values(key)
        return {
            "values": values,
            "overview": overview,
            "error": error,
            "series": as_columns(self.sampler.series(_int(request, "since", 0))),
        }

    def _action(self, request: Request, body: bytes) -> tuple[list[str] | None, Any]:
        if not self.allow_actions:
            raise _Refused("read-only: start the page with --allow-actions to change dead letters")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise UsageError("send the action as application/json")
        try:
            doc = msgspec.json.decode(body, type=_Action)
        except msgspec.DecodeError as exc:
            raise UsageError(f"bad action: {exc}") from None
        if doc.all == (doc.ids is not None):
            raise UsageError('give either "ids" or "all": true')
        ids = None if doc.all else [check_id(i) for i in doc.ids or []]
        return ids, layout(self.reader.client, self.reader.ns)

    async def _act(self, request: Request, act: Callable[[list[str] | None, Any], int]) -> Response:
        body = await request.body()

        def run(request: Request) -> Any:
            ids, shape = self._action(request, body)
            done = act(ids, shape)
            self.sampler.sample_once()
            return {"done": done}

        return await _json_route(run)(request)

    async def retry(self, request: Request) -> Response:
        """Re-queue dead letters: ``{"ids": [...]}`` or ``{"all": true}`` (only with actions)."""
        client = self.reader.client
        return await self._act(request, lambda ids, shape: dead_retry(client, shape, ids))

    async def purge(self, request: Request) -> Response:
        """Drop dead letters: ``{"ids": [...]}`` or ``{"all": true}`` (only with actions)."""
        client = self.reader.client
        return await self._act(request, lambda ids, shape: dead_purge(client, shape, ids))


class _Action(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ids: list[str] | None = None
    all: bool = False


def _int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"bad {name} {text!r}: expected an integer") from None
