"""wasm-engine: a local-first multi-agent runtime (common library and SDK).

``from wasm_engine import Client`` for the blocking SDK, ``AsyncClient`` for asyncio.
"""

from .client import AgentRef, AsyncClient, Client, Result, TaskFuture
from .errors import WasmEngineError

__all__ = ["AgentRef", "AsyncClient", "Client", "Result", "TaskFuture", "WasmEngineError"]
__version__ = "0.1.0"
