"""``wasm-engine models build``: the small tensor model end to end through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_worker.repository import ModelRepository
from wasm_engine import cli, cli_models


def test_build_mlp_then_cached_then_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed: list[str] = []
    monkeypatch.setattr(cli_models, "out", printed.append)
    assert cli.main(["models", "build", "mlp", "--models", str(tmp_path)]) == 0
    assert printed == [f"{tmp_path / 'mlp'}\n"]
    stamp = (tmp_path / "mlp" / "model.onnx").stat().st_mtime_ns
    assert cli.main(["models", "build", "mlp", "--models", str(tmp_path)]) == 0
    assert (tmp_path / "mlp" / "model.onnx").stat().st_mtime_ns == stamp
    repo = ModelRepository(tmp_path, threads=1)
    assert repo.load_all() == {} and "mlp" in repo.models


def test_unknown_model_name_fails_with_its_code(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["models", "build", "gpt-9", "--models", str(tmp_path)]) == 1
    assert "infer.model_missing" in capfd.readouterr().err
