"""Generation parameters of one request, checked once at ``add`` (bad ones: ``infer.bad_input``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wasm_engine.errors import INFER_BAD_INPUT, WasmEngineError

MAX_STOPS = 8
MAX_STOP_CHARS = 64


@dataclass(frozen=True)
class GenerateParams:
    """``temperature == 0`` is greedy; otherwise top-k (0 = off) then top-p, drawn from a numpy
    Generator seeded with ``seed``: the same seed and prompt give the same text."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        def bad(why: str) -> WasmEngineError:
            return WasmEngineError(INFER_BAD_INPUT, f"generate params: {why}")

        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise bad("max_tokens must be an integer")
        if self.max_tokens < 1:
            raise bad("max_tokens must be >= 1")
        if not isinstance(self.temperature, int | float) or not math.isfinite(self.temperature):
            raise bad("temperature must be a finite number")
        if self.temperature < 0:
            raise bad("temperature must be >= 0")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise bad("top_k must be an integer >= 0")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise bad("top_p must be in (0, 1]")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed must be an integer >= 0")
        if not isinstance(self.stop, tuple) or len(self.stop) > MAX_STOPS:
            raise bad(f"stop must be at most {MAX_STOPS} strings")
        for s in self.stop:
            if not isinstance(s, str) or not 0 < len(s) <= MAX_STOP_CHARS:
                raise bad(f"each stop sequence must be a string of 1..{MAX_STOP_CHARS} chars")

    @classmethod
    def from_mapping(cls, body: Mapping[str, Any]) -> GenerateParams:
        """From a request body (unknown keys are refused, so typos do not pass silently)."""
        known = {"max_tokens", "temperature", "top_k", "top_p", "seed", "stop"}
        extra = set(body) - known
        if extra:
            raise WasmEngineError(INFER_BAD_INPUT, f"unknown generate params: {sorted(extra)}")
        kwargs = dict(body)
        stop = kwargs.get("stop", ())
        if isinstance(stop, str):
            kwargs["stop"] = (stop,)
        elif isinstance(stop, Sequence):
            kwargs["stop"] = tuple(stop)
        return cls(**kwargs)
