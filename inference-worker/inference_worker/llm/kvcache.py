"""The KV cache: one preallocated ``[max_batch, kv_heads, max_seq, head_dim]`` buffer per past /
present tensor, reused by every prefill and decode step (no per-step concatenation).

A request owns one row (slot) from prefill to finish. The model (onnxruntime-genai's
GroupQueryAttention) reads the valid length of each row from the attention mask and writes the new
keys/values in place when the past input and the present output are bound to the same memory,
so joining and leaving the batch costs no copy. On CUDA the buffers are device-resident OrtValues.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import onnxruntime as ort

from ..device import CPU
from .spec import LLMSpec


class KVCache:
    def __init__(self, spec: LLMSpec, max_batch: int, max_seq: int, device: str) -> None:
        self.names = spec.kv_names()
        self.max_batch, self.max_seq, self.device = max_batch, max_seq, device
        self.row_shape = (spec.kv_heads, max_seq, spec.head_dim)
        shape = (max_batch, *self.row_shape)
        self.row_bytes = int(np.prod(self.row_shape)) * 4  # float32
        self._arrays: list[np.ndarray[Any, Any]] = []
        self._values: list[ort.OrtValue] = []
        if device == CPU:  # np.zeros maps lazily: pages are touched only as rows fill up
            self._arrays = [np.zeros(shape, np.float32) for _ in self.names]
            self._ptrs = [int(a.ctypes.data) for a in self._arrays]
        else:
            self._values = [
                ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, device, 0)
                for _ in self.names
            ]
            self._ptrs = [int(v.data_ptr()) for v in self._values]
        self._free = list(range(max_batch))
        heapq.heapify(self._free)

    @property
    def bytes(self) -> int:
        return self.row_bytes * self.max_batch * len(self.names)

    def alloc(self) -> int | None:
        """The lowest free row, so the batch stays dense at the front; None when full."""
        return heapq.heappop(self._free) if self._free else None

    def release(self, slot: int) -> None:
        heapq.heappush(self._free, slot)

    @property
    def free(self) -> int:
        return len(self._free)

    def bind(self, io: ort.IOBinding, first: int, rows: int) -> None:
        """Bind rows ``first .. first+rows`` as both past input and present output (in place)."""
        shape = [rows, *self.row_shape]
        offset = first * self.row_bytes
        for (past, present), ptr in zip(self.names, self._ptrs, strict=True):
            io.bind_input(past, self.device, 0, np.float32, shape, ptr + offset)
            io.bind_output(present, self.device, 0, np.float32, shape, ptr + offset)
