"""Entry point of ``wasm-engine-wasm-worker``: settings, runtime, worker loop, signals."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from wasm_engine import config
from wasm_engine.logs import setup_logging
from wasm_engine.tensors import process
from wasm_engine.worker_loop import WorkerLoop
from wasm_engine.worker_messages import worker_name

from .handler import WasmHandler
from .runtime import WasmRuntime

log = logging.getLogger("wasm_worker")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wasm-engine-wasm-worker", description=__doc__)
    config.add_arguments(parser, config.WASM_WORKER_SETTINGS)
    settings = config.from_args(parser.parse_args(argv))
    setup_logging(settings.log_level, "wasm-worker")
    # preflight, then the arena: agents publish into it (we.tensor_publish), the loop
    # announces its segments and frees its slots
    tensors = process.plane_for(settings, worker_name(settings, WasmHandler.kind))
    try:
        # compiled modules survive restarts: $WASM_ENGINE_HOME/cache/ (see DiskCache)
        runtime = WasmRuntime(cache_dir=Path(settings.home) / "cache")
        loop = WorkerLoop(settings, WasmHandler(runtime, tensors=tensors), tensors=tensors)
        try:
            return loop.run_until_signalled()
        finally:
            runtime.close()
    finally:
        tensors.close()  # unlinks the arena (the loop closes it too: closing twice is a no-op)


if __name__ == "__main__":
    raise SystemExit(main())
