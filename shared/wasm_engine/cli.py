"""The ``wasm-engine`` command: up, down, status, run, agents add|list, logs, models build, bench.

This module owns the entry point (:func:`main`) and the command line itself
(:func:`build_parser`, :func:`env_defaults`); the commands live in ``cli_stack`` (up, down,
status, logs), ``cli_agents`` (run, agents add|list) and ``cli_models`` (models build,
generate, infer). Every option is also an environment variable of the same name
(``--wasm-workers`` = ``WASM_ENGINE_WASM_WORKERS``); see ``config``. Exit codes:
0 ok, 1 a task or request failed (its error code is printed), 2 usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from . import cli_agents, cli_models, cli_stack, config
from .errors import WasmEngineError
from .logs import setup_logging

log = logging.getLogger("wasm_engine.cli")

ENDPOINTS = ["front", "back", "telemetry", "home"]


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
    up.set_defaults(fn=cli_stack.cmd_up)
    down_help = "stop the local stack; leaves no process and no shm segment"
    command("down", down_help, [*ENDPOINTS, "stack"], 30.0).set_defaults(fn=cli_stack.cmd_down)
    st = command("status", "workers, queues and counters", ["front"], 5.0)
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cli_stack.cmd_status)
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
    run.set_defaults(fn=cli_agents.cmd_run)
    ag = sub.add_parser("agents", help="register and list agents (module + manifest)")
    agents_sub = ag.add_subparsers(dest="agents_command", required=True)
    add = agents_sub.add_parser("add", help="store an agent; prints {digest, name, version}")
    config.add_arguments(add, ["front", "log_level"])
    add.add_argument("--wait", type=float, default=30.0, help="seconds to wait")
    add.add_argument("path", help="the .wasm module (its manifest: PATH with .toml/.json)")
    add.add_argument("--manifest", default=None, help="manifest file (.toml or .json)")
    add.add_argument("--json", action="store_true")
    add.set_defaults(fn=cli_agents.cmd_agents_add)
    ls = agents_sub.add_parser("list", help="the agents the orchestrator stores")
    config.add_arguments(ls, ["front", "log_level"])
    ls.add_argument("--wait", type=float, default=5.0, help="seconds to wait")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cli_agents.cmd_agents_list)
    lg = command("logs", "print a service's log", ["home"], 0.0)
    lg.add_argument("service", help="orchestrator, wasm-worker-0, supervisord, ...")
    lg.add_argument("-n", "--lines", type=int, default=100)
    lg.set_defaults(fn=cli_stack.cmd_logs)
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
