"""Small real tensor models for tests, the demo and the batching bench, written with the ``onnx``
helper API and numpy weights from a fixed seed (no torch): an MLP classifier in the repository
layout (``NAME/model.onnx`` + ``NAME/config.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MLP = "mlp"


def mlp_proto(
    in_dim: int, hidden: int, layers: int, out_dim: int, seed: int = 0
) -> onnx.ModelProto:
    """``x[B, in_dim] -> (Gemm+Relu) x layers -> Gemm -> softmax probs[B, out_dim]``."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev, width = "x", in_dim
    for i, w_out in enumerate([*([hidden] * layers), out_dim]):
        w = (rng.standard_normal((width, w_out)) / np.sqrt(width)).astype(np.float32)
        b = (rng.standard_normal(w_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out]))
        if i < layers:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        prev, width = out, w_out
    nodes.append(helper.make_node("Softmax", [prev], ["probs"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_dim])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", out_dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_mlp(
    models: Path,
    *,
    name: str = MLP,
    in_dim: int = 512,
    hidden: int = 1024,
    layers: int = 3,
    out_dim: int = 64,
    max_batch: int = 64,
    max_queue_delay_ms: float = 2.0,
    force: bool = False,
) -> Path:
    """Write ``models/NAME`` (cached: an existing folder is kept unless ``force``)."""
    folder = models / name
    if (folder / "config.json").exists() and (folder / "model.onnx").exists() and not force:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(mlp_proto(in_dim, hidden, layers, out_dim), str(folder / "model.onnx"))
    config: dict[str, Any] = {
        "name": name,
        "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, in_dim]}],
        "outputs": [{"name": "probs", "dtype": "float32", "shape": [-1, out_dim]}],
        "max_batch": max_batch,
        "max_queue_delay_ms": max_queue_delay_ms,
        "device_policy": "prefer_gpu",
        "warmup_batches": [1, max_batch],
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder
