"""The bench harness: ``wasm-engine bench NAME`` runs ``bench/<name>.py``.

Each bench script runs our path and its baseline in one run and prints one JSON
object ``{"bench", "figures", "ratios", "env"}`` as its last stdout line. The
harness saves it under ``bench/results/<name>.json`` (latest) and
``bench/results/<name>-<utc time>.json`` (history) and prints it. Helpers for
the scripts (environment description, percentiles, the report) live here too.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("wasm_engine.bench")


def project_root(start: Path | None = None) -> Path:
    """``$WASM_ENGINE_ROOT``, else the nearest folder above ``start`` (cwd) with bench/."""
    env = os.environ.get("WASM_ENGINE_ROOT")
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "bench").is_dir() and (folder / "compose.yaml").exists():
            return folder
    raise RuntimeError("no wasm-engine checkout here: run from the project or set WASM_ENGINE_ROOT")


def available(root: Path) -> list[str]:
    return sorted(
        p.stem.replace("_", "-")
        for p in (root / "bench").glob("*.py")
        if not p.stem.startswith("_")
    )


def environment() -> dict[str, Any]:
    """What a reader needs to compare figures: host, CPUs, Python, key versions."""
    import msgpack
    import zmq

    env: dict[str, Any] = {
        "host": platform.node(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for dist in ("wasmtime", "ray"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            env[dist] = importlib.metadata.version(dist)
    with contextlib.suppress(OSError):
        env["load_avg"] = os.getloadavg()
    return env


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def report(bench: str, figures: dict[str, Any], ratios: dict[str, Any], **extra: Any) -> None:
    """Print the one JSON line a bench script ends with."""
    doc = {"bench": bench, "figures": figures, "ratios": ratios, "env": environment(), **extra}
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def run_one(root: Path, name: str, extra: Sequence[str]) -> dict[str, Any]:
    script = root / "bench" / f"{name.replace('-', '_')}.py"
    if not script.exists():
        raise RuntimeError(f"no bench {name!r}; available: {', '.join(available(root))}")
    log.info("running bench %s", name)
    proc = subprocess.run(
        [sys.executable, str(script), *extra], cwd=root, stdout=subprocess.PIPE, check=False
    )
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench {name} failed with exit code {proc.returncode}")
    doc: dict[str, Any] = json.loads(lines[-1])
    results = root / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    (results / f"{name}.json").write_text(text)
    (results / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json").write_text(text)
    return doc


def main(name: str, *, as_json: bool, extra: Sequence[str] = ()) -> int:
    root = project_root()
    names = available(root) if name == "all" else [name]
    for one in names:
        doc = run_one(root, one, extra)
        if as_json:
            sys.stdout.write(json.dumps(doc) + "\n")
        else:
            sys.stdout.write(f"{doc['bench']}:\n")
            for group in ("figures", "ratios"):
                for key, value in doc[group].items():
                    sys.stdout.write(f"  {group[:-1]:<7} {key:<32} {value}\n")
    return 0
