"""The LLM engine: a decode loop owned by the worker, batched across concurrent requests.

``LLMEngine`` (engine.py) is the entry point; the other modules are its parts: ``spec`` (the
model's ``llm.json``), ``chat`` (ChatML and the tokenizer), ``params`` and ``sampling`` (seeded
token choice), ``stops`` (stop sequences on streamed text), ``kvcache`` (the reused KV buffer).
"""

from .engine import LLMEngine, TokenEvent
from .params import GenerateParams

__all__ = ["GenerateParams", "LLMEngine", "TokenEvent"]
