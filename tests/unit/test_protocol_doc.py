"""docs/protocol.md and the message registry stay in step."""

from __future__ import annotations

import re
from pathlib import Path

from wasm_engine import errors, messages

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_every_registered_type_is_documented_and_vice_versa() -> None:
    documented = set(re.findall(r"^### `([a-z.]+)`$", DOC.read_text(), re.M))
    assert documented == set(messages.REGISTRY)


def test_every_error_code_is_documented() -> None:
    text = DOC.read_text()
    codes = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str) and "." in v}
    reserved: set[str] = set()
    missing = sorted(c for c in codes - reserved if f"`{c}`" not in text)
    assert not missing, f"codes missing from docs/protocol.md: {missing}"
