"""The model commands of ``wasm-engine``: ``models build``, ``generate``, ``infer``.

``generate "prompt" [--max-tokens N] [--seed S] [--temperature T] [--top-k K]
[--top-p P] [--stop S]... [--device POLICY] [--stream] [--json]`` asks the LLM
through the stack (the text as it is decoded with ``--stream``); ``infer MODEL
--input NAME=FILE.npy ... [--device POLICY] [--out DIR] [--json]`` runs one
tensor-model call and prints (or saves) the outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import config
from .inference import DEVICE_POLICIES


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_models_build(s: config.Settings, a: argparse.Namespace) -> int:
    from inference_worker.build import build_model  # the inference worker's: imported lazily

    folder = build_model(a.name, Path(a.models) if a.models else None, force=a.force)
    out(f"{folder}\n")
    return 0


def cmd_generate(s: config.Settings, a: argparse.Namespace) -> int:
    from .client import Client

    params: dict[str, Any] = {
        "max_tokens": a.max_tokens, "seed": a.seed, "temperature": a.temperature,
        "top_k": a.top_k, "top_p": a.top_p, "stop": a.stop or None, "device": a.device,
    }  # fmt: skip
    stream = a.stream and not a.json
    with Client(s.front, timeout=a.wait) as client:
        res = client.generate(a.prompt, model=a.model, on_text=out if stream else None, **params)
    if a.json:
        out(json.dumps(res) + "\n")
    elif stream:
        out(f"\n[{res['tokens']} tokens, {res['finish']}, {res['device']}]\n")
    else:
        out(f"{res['text']}\n[{res['tokens']} tokens, {res['finish']}, {res['device']}]\n")
    return 0


def cmd_infer(s: config.Settings, a: argparse.Namespace) -> int:
    import numpy as np

    from .client import Client

    inputs: dict[str, Any] = {}
    for item in a.input:
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--input {item!r}: expected NAME=FILE.npy")
        inputs[name] = np.load(path, allow_pickle=False)
    with Client(s.front, timeout=a.wait) as client:
        outputs = client.infer(a.model, inputs, device=a.device)
    if a.out:
        folder = Path(a.out)
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in outputs.items():
            np.save(folder / f"{name}.npy", array)
    if a.json:
        out(json.dumps({k: v.tolist() for k, v in outputs.items()}) + "\n")
    else:
        for name, array in outputs.items():
            out(f"{name}: {array.dtype} {list(array.shape)}\n{array}\n")
    return 0


def add_parsers(sub: Any) -> None:
    md = sub.add_parser("models", help="build models into the model repository")
    md_build = md.add_subparsers(dest="models_command", required=True).add_parser(
        "build", help="convert a model once (cached: does nothing when present)"
    )
    config.add_arguments(md_build, ["log_level"])
    md_build.add_argument("name", help="smollm2 (the LLM) or mlp (a small tensor model)")
    md_build.add_argument("--models", default=None, help="repository folder ($WASM_ENGINE_MODELS)")
    md_build.add_argument("--force", action="store_true", help="rebuild even when present")
    md_build.set_defaults(fn=cmd_models_build)

    gen = sub.add_parser("generate", help="LLM text through the stack")
    config.add_arguments(gen, ["front", "log_level"])
    gen.add_argument("--wait", type=float, default=300.0, help="seconds to wait")
    gen.add_argument("prompt")
    gen.add_argument("--model", default="smollm2")
    gen.add_argument("--max-tokens", type=int, default=128)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--stop", action="append", default=None, help="a stop sequence (repeatable)")
    gen.add_argument("--device", choices=DEVICE_POLICIES, default="prefer_gpu")
    gen.add_argument("--stream", action="store_true", help="print the text as it is decoded")
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(fn=cmd_generate)

    inf = sub.add_parser("infer", help="one tensor-model call through the stack")
    config.add_arguments(inf, ["front", "log_level"])
    inf.add_argument("--wait", type=float, default=60.0, help="seconds to wait")
    inf.add_argument("model")
    inf.add_argument("--input", action="append", required=True, help="NAME=FILE.npy (repeatable)")
    inf.add_argument("--device", choices=DEVICE_POLICIES, default=None)
    inf.add_argument("--out", default=None, help="save each output as OUT/NAME.npy")
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(fn=cmd_infer)
