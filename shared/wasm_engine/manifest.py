"""Agent manifests: what an agent is besides its module bytes.

A manifest sits beside the module (``agent.wasm`` + ``agent.toml`` or
``agent.json``) and declares ``name``, ``version``, ``reuse``, ``[limits]``
(``fuel``, ``timeout`` in seconds, ``memory`` in bytes: the defaults of this
agent's tasks and the most a task may ask for; ``children``: child requests per
task) and ``[grants]`` (``agents`` it may spawn/send to and ``models`` it may
call, enforced by the worker's host calls when the list is present; ``files``:
recorded, no host call reads files yet). The agent's identity is
:func:`agent_digest` of the module bytes and the canonical manifest, so another
``reuse``, limit or grant is another agent.
``docs/agents.md`` is the contract.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AGENT_BAD_MANIFEST, WasmEngineError

LIMIT_KEYS = ("fuel", "timeout", "memory", "children")
GRANT_KEYS = ("models", "agents", "files")
_TOP_KEYS = ("name", "version", "reuse", "limits", "grants")
MAX_NAME = 128
MAX_GRANTS = 1024


def _bad(fld: str, why: str) -> WasmEngineError:
    return WasmEngineError(AGENT_BAD_MANIFEST, f"manifest {fld} {why}", detail={"field": fld})


@dataclass(frozen=True)
class Manifest:
    name: str = ""
    version: str = ""
    reuse: bool = False
    limits: dict[str, int | float] = field(default_factory=dict)
    grants: dict[str, list[str]] = field(default_factory=dict)

    def canonical(self) -> dict[str, Any]:
        """The manifest as sent on the wire: every key, limits that are set, sorted grants."""
        return {
            "name": self.name,
            "version": self.version,
            "reuse": self.reuse,
            "limits": {k: self.limits[k] for k in LIMIT_KEYS if k in self.limits},
            "grants": {k: sorted(set(self.grants.get(k, []))) for k in GRANT_KEYS},
        }

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()


def parse_manifest(raw: Any) -> Manifest:
    """Validate a manifest mapping; raises ``agent.bad_manifest`` (``detail.field``)."""
    if not isinstance(raw, dict):
        raise _bad("(document)", f"must be a table/object, not {type(raw).__name__}")
    for key in raw:
        if key not in _TOP_KEYS:
            raise _bad(str(key), f"is not a manifest key (one of {', '.join(_TOP_KEYS)})")
    name, version, reuse = raw.get("name", ""), raw.get("version", ""), raw.get("reuse", False)
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise _bad("name", f"must be a string of at most {MAX_NAME} chars")
    if name.startswith("sha256:"):
        raise _bad("name", "must not look like a digest (sha256:...)")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or len(version) > 64:
        raise _bad("version", "must be a string of at most 64 chars")
    if not isinstance(reuse, bool):
        raise _bad("reuse", "must be a boolean")
    limits_raw = raw.get("limits", {})
    if not isinstance(limits_raw, dict):
        raise _bad("limits", "must be a table/object")
    limits: dict[str, int | float] = {}
    for key, value in limits_raw.items():
        if key not in LIMIT_KEYS:
            raise _bad(f"limits.{key}", f"is not a limit (one of {', '.join(LIMIT_KEYS)})")
        number = type(value) in (int, float) if key == "timeout" else type(value) is int
        if not number or value <= 0:
            kind = "number" if key == "timeout" else "integer"
            raise _bad(f"limits.{key}", f"must be a positive {kind}")
        limits[key] = value
    grants_raw = raw.get("grants", {})
    if not isinstance(grants_raw, dict):
        raise _bad("grants", "must be a table/object")
    grants: dict[str, list[str]] = {}
    for key, value in grants_raw.items():
        if key not in GRANT_KEYS:
            raise _bad(f"grants.{key}", f"is not a grant (one of {', '.join(GRANT_KEYS)})")
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        if not ok or len(value) > MAX_GRANTS:
            raise _bad(f"grants.{key}", f"must be a list of non-empty strings (<= {MAX_GRANTS})")
        grants[key] = sorted(set(value))
    return Manifest(name, version, reuse, limits, grants)


def load_manifest(path: str | Path) -> Manifest:
    """Read a ``.toml`` or ``.json`` manifest file."""
    path = Path(path)
    try:
        text = path.read_bytes()
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text.decode())
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError, JSONDecodeError
        raise WasmEngineError(
            AGENT_BAD_MANIFEST,
            f"{path}: not valid {path.suffix[1:] or 'toml'}: {exc}",
            detail={"field": "(document)"},
        ) from None
    return parse_manifest(raw)


def beside(module: str | Path) -> Path | None:
    """The manifest next to a module file: ``x.wasm`` -> ``x.toml`` or ``x.json``."""
    module = Path(module)
    for suffix in (".toml", ".json"):
        candidate = module.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def module_digest(module: bytes) -> str:
    return "sha256:" + hashlib.sha256(module).hexdigest()


def agent_digest(module: bytes, manifest: Manifest, module_sha: str | None = None) -> str:
    """``sha256:<hex>`` of ``module_digest + "\\n" + canonical manifest JSON``."""
    head = (module_sha or module_digest(module)).encode() + b"\n"
    return "sha256:" + hashlib.sha256(head + manifest.canonical_bytes()).hexdigest()
