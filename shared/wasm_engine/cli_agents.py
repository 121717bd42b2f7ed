"""The agent commands of ``wasm-engine``: ``run``, ``agents add``, ``agents list``.

``run AGENT [--input JSON] [--fuel N] [--timeout S] [--memory B] [--priority P] [--seed S]
[--reuse] [--json]`` runs a wasm agent once (AGENT: a module file, put first, or a stored
agent's digest or name) and prints its output, or ``error CODE: MESSAGE`` with exit code 1;
``agents add PATH [--manifest FILE]`` stores an agent and ``agents list`` prints the stored
ones. Their options are declared in ``cli.build_parser``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from . import config
from .errors import WasmEngineError

log = logging.getLogger("wasm_engine.cli")
out = sys.stdout.write  # command output (not logs) goes to stdout


def cmd_run(s: config.Settings, a: argparse.Namespace) -> int:
    from .client import Client

    try:
        data: Any = json.loads(a.input)
    except json.JSONDecodeError as exc:
        log.error("--input is not JSON: %s", exc)
        return 2
    with Client(s.front, timeout=a.wait) as client:
        agent = _resolve_agent(client, a.agent, a.reuse)
        try:
            result = client.run(
                agent,
                data,
                fuel=a.fuel,
                timeout=a.timeout,
                memory=a.memory,
                priority=a.priority,
                seed=a.seed,
            )
        except WasmEngineError as err:
            if a.json:
                out(json.dumps({"ok": False, "error": err.to_body()}, default=repr) + "\n")
            else:
                out(f"error {err.code}: {err.message}\n")
            return 1
    if a.json:
        doc = {
            "ok": True,
            "task_id": result.task_id,
            "output": result.output,
            "stats": result.stats,
        }
        out(json.dumps(doc, default=repr) + "\n")
    else:
        out(json.dumps(result.output, default=repr) + "\n")
        st = result.stats
        out(
            f"# {st.get('worker')} run {st.get('run_us')} us, queued {st.get('queue_us')} us, "
            f"fuel {st.get('fuel_used')}, attempts {st.get('attempts')}\n"
        )
    return 0


def _resolve_agent(client: Any, ref: str, reuse: bool) -> Any:
    """A module path (put here, with the manifest beside it), else a stored
    agent's digest, else a stored agent's name (the one stored last)."""
    if Path(ref).is_file():
        return client.put_agent(ref, reuse=True if reuse else None)
    agents = client.status().get("agents", [])
    found = [x for x in agents if ref in (x["digest"], x["name"])]
    if not found:
        raise ValueError(f"{ref!r} is neither a module file nor a stored agent's digest or name")
    return found[-1]["digest"]


def cmd_agents_add(s: config.Settings, a: argparse.Namespace) -> int:
    from .client import Client

    with Client(s.front, timeout=a.wait) as client:
        ref = client.put_agent(a.path, manifest=a.manifest)
    doc = {"digest": ref.digest, "name": ref.name, "version": ref.version}
    if a.json:
        out(json.dumps(doc) + "\n")
    else:
        out(f"{ref.digest}  {ref.name or '-'} {ref.version or '-'}\n")
    return 0


def cmd_agents_list(s: config.Settings, a: argparse.Namespace) -> int:
    from .client import Client

    with Client(s.front, timeout=a.wait) as client:
        agents = client.status().get("agents", [])
    if a.json:
        out(json.dumps(agents) + "\n")
        return 0
    for x in agents:
        out(f"{x['digest']}  {x['name'] or '-':<24} {x['version'] or '-':<10} {x['size']:>9}\n")
    return 0
