"""The one constructor of the worker's typed errors: :func:`failure`.

:class:`~wasm_engine.errors.WasmEngineError` with its detail as keywords. It
lives alone, importing nothing of :mod:`wasm_worker`, so that :mod:`.agent`,
:mod:`.hostagent`, :mod:`.hostcalls`, :mod:`.childcalls` and :mod:`.runtime`
share it without an import cycle.
"""

from __future__ import annotations

from typing import Any

from wasm_engine.errors import WasmEngineError


def failure(code: str, message: str, **detail: Any) -> WasmEngineError:
    return WasmEngineError(code, message, detail=detail)
