"""The tensor model repository and batch runs on real onnxruntime with the generated MLP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference_worker.batcher import DynamicBatcher, Limits
from inference_worker.device import gpu_offered
from inference_worker.repository import ModelRepository
from inference_worker.tensor_models import build_mlp, mlp_proto
from wasm_engine.errors import WasmEngineError

IN, OUT = 32, 8


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    build_mlp(tmp_path, in_dim=IN, hidden=64, layers=2, out_dim=OUT, max_batch=8)
    r = ModelRepository(tmp_path, threads=1)
    assert r.load_all() == {}
    return r


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, IN)).astype(np.float32)


def reference(x: np.ndarray) -> np.ndarray:
    """The same MLP in numpy, from the same seeded weights."""
    from onnx import numpy_helper

    w = {i.name: numpy_helper.to_array(i) for i in mlp_proto(IN, 64, 2, OUT).graph.initializer}
    h = x
    for i in range(3):
        h = h @ w[f"w{i}"] + w[f"b{i}"]
        if i < 2:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_run_matches_numpy_and_reports_the_device(repo: ModelRepository) -> None:
    x = rows(3)
    r = repo.get("mlp").run({"x": x}, "cpu_ok")
    assert r.error is None and r.outputs is not None
    np.testing.assert_allclose(r.outputs["probs"], reference(x), rtol=1e-4, atol=1e-6)
    assert r.device == "cpu"


def test_batch_equals_one_at_a_time_and_a_bad_member_fails_alone(repo: ModelRepository) -> None:
    model = repo.get("mlp")
    reqs = [
        {"x": rows(1, 1)},
        {"x": rows(2, 2).astype(np.float64)},  # wrong dtype
        {"x": rows(2, 3)},
        {"x": rows(1, 4)[0]},  # wrong rank
        {"x": np.zeros((1, IN + 1), np.float32)},  # wrong shape
        {"y": rows(1, 5)},  # wrong name
    ]
    results = model.run_batch(reqs, "cpu_ok")
    assert [r.error.code if r.error else None for r in results] == [
        None, "infer.bad_input", None, "infer.bad_input", "infer.bad_input", "infer.bad_input"
    ]  # fmt: skip
    for i in (0, 2):
        alone = model.run(reqs[i], "cpu_ok").outputs
        assert alone is not None and results[i].outputs is not None
        np.testing.assert_allclose(results[i].outputs["probs"], alone["probs"], rtol=1e-5)
    served = model.status()  # since warm-up: the batch (2 good members, 3 rows), each alone
    counts = {k: served[k] for k in ("runs", "rows", "requests", "failed", "fallbacks")}
    assert counts == {"runs": 3, "rows": 6, "requests": 8, "failed": 4, "fallbacks": 0}
    assert served["batches"] == {"1": 1, "2": 1, "3": 1} and served["device"] == "cpu"


def test_batcher_feeds_the_repository(repo: ModelRepository) -> None:
    now = [0.0]
    cfg = repo.get("mlp").config
    b = DynamicBatcher({"mlp": Limits(cfg.max_batch, cfg.max_queue_delay_s)}, lambda: now[0])
    xs = [rows(1, i) for i in range(10)]
    for i, x in enumerate(xs):
        b.submit("mlp", str(i), {"x": x}, cfg.check({"x": x}))
    batches = b.due()
    assert [x.rows for x in batches] == [8]
    now[0] += 1.0
    batches += b.due()
    outs = {}
    for batch in batches:
        results = repo.get("mlp").run_batch([m.item for m in batch.members], "cpu_ok")
        outs.update({m.request_id: r for m, r in zip(batch.members, results, strict=True)})
    for i, x in enumerate(xs):
        np.testing.assert_allclose(
            outs[str(i)].outputs["probs"], reference(x), rtol=1e-4, atol=1e-6
        )


def test_unknown_model(repo: ModelRepository) -> None:
    with pytest.raises(WasmEngineError) as err:
        repo.get("nope")
    assert err.value.code == "infer.model_missing"
    with pytest.raises(WasmEngineError) as err:
        repo.load("../etc")
    assert err.value.code == "infer.model_missing"


def test_corrupt_model_is_typed_and_the_others_still_load(tmp_path: Path) -> None:
    build_mlp(tmp_path, in_dim=IN, hidden=16, layers=1, out_dim=OUT, max_batch=4)
    build_mlp(tmp_path, name="bad", in_dim=IN, hidden=16, layers=1, out_dim=OUT)
    (tmp_path / "bad" / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    cfg = tmp_path / "wrongcfg"
    build_mlp(tmp_path, name="wrongcfg", in_dim=IN, hidden=16, layers=1, out_dim=OUT)
    doc = json.loads((cfg / "config.json").read_text())
    doc["inputs"][0]["dtype"] = "int64"
    (cfg / "config.json").write_text(json.dumps(doc))
    (tmp_path / "nocfg").mkdir()
    (tmp_path / "nocfg" / "config.json").write_text("{not json")
    repo = ModelRepository(tmp_path, threads=1)
    broken = repo.load_all()
    assert {n: e.code for n, e in broken.items()} == {
        "bad": "infer.bad_model", "wrongcfg": "infer.bad_model", "nocfg": "infer.bad_model"
    }  # fmt: skip
    with pytest.raises(WasmEngineError) as err:
        repo.get("bad")
    assert err.value.code == "infer.bad_model"
    assert repo.get("mlp").run({"x": rows(2)}).error is None
    assert repo.status()["broken"]["bad"] == "infer.bad_model"


def test_device_policy_on_a_machine_without_a_usable_gpu(repo: ModelRepository) -> None:
    model = repo.get("mlp")
    first = model.run({"x": rows(1)}, "prefer_gpu")
    if first.device == "cuda":
        pytest.skip("a GPU is usable here")
    before = model.served["fallbacks"]
    assert model.run({"x": rows(1)}, "prefer_gpu").device == "cpu"
    assert model.served["fallbacks"] == before + 1
    with pytest.raises(WasmEngineError) as err:
        model.run({"x": rows(1)}, "require_gpu")
    assert err.value.code == "infer.device_unavailable"
    assert model.run({"x": rows(1)}, "cpu_ok").error is None  # still serving
    with pytest.raises(WasmEngineError) as err:
        model.run({"x": rows(1)}, "gpu_now")
    assert err.value.code == "infer.bad_input"


@pytest.mark.gpu
def test_require_gpu_runs_on_cuda(repo: ModelRepository) -> None:
    if not gpu_offered() or not Path("/dev/nvidiactl").exists():
        pytest.skip("no NVIDIA GPU here (or no CUDA provider in this onnxruntime)")
    r = repo.get("mlp").run({"x": rows(4)}, "require_gpu")
    assert r.device == "cuda" and r.outputs is not None
    np.testing.assert_allclose(r.outputs["probs"], reference(rows(4)), rtol=1e-3, atol=1e-5)
