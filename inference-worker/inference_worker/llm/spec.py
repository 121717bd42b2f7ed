"""The built LLM's run-time contract, read from ``MODELS/NAME/llm.json`` (written by the build)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wasm_engine.errors import INFER_BAD_MODEL, INFER_MODEL_MISSING, WasmEngineError

LLM_CONFIG = "llm.json"
FORMAT = "wasm-engine-llm/1"


@dataclass(frozen=True)
class LLMSpec:
    folder: Path
    name: str
    model_file: Path
    tokenizer_file: Path
    default_system: str
    eos: int
    stop_token_ids: tuple[int, ...]
    context_length: int
    vocab_size: int
    layers: int
    kv_heads: int
    head_dim: int
    past_key: str  # "past_key_values.%d.key"
    past_value: str
    present_key: str
    present_value: str

    def kv_names(self) -> list[tuple[str, str]]:
        """(past input, present output) name pairs, keys then values, layer by layer."""
        pairs = []
        for i in range(self.layers):
            pairs.append((self.past_key % i, self.present_key % i))
            pairs.append((self.past_value % i, self.present_value % i))
        return pairs


def load_spec(folder: Path) -> LLMSpec:
    """Read and check ``llm.json``; a missing build is ``infer.model_missing``."""
    path = folder / LLM_CONFIG
    if not path.exists():
        raise WasmEngineError(
            INFER_MODEL_MISSING,
            f"no LLM at {folder} (run `wasm-engine models build {folder.name}`)",
        )
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
        kv, special = doc["kv"], doc["special_tokens"]
        if not kv.get("shared_buffer") or kv["layout"] != ["batch", "kv_heads", "seq", "head_dim"]:
            raise ValueError("KV cache must be a shared [batch, kv_heads, seq, head_dim] buffer")
        spec = LLMSpec(
            folder=folder,
            name=str(doc["name"]),
            model_file=folder / doc["model_file"],
            tokenizer_file=folder / doc["tokenizer_file"],
            default_system=str(doc.get("default_system", "")),
            eos=int(special["eos"]),
            stop_token_ids=tuple(int(t) for t in doc["stop_token_ids"]),
            context_length=int(doc["context_length"]),
            vocab_size=int(doc["vocab_size"]),
            layers=int(kv["layers"]),
            kv_heads=int(kv["kv_heads"]),
            head_dim=int(kv["head_dim"]),
            past_key=str(kv["past_key"]),
            past_value=str(kv["past_value"]),
            present_key=str(kv["present_key"]),
            present_value=str(kv["present_value"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WasmEngineError(INFER_BAD_MODEL, f"{path}: {exc}") from None
    for f in (spec.model_file, spec.tokenizer_file):
        if not f.exists():
            raise WasmEngineError(INFER_BAD_MODEL, f"{f} is missing (rebuild the model)")
    return spec
