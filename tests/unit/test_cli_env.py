"""Every CLI option is also an environment variable of the same name."""

from __future__ import annotations

import pytest

from wasm_engine import cli, config


def parse(argv: list[str], env: dict[str, str]):
    parser = cli.build_parser()
    cli.env_defaults(parser, env)
    return parser.parse_args(argv)


def test_command_options_default_to_their_variables() -> None:
    env = {"WASM_ENGINE_FUEL": "123", "WASM_ENGINE_TIMEOUT": "2.5", "WASM_ENGINE_JSON": "yes"}
    args = parse(["run", "a.wasm"], env)
    assert (args.fuel, args.timeout, args.json) == (123, 2.5, True)


def test_a_flag_beats_the_variable() -> None:
    args = parse(["run", "a.wasm", "--fuel", "7"], {"WASM_ENGINE_FUEL": "123"})
    assert args.fuel == 7


def test_settings_still_come_through_config() -> None:
    env = {"WASM_ENGINE_WASM_WORKERS": "3", "WASM_ENGINE_FRONT": "ipc:///tmp/x"}
    args = parse(["up"], env)
    settings = config.from_args(args, env)
    assert (settings.wasm_workers, settings.front) == (3, "ipc:///tmp/x")
    assert config.from_args(parse(["up", "--wasm-workers", "5"], env), env).wasm_workers == 5


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="WASM_ENGINE_FUEL='lots' is not a valid int"):
        parse(["run", "a.wasm"], {"WASM_ENGINE_FUEL": "lots"})


def test_main_answers_a_bad_variable_with_exit_code_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASM_ENGINE_SEED", "x")
    assert cli.main(["run", "a.wasm"]) == 2


def test_unknown_options_are_refused_except_for_bench() -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["status", "--bogus"])
    assert exc.value.code == 2


def test_bench_passes_unknown_options_to_its_script(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_bench(name: str, *, as_json: bool, extra: list[str]) -> int:
        seen.update(name=name, as_json=as_json, extra=extra)
        return 0

    from wasm_engine import benchmark

    monkeypatch.setattr(benchmark, "main", fake_bench)
    assert cli.main(["bench", "tiny-tasks", "--json", "--", "--count", "5", "--no-ray"]) == 0
    assert seen == {"name": "tiny-tasks", "as_json": True, "extra": ["--count", "5", "--no-ray"]}
