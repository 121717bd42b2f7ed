"""Agent manifests: parsing, validation, canonical form and the agent digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.manifest import Manifest, agent_digest, beside, load_manifest, parse_manifest
from wasm_engine.requests import agent_spec

MODULE = b"\x00asm\x01\x00\x00\x00"

TOML = """
name = "stats"
version = "0.3"
reuse = true
[limits]
fuel = 5000
timeout = 1.5
memory = 1048576
[grants]
models = ["tiny-llm", "tiny-llm"]
agents = ["reduce"]
files = ["/data"]
"""


def test_toml_and_json_manifests_parse_to_the_same_canonical_form(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(TOML)
    m = load_manifest(tmp_path / "a.toml")
    assert m.canonical() == {
        "name": "stats",
        "version": "0.3",
        "reuse": True,
        "limits": {"fuel": 5000, "timeout": 1.5, "memory": 1048576},
        "grants": {"models": ["tiny-llm"], "agents": ["reduce"], "files": ["/data"]},
    }
    (tmp_path / "b.json").write_bytes(m.canonical_bytes())
    assert load_manifest(tmp_path / "b.json") == m
    assert parse_manifest(m.canonical()) == m


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"nme": "x"}, "nme"),
        ({"name": 3}, "name"),
        ({"name": "sha256:abc"}, "name"),
        ({"reuse": "yes"}, "reuse"),
        ({"limits": {"fuel": 0}}, "limits.fuel"),
        ({"limits": {"fuel": 1.5}}, "limits.fuel"),
        ({"limits": {"timeout": -1}}, "limits.timeout"),
        ({"limits": {"cpu": 1}}, "limits.cpu"),
        ({"limits": []}, "limits"),
        ({"grants": {"models": "m"}}, "grants.models"),
        ({"grants": {"models": [""]}}, "grants.models"),
        ({"grants": {"net": []}}, "grants.net"),
        ([], "(document)"),
    ],
)
def test_bad_manifests_are_typed_errors_naming_the_field(raw: object, field: str) -> None:
    with pytest.raises(WasmEngineError) as exc:
        parse_manifest(raw)
    assert exc.value.code == E.AGENT_BAD_MANIFEST and exc.value.detail == {"field": field}


def test_a_file_that_is_not_toml_is_a_bad_manifest(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text("name = ")
    with pytest.raises(WasmEngineError) as exc:
        load_manifest(tmp_path / "x.toml")
    assert exc.value.code == E.AGENT_BAD_MANIFEST


def test_identity_covers_the_module_and_every_manifest_field() -> None:
    base = Manifest("a", "1")
    digests = {
        agent_digest(MODULE, base),
        agent_digest(MODULE + b"\x00", base),
        agent_digest(MODULE, Manifest("a", "1", reuse=True)),
        agent_digest(MODULE, Manifest("a", "2")),
        agent_digest(MODULE, Manifest("a", "1", limits={"fuel": 10})),
        agent_digest(MODULE, Manifest("a", "1", grants={"files": ["/x"]})),
    }
    assert len(digests) == 6
    # grant order and duplicates do not matter
    one = Manifest("a", grants={"models": ["x", "y"]})
    two = parse_manifest({"name": "a", "grants": {"models": ["y", "x", "x"]}})
    assert agent_digest(MODULE, one) == agent_digest(MODULE, two)


def test_the_sdk_reads_the_manifest_beside_the_module_and_kwargs_override(tmp_path: Path) -> None:
    (tmp_path / "agent.wasm").write_bytes(MODULE)
    assert beside(tmp_path / "agent.wasm") is None
    data, spec = agent_spec(tmp_path / "agent.wasm")
    assert (data, spec) == (MODULE, Manifest(name="agent"))
    (tmp_path / "agent.toml").write_text(TOML)
    _, spec = agent_spec(tmp_path / "agent.wasm")
    assert (spec.name, spec.reuse, spec.limits["fuel"]) == ("stats", True, 5000)
    _, spec = agent_spec(tmp_path / "agent.wasm", name="other", reuse=False)
    assert (spec.name, spec.reuse) == ("other", False)
    _, spec = agent_spec(MODULE, manifest={"name": "m", "limits": {"fuel": 7}})
    assert spec == Manifest("m", limits={"fuel": 7})
