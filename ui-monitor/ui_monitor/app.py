"""The monitor's HTTP side: routes of the Starlette app, nothing else.

Owns the endpoints: ``/`` and ``/static`` (the page, from files inside this
package), ``/api/stream`` (server-sent events: the dashboard view once a
second), ``/api/snapshot`` (the same view plus the raw status, JSON),
``/api/traces[?pool=workflow|failed|single&limit=N]`` (the trace list),
``/api/traces/{trace}`` (one trace's tree), ``/metrics`` (Prometheus text),
``/healthz`` (the process serves) and ``/readyz`` (a snapshot from the
orchestrator arrived within ``READY_AFTER_S``). It reads
:class:`~ui_monitor.state.MonitorState` under the lock the telemetry link
writes it under, and never touches a ZeroMQ socket.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .metrics import CONTENT_TYPE, Metrics
from .state import MonitorState

STATIC = Path(__file__).resolve().parent / "static"
READY_AFTER_S = 3.0  # a snapshot comes once a second: three missed and we are not ready
PUSH_EVERY_S = 1.0


def _json(doc: Any) -> str:
    return json.dumps(doc, default=str, separators=(",", ":"))


class Dashboard:
    """The shared, lock-guarded read side, with the view cached for half a push period
    so that many open pages cost one computation."""

    def __init__(
        self,
        state: MonitorState,
        metrics: Metrics,
        lock: threading.Lock,
        clock: Callable[[], float],
    ) -> None:
        self.state, self.metrics, self.lock, self.clock = state, metrics, lock, clock
        self._cached: tuple[float, str] | None = None

    def view_json(self) -> str:
        now = self.clock()
        if self._cached is not None and now - self._cached[0] < PUSH_EVERY_S / 2:
            return self._cached[1]
        with self.lock:
            text = _json(self.state.view(now))
        self._cached = (now, text)
        return text

    def ready(self) -> bool:
        with self.lock:
            return self.state.ready(self.clock(), READY_AFTER_S)


def create_app(
    board: Dashboard,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
) -> Starlette:
    async def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def stream(request: Request) -> Response:
        async def views() -> AsyncIterator[dict[str, str]]:
            while not await request.is_disconnected():
                yield {"event": "view", "data": board.view_json()}
                await asyncio.sleep(PUSH_EVERY_S)

        return EventSourceResponse(views(), ping=15, send_timeout=10)

    async def snapshot(_: Request) -> Response:
        with board.lock:
            now = board.clock()
            doc = {**board.state.view(now), "status": board.state.status}
        return Response(_json(doc), media_type="application/json")

    async def traces(request: Request) -> Response:
        try:
            limit = min(1000, int(request.query_params.get("limit", "50")))
        except ValueError:
            return JSONResponse({"error": "limit must be an integer"}, 400)
        pool = request.query_params.get("pool")
        with board.lock:
            return JSONResponse(board.state.traces.recent(limit, pool))

    async def trace(request: Request) -> Response:
        with board.lock:
            tree = board.state.traces.tree(request.path_params["trace"])
        if tree is None:
            return JSONResponse({"error": "unknown trace (never seen, or forgotten)"}, 404)
        return Response(_json(tree), media_type="application/json")

    async def metrics(_: Request) -> Response:
        with board.lock:
            body = board.metrics.render()
        return Response(body, media_type=CONTENT_TYPE)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(_: Request) -> Response:
        ready = board.ready()
        with board.lock:
            age = board.state.snapshot_age(board.clock())
        return JSONResponse({"ready": ready, "snapshot_age_s": age}, 200 if ready else 503)

    routes = [
        Route("/", index),
        Route("/api/stream", stream),
        Route("/api/snapshot", snapshot),
        Route("/api/traces", traces),
        Route("/api/traces/{trace:path}", trace),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
