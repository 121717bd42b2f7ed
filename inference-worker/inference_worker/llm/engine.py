"""``LLMEngine``: continuous batched decode over one ONNX session, no sockets, no threads.

Requests ``add`` themselves (tokenized, length-checked) to a FIFO; each ``step`` runs one batched
decode for every running request, then admits waiting requests into free KV rows with a batch-1
prefill (which yields their first token). A request leaves the batch when it finishes (EOS, stop
sequence, ``max_tokens``, context full) or is ``cancel``-led; its KV row is free for the next at
once. Each request samples from its own seeded Generator, so its text does not depend on what it
was batched with (greedy batched output is token-for-token the batch-1 output: tested).
Not thread-safe: the worker calls it from one thread. Only ``served`` (each decode step's batch
size, :class:`~inference_worker.stats.ModelStats`) may be read from another.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from wasm_engine.errors import INFER_BAD_INPUT, INFER_PROMPT_TOO_LONG, WasmEngineError

from ..device import CPU, CPU_OK, open_session
from ..stats import ModelStats
from .chat import ChatTokenizer, Detokenizer, Message
from .kvcache import KVCache
from .params import GenerateParams
from .sampling import Sampler
from .spec import LLMSpec, load_spec
from .stops import StopMatcher

log = logging.getLogger("inference_worker.llm")

PREFILL_CHUNK = 256  # prompt tokens per prefill run: bounds the [1, chunk, vocab] logits


@dataclass(frozen=True)
class TokenEvent:
    """New text for one request. ``finished`` with ``reason`` in stop | length ends it."""

    request_id: str
    text: str
    token_id: int
    finished: bool = False
    reason: str | None = None


@dataclass
class _Seq:
    rid: str
    prompt: list[int]
    params: GenerateParams
    sampler: Sampler
    detok: Detokenizer
    stops: StopMatcher
    slot: int = -1
    kv_len: int = 0  # tokens whose keys/values are in the cache
    pending: int = -1  # the last sampled token, fed at the next decode
    tokens: list[int] = field(default_factory=list)
    added: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class GenerateResult:
    text: str
    tokens: list[int]
    reason: str
    prompt_tokens: int
    device: str


class LLMEngine:
    def __init__(
        self,
        folder: Path,
        *,
        max_batch: int = 8,
        max_seq: int = 2048,
        device: str = CPU_OK,
        threads: int | None = None,
        prefills_per_step: int = 0,
    ) -> None:
        """``prefills_per_step`` bounds how many waiting requests one step admits (0: all free
        rows), so a burst of arrivals stalls the running streams for fewer prefills at a time."""
        self.prefills_per_step = prefills_per_step
        self.spec: LLMSpec = load_spec(folder)
        self.session, self.device = open_session(self.spec.model_file, device, threads=threads)
        self.tokenizer = ChatTokenizer(self.spec.tokenizer_file, self.spec.default_system)
        self.context = min(self.spec.context_length, max_seq)
        self.max_batch = max_batch
        self.kv = KVCache(self.spec, max_batch, self.context, self.device)
        self._logits = np.empty((max_batch, 1, self.spec.vocab_size), np.float32)
        self._bindings: dict[tuple[int, int], ort.IOBinding] = {}  # (first row, rows) -> binding
        self.waiting: deque[_Seq] = deque()
        self.active: dict[int, _Seq] = {}  # slot -> sequence
        self._by_id: dict[str, _Seq] = {}
        self.counters = {"prompt_tokens": 0, "tokens": 0, "decode_steps": 0, "cancelled": 0}
        self.served = ModelStats(self.device)  # sequences per decode step, for the heartbeats
        log.info(
            "LLM %s on %s: batch %d, context %d, KV %.0f MiB",
            self.spec.name, self.device, max_batch, self.context, self.kv.bytes / 2**20,
        )  # fmt: skip

    # -- requests --------------------------------------------------------------
    def add(
        self,
        request_id: str,
        prompt: str | Sequence[Message],
        params: GenerateParams | None = None,
    ) -> int:
        """Queue a request; returns its prompt length in tokens. Raises ``infer.bad_input`` or
        ``infer.prompt_too_long`` (nothing is queued then)."""
        if request_id in self._by_id:
            raise WasmEngineError(INFER_BAD_INPUT, f"request {request_id!r} is already running")
        params = params or GenerateParams()
        ids = self.tokenizer.encode_prompt(prompt)
        if len(ids) >= self.context:
            raise WasmEngineError(
                INFER_PROMPT_TOO_LONG,
                f"prompt is {len(ids)} tokens; the context holds {self.context}",
                detail={"prompt_tokens": len(ids), "context": self.context},
            )
        seq = _Seq(
            request_id, ids, params, Sampler(params), Detokenizer(self.tokenizer),
            StopMatcher(params.stop),
        )  # fmt: skip
        self.waiting.append(seq)
        self._by_id[request_id] = seq
        return len(ids)

    def cancel(self, request_id: str) -> bool:
        """Drop a request (client gone, cancelled): out of the batch, KV row freed. False if
        unknown or already finished."""
        seq = self._by_id.pop(request_id, None)
        if seq is None:
            return False
        if seq.slot < 0:
            self.waiting.remove(seq)
        else:
            self._leave(seq)
        self.counters["cancelled"] += 1
        return True

    @property
    def busy(self) -> bool:
        return bool(self.active or self.waiting)

    def stats(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "active": len(self.active),
            "waiting": len(self.waiting),
            "max_batch": self.max_batch,
            "context": self.context,
            **self.counters,
        }

    # -- the loop ----------------------------------------------------------------
    def step(self) -> list[TokenEvent]:
        """One decode step for the running requests, then admit waiting ones (their prefill
        gives their first token). At most one event per request per step."""
        events = self._decode() if self.active else []
        budget = self.prefills_per_step or self.max_batch
        while self.waiting and self.kv.free and budget > 0:
            budget -= 1
            seq = self.waiting.popleft()
            slot = self.kv.alloc()
            assert slot is not None
            seq.slot = slot
            self.active[slot] = seq
            events.append(self._prefill(seq))
        return events

    def warm_up(self, tokens: int = 8) -> None:
        """Fill every KV row once (a full batch of short requests) before serving: the first runs
        at each batch size and width grow ORT's arena and are several times slower."""
        for i in range(self.max_batch):
            self.add(f"warm-up-{i}", "Hi", GenerateParams(max_tokens=tokens))
        while self.busy:
            self.step()
        self.counters.update(prompt_tokens=0, tokens=0, decode_steps=0)
        self.served.reset()

    def generate(
        self, prompt: str | Sequence[Message], params: GenerateParams | None = None
    ) -> GenerateResult:
        """One request run to its end on an idle engine (CLI, tests, benches' batch-1 path)."""
        if self.busy:
            raise WasmEngineError(INFER_BAD_INPUT, "generate() needs an idle engine; use add/step")
        rid = "generate"
        n = self.add(rid, prompt, params)
        parts: list[str] = []
        seq = self._by_id[rid]
        while True:
            for ev in self.step():
                parts.append(ev.text)
                if ev.finished:
                    return GenerateResult(
                        "".join(parts), seq.tokens, ev.reason or "", n, self.device
                    )

    # -- internals ---------------------------------------------------------------
    def _run(self, ids: np.ndarray[Any, Any], mask: np.ndarray[Any, Any], first: int, rows: int,
             logits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:  # fmt: skip
        """One ORT run over KV rows ``first .. first+rows``. On CPU the logits land in
        ``logits`` and the binding is kept per row range (the KV bindings never change; an
        output ORT allocated itself would be reused with a stale shape, so there is none)."""
        if self.device != CPU:
            io = self.session.io_binding()
            self.kv.bind(io, first, rows)
            io.bind_cpu_input("input_ids", ids)
            io.bind_cpu_input("attention_mask", mask)
            io.bind_output("logits", self.device)
            self.session.run_with_iobinding(io)
            out: np.ndarray[Any, Any] = io.get_outputs()[0].numpy()
            return out
        io = self._bindings.get((first, rows))
        if io is None:
            io = self._bindings[(first, rows)] = self.session.io_binding()
            self.kv.bind(io, first, rows)
        io.bind_cpu_input("input_ids", ids)
        io.bind_cpu_input("attention_mask", mask)
        io.bind_output("logits", CPU, 0, np.float32, list(logits.shape), logits.ctypes.data)
        self.session.run_with_iobinding(io)
        return logits

    def _prefill(self, seq: _Seq) -> TokenEvent:
        ids = seq.prompt
        last: np.ndarray[Any, Any] | None = None
        for start in range(0, len(ids), PREFILL_CHUNK):
            chunk = np.asarray([ids[start : start + PREFILL_CHUNK]], np.int64)
            total = start + chunk.shape[1]
            buf = np.empty((1, chunk.shape[1], self.spec.vocab_size), np.float32)
            out = self._run(chunk, np.ones((1, total), np.int64), seq.slot, 1, buf)
            last = out[0, -1]
        assert last is not None
        seq.kv_len = len(ids)
        self.counters["prompt_tokens"] += len(ids)
        return self._emit(seq, seq.sampler.choose(last))

    def _decode(self) -> list[TokenEvent]:
        rows = max(self.active) + 1  # free rows inside the range run as 1-token dummies
        width = max(s.kv_len for s in self.active.values()) + 1
        ids = np.full((rows, 1), self.spec.eos, np.int64)
        mask = np.zeros((rows, width), np.int64)
        mask[:, 0] = 1
        for slot, seq in self.active.items():
            ids[slot, 0] = seq.pending
            mask[slot, : seq.kv_len + 1] = 1
        logits = self._run(ids, mask, 0, rows, self._logits[:rows])
        self.counters["decode_steps"] += 1
        self.served.record(batch=len(self.active), device=self.device)
        events = []
        for slot, seq in list(self.active.items()):
            seq.kv_len += 1
            events.append(self._emit(seq, seq.sampler.choose(logits[slot, 0])))
        return events

    def _emit(self, seq: _Seq, token: int) -> TokenEvent:
        seq.tokens.append(token)
        self.counters["tokens"] += 1
        if token in self.spec.stop_token_ids:
            return self._finish(seq, seq.stops.flush(), token, "stop")
        text, hit = seq.stops.feed(seq.detok.push(token))
        if hit:
            return self._finish(seq, text, token, "stop")
        if len(seq.tokens) >= seq.params.max_tokens or seq.kv_len >= self.context:
            return self._finish(seq, text + seq.stops.flush(), token, "length")
        seq.pending = token
        return TokenEvent(seq.rid, text, token)

    def _finish(self, seq: _Seq, text: str, token: int, reason: str) -> TokenEvent:
        self._by_id.pop(seq.rid, None)
        self._leave(seq)
        return TokenEvent(seq.rid, text, token, True, reason)

    def _leave(self, seq: _Seq) -> None:
        del self.active[seq.slot]
        self.kv.release(seq.slot)
        seq.slot = -1
