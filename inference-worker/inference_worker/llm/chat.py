"""ChatML prompts and the tokenizer (``tokenizer.json`` via ``tokenizers``; no transformers).

Owns turning a prompt or a message list into token ids, and token ids back into streamed text
without splitting a multi-byte character across two events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from wasm_engine.errors import INFER_BAD_INPUT, INFER_BAD_MODEL, WasmEngineError

ROLES = ("system", "user", "assistant")
Message = Mapping[str, Any]


def messages_of(prompt: str | Sequence[Message]) -> list[dict[str, str]]:
    """A plain prompt is one user message; a message list is checked (role, content strings)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, Sequence) or not prompt:
        raise WasmEngineError(INFER_BAD_INPUT, "prompt must be a string or a non-empty list")
    out = []
    for i, m in enumerate(prompt):
        if not isinstance(m, Mapping):
            raise WasmEngineError(INFER_BAD_INPUT, f"message {i} is not a map")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise WasmEngineError(
                INFER_BAD_INPUT,
                f"message {i} needs role in {ROLES} and a string content",
                detail={"index": i},
            )
        out.append({"role": str(role), "content": content})
    return out


def chatml(messages: Sequence[Mapping[str, str]], default_system: str) -> str:
    """The model's chat template (SmolLM2's, in Python): a default system turn when none is
    given, each turn as ``<|im_start|>role\\ncontent<|im_end|>\\n``, then the assistant's
    opening."""
    parts = []
    if default_system and messages[0]["role"] != "system":
        parts.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    parts += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


class ChatTokenizer:
    def __init__(self, path: Path, default_system: str) -> None:
        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a plain Exception on a bad file
            raise WasmEngineError(INFER_BAD_MODEL, f"tokenizer {path}: {exc}") from None
        self.default_system = default_system

    def encode_prompt(self, prompt: str | Sequence[Message]) -> list[int]:
        text = chatml(messages_of(prompt), self.default_system)
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode(list(ids), skip_special_tokens=True))


class Detokenizer:
    """Streams the text of a growing token list: each call returns only the new, complete text."""

    def __init__(self, tok: ChatTokenizer) -> None:
        self.tok = tok
        self.ids: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        full = self.tok.decode(self.ids)
        if full.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        new, self.text = full[len(self.text) :], full
        return new
