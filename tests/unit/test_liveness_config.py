"""Peer liveness and reconnect backoff (pure, fake clock), and the settings rule:
a flag beats the environment, the environment beats the default."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from wasm_engine import config
from wasm_engine.config import ENV_PREFIX, Settings, add_arguments, from_args, from_env, to_env
from wasm_engine.liveness import Backoff, Liveness

S = 1_000_000_000


# ---------------------------------------------------------------------- Liveness


def test_liveness_expires_strictly_after_interval_times_liveness() -> None:
    live = Liveness(interval_ns=S, liveness=3, last_seen=10 * S)
    assert not live.expired(10 * S)
    assert not live.expired(13 * S)  # exactly 3 intervals: still alive
    assert live.expired(13 * S + 1)


def test_any_beat_resets_the_silence() -> None:
    live = Liveness(S, 3, 0)
    live.beat(2 * S)
    assert live.last_seen == 2 * S
    assert not live.expired(5 * S)
    assert live.expired(5 * S + 1)


def test_missed_counts_whole_intervals_and_never_goes_negative() -> None:
    live = Liveness(500_000_000, 3, 10 * S)
    assert live.missed(10 * S) == 0
    assert live.missed(10 * S + 499_999_999) == 0
    assert live.missed(10 * S + 500_000_000) == 1
    assert live.missed(12 * S + 250_000_000) == 4
    assert live.missed(9 * S) == 0  # a clock that went back


def test_age_in_seconds_never_negative() -> None:
    live = Liveness(S, 3, 10 * S)
    assert live.age_s(12 * S + 500_000_000) == 2.5
    assert live.age_s(9 * S) == 0.0


# ---------------------------------------------------------------------- Backoff


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.1, cap_s=1.0)
    delays = [backoff.next_delay() for _ in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.attempt == 6


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(initial_s=1.0, cap_s=30.0)
    assert [backoff.next_delay() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() == 1.0


def test_backoff_defaults() -> None:
    backoff = Backoff()
    assert (backoff.initial_s, backoff.cap_s, backoff.attempt) == (0.1, 5.0, 0)


# ---------------------------------------------------------------------- config


def test_defaults() -> None:
    s = from_env({})
    assert s == Settings()
    assert (s.front, s.back, s.telemetry) == (
        "tcp://127.0.0.1:5550",
        "tcp://127.0.0.1:5551",
        "tcp://127.0.0.1:5552",
    )
    assert (s.heartbeat_interval, s.heartbeat_liveness, s.credits) == (1.0, 3, 16)
    assert (s.queue_limit, s.max_attempts, s.result_ttl) == (10_000, 3, 300.0)


def test_every_field_has_a_wasm_engine_env_var_of_its_type() -> None:
    env = {
        "WASM_ENGINE_FRONT": "ipc:///tmp/front",
        "WASM_ENGINE_BACK": "ipc:///tmp/back",
        "WASM_ENGINE_TELEMETRY": "tcp://0.0.0.0:7000",
        "WASM_ENGINE_HOME": "/srv/we",
        "WASM_ENGINE_WASM_WORKERS": "4",
        "WASM_ENGINE_INFERENCE_WORKERS": "2",
        "WASM_ENGINE_HEARTBEAT_INTERVAL": "0.25",
        "WASM_ENGINE_HEARTBEAT_LIVENESS": "5",
        "WASM_ENGINE_CREDITS": "32",
        "WASM_ENGINE_CONCURRENCY": "3",
        "WASM_ENGINE_DEVICE": "cpu_ok",
        "WASM_ENGINE_MODELS": "/srv/models",
        "WASM_ENGINE_QUEUE_LIMIT": "50",
        "WASM_ENGINE_MAX_ATTEMPTS": "7",
        "WASM_ENGINE_MAX_DEPTH": "5",
        "WASM_ENGINE_SESSION_IDLE": "42.5",
        "WASM_ENGINE_RESULT_TTL": "12.5",
        "WASM_ENGINE_WORKER_NAME": "w-x",
        "WASM_ENGINE_LOG_LEVEL": "DEBUG",
        "WASM_ENGINE_STACK": "ci7",
        "WASM_ENGINE_SHM_ARENA": "1048576",
        "WASM_ENGINE_SHM_SEGMENT": "524288",
        "WASM_ENGINE_TENSOR_INLINE_CAP": "4096",
        "WASM_ENGINE_LEASE_TTL": "2.5",
        "WASM_ENGINE_MONITOR": "0",
        "WASM_ENGINE_MONITOR_HOST": "0.0.0.0",
        "WASM_ENGINE_MONITOR_PORT": "9099",
    }
    assert {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)} == set(env)
    s = from_env(env)
    assert s == Settings(
        front="ipc:///tmp/front",
        back="ipc:///tmp/back",
        telemetry="tcp://0.0.0.0:7000",
        home="/srv/we",
        wasm_workers=4,
        inference_workers=2,
        heartbeat_interval=0.25,
        heartbeat_liveness=5,
        credits=32,
        concurrency=3,
        device="cpu_ok",
        models="/srv/models",
        queue_limit=50,
        max_attempts=7,
        max_depth=5,
        session_idle=42.5,
        result_ttl=12.5,
        worker_name="w-x",
        log_level="DEBUG",
        stack="ci7",
        shm_arena=1 << 20,
        shm_segment=1 << 19,
        tensor_inline_cap=4096,
        lease_ttl=2.5,
        monitor=False,
        monitor_host="0.0.0.0",
        monitor_port=9099,
    )
    assert type(s.credits) is int
    assert type(s.result_ttl) is float


def test_empty_and_unrelated_variables_are_ignored() -> None:
    s = from_env({"WASM_ENGINE_CREDITS": "", "CREDITS": "9", "WASM_ENGINE_NOPE": "1"})
    assert s == Settings()


def test_from_env_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WASM_ENGINE_QUEUE_LIMIT", "77")
    assert from_env().queue_limit == 77


def test_overrides_beat_the_environment_and_none_means_unset() -> None:
    env = {"WASM_ENGINE_CREDITS": "5", "WASM_ENGINE_MAX_ATTEMPTS": "4"}
    s = from_env(env, credits=9, max_attempts=None)
    assert (s.credits, s.max_attempts) == (9, 4)


@pytest.mark.parametrize(
    ("name", "raw"),
    [("credits", "many"), ("queue_limit", "1.5"), ("heartbeat_interval", "1s")],
)
def test_a_bad_number_names_the_variable(name: str, raw: str) -> None:
    var = ENV_PREFIX + name.upper()
    with pytest.raises(ValueError, match=var) as info:
        from_env({var: raw})
    assert repr(raw) in str(info.value)


def _parser(names: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser, names)
    return parser


def test_flag_beats_env_beats_default() -> None:
    parser = _parser(["credits", "queue_limit", "heartbeat_interval", "front"])
    args = parser.parse_args(["--credits", "7", "--front", "ipc:///tmp/f"])
    env = {"WASM_ENGINE_CREDITS": "5", "WASM_ENGINE_QUEUE_LIMIT": "50"}
    s = from_args(args, env)
    assert s.credits == 7  # flag over env
    assert s.front == "ipc:///tmp/f"  # flag over default
    assert s.queue_limit == 50  # env over default
    assert s.heartbeat_interval == 1.0  # default


def test_flags_are_dashed_typed_and_default_to_none() -> None:
    parser = _parser(["heartbeat_interval", "max_attempts"])
    assert vars(parser.parse_args([])) == {"heartbeat_interval": None, "max_attempts": None}
    args = parser.parse_args(["--heartbeat-interval", "0.5", "--max-attempts", "2"])
    assert vars(args) == {"heartbeat_interval": 0.5, "max_attempts": 2}
    assert "WASM_ENGINE_MAX_ATTEMPTS" in parser.format_help()


def test_a_bad_flag_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser(["credits"]).parse_args(["--credits", "x"])
    assert "--credits" in capsys.readouterr().err


def test_from_args_ignores_namespace_entries_that_are_not_settings() -> None:
    args = argparse.Namespace(credits=3, verbose=True, command="up")
    assert from_args(args, {}) == Settings(credits=3)


def test_to_env_round_trips() -> None:
    s = Settings(
        front="ipc:///tmp/a",
        wasm_workers=3,
        heartbeat_interval=0.2,
        heartbeat_liveness=4,
        result_ttl=1.5,
        worker_name="worker-7",
        log_level="WARNING",
    )
    env = to_env(s)
    assert env["WASM_ENGINE_HEARTBEAT_INTERVAL"] == "0.2"
    assert env["WASM_ENGINE_WASM_WORKERS"] == "3"
    assert len(env) == len(dataclasses.fields(Settings))
    assert from_env(env) == s
    assert from_env(to_env(Settings())) == Settings()


def test_to_env_of_chosen_names_only() -> None:
    s = Settings(credits=2)
    assert to_env(s, ["credits", "back"]) == {
        "WASM_ENGINE_CREDITS": "2",
        "WASM_ENGINE_BACK": "tcp://127.0.0.1:5551",
    }


def test_replace_returns_a_new_frozen_settings() -> None:
    s = Settings()
    t = s.replace(credits=1)
    assert (s.credits, t.credits) == (16, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.credits = 2  # type: ignore[misc]
    assert config.ENV_PREFIX == "WASM_ENGINE_"
