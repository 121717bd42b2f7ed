"""Entry point of ``wasm-engine-ui-monitor``: settings, logging, the HTTP server.

Wires the parts together: one :class:`~ui_monitor.state.MonitorState`, its
:class:`~ui_monitor.metrics.Metrics`, the :class:`~ui_monitor.service.TelemetryLink`
thread (started and stopped with the app) and uvicorn serving
:func:`~ui_monitor.app.create_app` on ``monitor_host:monitor_port``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence

import uvicorn
from starlette.applications import Starlette

from wasm_engine import config
from wasm_engine.config import Settings
from wasm_engine.logs import setup_logging

from .app import Dashboard, create_app
from .metrics import Metrics
from .service import TelemetryLink
from .state import MonitorState

log = logging.getLogger("ui_monitor")


def build(settings: Settings) -> tuple[Starlette, TelemetryLink]:
    """The app and its (not yet started) telemetry link; the app's lifespan runs the link."""
    state, lock = MonitorState(), threading.Lock()
    metrics = Metrics(state, time.time)
    link = TelemetryLink(settings, state, metrics, lock)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        link.start()
        try:
            yield
        finally:
            link.stop()

    return create_app(Dashboard(state, metrics, lock, time.time), lifespan), link


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wasm-engine-ui-monitor", description=__doc__)
    config.add_arguments(parser, config.MONITOR_SETTINGS)
    settings = config.from_args(parser.parse_args(argv))
    setup_logging(settings.log_level, "ui-monitor")
    app, _ = build(settings)
    log.info("serving http://%s:%d/", settings.monitor_host, settings.monitor_port)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.monitor_host,
            port=settings.monitor_port,
            log_config=None,  # our logging set-up, not uvicorn's
            access_log=False,
            lifespan="on",
        )
    )
    server.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
