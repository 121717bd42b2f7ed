"""Error codes and the one exception type that carries them.

Errors are data on the wire: an ``error`` message whose body is
``{code, message, retryable, detail}``. Codes are dotted and stable; this module
owns the list. Every process raises :class:`WasmEngineError` (or a subclass)
internally and turns it into that body at its edge.
"""

from __future__ import annotations

from typing import Any, Final

# -- protocol ------------------------------------------------------------------
PROTO_BAD_FRAME: Final = "proto.bad_frame"  # wrong frame count / layout, unreadable header
PROTO_VERSION: Final = "proto.version"  # a known magic or header.v with another major
PROTO_BAD_MSGPACK: Final = "proto.bad_msgpack"  # a frame that is not one msgpack map
PROTO_BAD_FIELD: Final = "proto.bad_field"  # missing field, wrong type, bad value
PROTO_UNKNOWN_TYPE: Final = "proto.unknown_type"  # header.type not in the registry
PROTO_TOO_LARGE: Final = "proto.too_large"  # a frame or message over its size limit
PROTO_UNEXPECTED: Final = "proto.unexpected"  # a known type sent to a socket that does not take it
# -- tasks ---------------------------------------------------------------------
TASK_OVERLOADED: Final = "task.overloaded"  # queue full: retry later
TASK_DEADLINE: Final = "task.deadline"  # deadline passed before the task finished
TASK_WORKER_LOST: Final = "task.worker_lost"  # its worker died on every attempt
TASK_CONFLICT: Final = "task.conflict"  # task_id reused with a different body
TASK_CANCELLED: Final = "task.cancelled"
TASK_NOT_FOUND: Final = "task.not_found"
SESSION_LOST: Final = "session.lost"  # a session's instance is gone (worker died, idled out)
TASK_TOO_DEEP: Final = "task.too_deep"  # child requests nested past max_depth
# -- workers -------------------------------------------------------------------
WORKER_UNKNOWN: Final = "worker.unknown"  # a worker message before hello: say hello again
# -- agents --------------------------------------------------------------------
AGENT_BAD_MANIFEST: Final = "agent.bad_manifest"  # a manifest that is not valid (detail.field)
# -- wasm ----------------------------------------------------------------------
WASM_OUT_OF_FUEL: Final = "wasm.out_of_fuel"
WASM_MEMORY_LIMIT: Final = "wasm.memory_limit"
WASM_TRAP: Final = "wasm.trap"
WASM_BAD_MODULE: Final = "wasm.bad_module"
WASM_BAD_OUTPUT: Final = "wasm.bad_output"
WASM_OUTPUT_TOO_LARGE: Final = "wasm.output_too_large"
WASM_AGENT_MISSING: Final = "wasm.agent_missing"
WASM_CAPABILITY_DENIED: Final = "wasm.capability_denied"  # a host call not granted / not built
# -- inference -------------------------------------------------------------------
INFER_MODEL_MISSING: Final = "infer.model_missing"  # no such model in the repository (or not built)
INFER_DEVICE_UNAVAILABLE: Final = "infer.device_unavailable"  # require_gpu without a usable GPU
INFER_BAD_INPUT: Final = "infer.bad_input"  # wrong input name, dtype, rank or shape; bad params
INFER_BAD_MODEL: Final = "infer.bad_model"  # a model file or model config that cannot be loaded
INFER_PROMPT_TOO_LONG: Final = "infer.prompt_too_long"  # prompt does not fit the context
INFER_BUILD_FAILED: Final = "infer.build_failed"  # `models build` failed; detail.log_tail says why
# -- tensor plane (docs/tensors.md) --------------------------------------------
SHM_STALE_HANDLE: Final = "shm.stale_handle"  # slot reused/freed, or its segment is gone
SHM_BAD_HANDLE: Final = "shm.bad_handle"  # malformed handle, out of bounds, nbytes != shape
SHM_FOREIGN_NAMESPACE: Final = "shm.foreign_namespace"  # a handle into another /dev/shm
SHM_ARENA_FULL: Final = "shm.arena_full"  # no free slot: retry after frees (backpressure)
SHM_INLINE_TOO_LARGE: Final = "shm.inline_too_large"  # an inline tensor over its cap
SHM_TOO_SMALL: Final = "shm.too_small"  # preflight: /dev/shm cannot hold the arena
# -- client side ----------------------------------------------------------------
CLIENT_TIMEOUT: Final = "client.timeout"  # the SDK gave up waiting; the task may still run
INTERNAL: Final = "internal"

#: Codes a client may retry without changing anything.
RETRYABLE: Final = frozenset({TASK_OVERLOADED, TASK_WORKER_LOST, CLIENT_TIMEOUT, SHM_ARENA_FULL})


class WasmEngineError(Exception):
    """An error with a stable dotted ``code``; the Python face of an ``error`` message."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = code in RETRYABLE if retryable is None else retryable
        self.detail: dict[str, Any] = detail or {}

    def to_body(self) -> dict[str, Any]:
        """The wire body of an ``error`` message."""
        return {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "detail": self.detail,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> WasmEngineError:
        """Rebuild from an ``error`` body (already validated by ``messages``)."""
        return cls(
            str(body.get("code", INTERNAL)),
            str(body.get("message", "")),
            retryable=bool(body.get("retryable", False)),
            detail=dict(body.get("detail") or {}),
        )


class ProtocolError(WasmEngineError):
    """A frame or message that breaks the wire contract (codes ``proto.*``)."""
