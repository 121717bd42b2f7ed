"""Entry point of ``wasm-engine-orchestrator``: settings, logging, signals."""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from typing import Any

from wasm_engine import config
from wasm_engine.logs import setup_logging

from .service import Orchestrator, serve

log = logging.getLogger("orchestrator")


def _install_signals(orch: Orchestrator) -> None:
    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        orch.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wasm-engine-orchestrator", description=__doc__)
    config.add_arguments(parser, config.ORCHESTRATOR_SETTINGS)
    settings = config.from_args(parser.parse_args(argv))
    setup_logging(settings.log_level, "orchestrator")
    serve(settings, _install_signals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
