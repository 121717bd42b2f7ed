"""The ``wasm-engine`` command: up, down, status, run, agents add|list, logs, models build, bench.

Every option is also an environment variable of the same name
(``--wasm-workers`` = ``WASM_ENGINE_WASM_WORKERS``); see ``config``. Exit codes:
0 ok, 1 a task or request failed (its error code is printed), 2 usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import cli_models, config
from .errors import WasmEngineError
from .logs import setup_logging

log = logging.getLogger("wasm_engine.cli")
out = sys.stdout.write  # command output (not logs) goes to stdout

ENDPOINTS = ["front", "back", "telemetry", "home"]


def _bindir() -> Path:
    return Path(sys.executable).parent


def cmd_up(s: config.Settings, a: argparse.Namespace) -> int:
    from . import stack

    if a.shm_arena is None and not os.environ.get(config.ENV_PREFIX + "SHM_ARENA"):
        s = s.replace(shm_arena=stack.LOCAL_SHM_ARENA)  # each worker's preflight checks it
    stack.up(s, bindir=_bindir(), wait_timeout=a.wait, progress=lambda m: log.info("%s", m))
    out(
        f"stack up: {s.wasm_workers} wasm worker(s), {s.inference_workers} inference worker(s)\n"
        f"  front     {s.front}\n  back      {s.back}\n"
        f"  telemetry {s.telemetry}\n  home      {Path(s.home).resolve()}\n"
        f"  monitor   {stack.monitor_url(s) or 'off (--no-monitor)'}\n"
    )
    return 0


def cmd_down(s: config.Settings, a: argparse.Namespace) -> int:
    from . import stack

    was_up = stack.down(s, bindir=_bindir(), timeout=a.wait)
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


def cmd_logs(s: config.Settings, a: argparse.Namespace) -> int:
    from . import stack

    path = stack.log_path(s, a.service)
    if not path.exists():
        log.error("no log for %r at %s", a.service, path)
        return 1
    lines = path.read_text(errors="replace").splitlines()
    out("\n".join(lines[-a.lines :]) + "\n")
    return 0


def cmd_bench(s: config.Settings, a: argparse.Namespace) -> int:
    from . import benchmark

    return benchmark.main(a.name, as_json=a.json, extra=a.args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wasm-engine", description="A local-first multi-agent runtime."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str, settings: list[str], wait: float) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        config.add_arguments(sp, [*settings, "log_level"])
        sp.add_argument(
            "--wait", type=float, default=wait, help="seconds to wait (default %(default)s)"
        )
        return sp

    up = command(
        "up",
        "start the local stack under supervisord",
        [
            *ENDPOINTS,
            "wasm_workers",
            "inference_workers",
            "credits",
            "concurrency",
            "device",
            "models",
            "heartbeat_interval",
            "heartbeat_liveness",
            "stack",
            "shm_arena",
            "monitor",
            "monitor_host",
            "monitor_port",
        ],
        120.0,
    )
    up.set_defaults(fn=cmd_up)
    down_help = "stop the local stack; leaves no process and no shm segment"
    command("down", down_help, [*ENDPOINTS, "stack"], 30.0).set_defaults(fn=cmd_down)
    st = command("status", "workers, queues and counters", ["front"], 5.0)
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)
    run = command("run", "run a wasm agent once", ["front"], 120.0)
    run.add_argument("agent", help="path of the .wasm module, or a stored agent's digest or name")
    run.add_argument("--input", default="null", help="JSON input (default null)")
    run.add_argument("--fuel", type=int, default=None)
    run.add_argument("--timeout", type=float, default=None, help="run budget in seconds")
    run.add_argument("--memory", type=int, default=None, help="linear memory cap in bytes")
    run.add_argument("--priority", type=int, default=0)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--reuse", action="store_true", help="keep the agent's instance between tasks")
    run.add_argument("--json", action="store_true")
    run.set_defaults(fn=cmd_run)
    ag = sub.add_parser("agents", help="register and list agents (module + manifest)")
    agents_sub = ag.add_subparsers(dest="agents_command", required=True)
    add = agents_sub.add_parser("add", help="store an agent; prints {digest, name, version}")
    config.add_arguments(add, ["front", "log_level"])
    add.add_argument("--wait", type=float, default=30.0, help="seconds to wait")
    add.add_argument("path", help="the .wasm module (its manifest: PATH with .toml/.json)")
    add.add_argument("--manifest", default=None, help="manifest file (.toml or .json)")
    add.add_argument("--json", action="store_true")
    add.set_defaults(fn=cmd_agents_add)
    ls = agents_sub.add_parser("list", help="the agents the orchestrator stores")
    config.add_arguments(ls, ["front", "log_level"])
    ls.add_argument("--wait", type=float, default=5.0, help="seconds to wait")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_agents_list)
    lg = command("logs", "print a service's log", ["home"], 0.0)
    lg.add_argument("service", help="orchestrator, wasm-worker-0, supervisord, ...")
    lg.add_argument("-n", "--lines", type=int, default=100)
    lg.set_defaults(fn=cmd_logs)
    cli_models.add_parsers(sub)
    bn = command("bench", "run a benchmark (or 'all')", [], 0.0)
    bn.add_argument("name")
    bn.add_argument("--json", action="store_true")
    bn.set_defaults(args=[])  # options it does not know go to the bench script
    bn.set_defaults(fn=cmd_bench)
    return p


def env_defaults(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Every ``--some-option`` of every command defaults to ``$WASM_ENGINE_SOME_OPTION``
    when set (settings are already read by ``config``; this covers the rest, such as
    ``run --fuel``). A flag on the command line still wins."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                env_defaults(sub, env)
            continue
        long = [o for o in action.option_strings if o.startswith("--")]
        if not long or action.dest in _SETTING_NAMES or isinstance(action, argparse._HelpAction):
            continue
        raw = env.get(config.ENV_PREFIX + long[0][2:].replace("-", "_").upper())
        if raw is None or raw == "":
            continue
        if isinstance(action, argparse._StoreTrueAction):
            action.default = raw.strip().lower() in {"1", "true", "yes", "on"}
            continue
        try:
            action.default = action.type(raw) if callable(action.type) else raw
        except ValueError:
            name = config.ENV_PREFIX + long[0][2:].replace("-", "_").upper()
            kind = getattr(action.type, "__name__", "value")
            raise ValueError(f"{name}={raw!r} is not a valid {kind}") from None


_SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(config.Settings))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        env_defaults(parser, os.environ)
        args, extra = parser.parse_known_args(argv)
        if extra and args.command != "bench":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.args = [a for a in extra if a != "--"]
    except ValueError as exc:  # a bad value in the environment
        sys.stderr.write(f"wasm-engine: {exc}\n")
        return 2
    try:
        settings = config.from_args(args)
    except ValueError as exc:
        sys.stderr.write(f"wasm-engine: {exc}\n")
        return 2
    setup_logging(settings.log_level, "wasm-engine")
    try:
        return int(args.fn(settings, args))
    except WasmEngineError as err:
        log.error("%s: %s", err.code, err.message)
        return 1
    except (TimeoutError, RuntimeError, OSError, ValueError) as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
