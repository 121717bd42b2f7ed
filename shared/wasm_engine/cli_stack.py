"""The stack commands of ``wasm-engine``: ``up``, ``down``, ``status``, ``logs``.

``up`` and ``down`` start and stop the local stack through :mod:`wasm_engine.stack`;
``status`` prints what the orchestrator reports of its workers, queues and counters
(``--json``: the whole status document); ``logs SERVICE [-n LINES]`` prints the end of a
process's log in the run folder. Their options are declared in ``cli.build_parser``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import config

log = logging.getLogger("wasm_engine.cli")
out = sys.stdout.write  # command output (not logs) goes to stdout


def cmd_up(s: config.Settings, a: argparse.Namespace) -> int:
    from . import stack, stack_conf

    if a.shm_arena is None and not os.environ.get(config.ENV_PREFIX + "SHM_ARENA"):
        s = s.replace(shm_arena=stack_conf.LOCAL_SHM_ARENA)  # each worker's preflight checks it
    stack.up(
        s,
        bindir=stack_conf.default_bindir(),
        wait_timeout=a.wait,
        progress=lambda m: log.info("%s", m),
    )
    out(
        f"stack up: {s.wasm_workers} wasm worker(s), {s.inference_workers} inference worker(s)\n"
        f"  front     {s.front}\n  back      {s.back}\n"
        f"  telemetry {s.telemetry}\n  home      {Path(s.home).resolve()}\n"
        f"  monitor   {stack_conf.monitor_url(s) or 'off (--no-monitor)'}\n"
    )
    return 0


def cmd_down(s: config.Settings, a: argparse.Namespace) -> int:
    from . import stack, stack_conf

    was_up = stack.down(s, bindir=stack_conf.default_bindir(), timeout=a.wait)
    out("stack stopped\n" if was_up else "no stack was running\n")
    return 0


def cmd_status(s: config.Settings, a: argparse.Namespace) -> int:
    from .client import Client

    with Client(s.front, timeout=a.wait) as client:
        status = client.status()
    if a.json:
        out(json.dumps(status, indent=2, sort_keys=True) + "\n")
        return 0
    o = status["orchestrator"]
    out(
        f"orchestrator {o['name']} v{o['version']} up {o['uptime_s']:.0f}s, "
        f"{o['tasks_known']} tasks known\n"
    )
    out(
        f"{'worker':<28} {'kind':<9} {'state':<8} {'credits':>7} {'inflight':>8} {'done':>8} "
        f"{'hb age':>7}  device\n"
    )
    for w in status["workers"]:
        out(
            f"{w['name']:<28} {w['kind']:<9} {w['state']:<8} {w['credits']:>7} {w['inflight']:>8} "
            f"{w['completed']:>8} {w['heartbeat_age_s']:>6.1f}s  {w['device']}\n"
        )
    for key, q in sorted(status["queues"].items()):
        out(f"queue {key}: {q['depth']} of {q['limit']}\n")
    counters = ", ".join(f"{k}={v}" for k, v in sorted(status["counters"].items()))
    out(f"counters: {counters or 'none'}\n")
    return 0


def cmd_logs(s: config.Settings, a: argparse.Namespace) -> int:
    from . import stack_conf

    path = stack_conf.log_path(s, a.service)
    if not path.exists():
        log.error("no log for %r at %s", a.service, path)
        return 1
    lines = path.read_text(errors="replace").splitlines()
    out("\n".join(lines[-a.lines :]) + "\n")
    return 0
