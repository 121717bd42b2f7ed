"""The LLM engine's pure parts: sampling, stop sequences, parameters, the chat template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference_worker.device import cgroup_cpus, check_policy
from inference_worker.llm.chat import chatml, messages_of
from inference_worker.llm.params import GenerateParams
from inference_worker.llm.sampling import Sampler
from inference_worker.llm.stops import StopMatcher
from wasm_engine.errors import WasmEngineError


def logits(seed: int = 0, n: int = 1000) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=n).astype(np.float32)


def draws(params: GenerateParams, steps: int = 50) -> list[int]:
    s = Sampler(params)
    return [s.choose(logits(i)) for i in range(steps)]


def test_greedy_is_argmax() -> None:
    x = logits(3)
    assert Sampler(GenerateParams()).choose(x) == int(np.argmax(x))


def test_same_seed_same_tokens_other_seed_other_tokens() -> None:
    p = GenerateParams(temperature=1.0, seed=7)
    assert draws(p) == draws(p)
    assert draws(p) != draws(GenerateParams(temperature=1.0, seed=8))


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    x = logits(5)
    assert Sampler(GenerateParams(temperature=1.5, top_k=1, seed=1)).choose(x) == np.argmax(x)
    assert Sampler(GenerateParams(temperature=1.5, top_p=1e-9, seed=1)).choose(x) == np.argmax(x)


def test_top_k_only_picks_among_the_k_largest() -> None:
    x = logits(9)
    top = set(np.argsort(-x)[:5].tolist())
    s = Sampler(GenerateParams(temperature=5.0, top_k=5, seed=2))
    picks = {s.choose(x) for _ in range(200)}
    assert picks <= top and len(picks) > 1


def test_stop_sequence_cut_and_held_back_across_pieces() -> None:
    m = StopMatcher(("END",))
    assert m.feed("hello E") == ("hello ", False)  # "E" might start "END": held
    assert m.feed("N") == ("", False)
    assert m.feed("D and more") == ("", True)


def test_stop_false_alarm_releases_held_text() -> None:
    m = StopMatcher(("END", "\n\n"))
    assert m.feed("a E") == ("a ", False)
    assert m.feed("x\n") == ("Ex", False)
    assert m.flush() == "\n"


def test_no_stops_passes_text_through() -> None:
    assert StopMatcher(()).feed("abc") == ("abc", False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 0},
        {"max_tokens": 1.5},
        {"temperature": -1.0},
        {"temperature": float("nan")},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"seed": -1},
        {"stop": ("",)},
        {"stop": tuple(str(i) for i in range(9))},
    ],
)
def test_bad_params_are_typed_errors(kwargs: dict) -> None:
    with pytest.raises(WasmEngineError) as err:
        GenerateParams(**kwargs)
    assert err.value.code == "infer.bad_input"


def test_params_from_mapping() -> None:
    p = GenerateParams.from_mapping({"max_tokens": 4, "stop": "x", "seed": 3})
    assert (p.max_tokens, p.stop, p.seed) == (4, ("x",), 3)
    with pytest.raises(WasmEngineError, match="unknown"):
        GenerateParams.from_mapping({"max_token": 4})


def test_chatml_adds_the_default_system_turn() -> None:
    text = chatml(messages_of("Hi?"), "Be brief")
    assert text == (
        "<|im_start|>system\nBe brief<|im_end|>\n"
        "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )
    own = chatml([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], "X")
    assert own.startswith("<|im_start|>system\nS<|im_end|>") and "X" not in own


@pytest.mark.parametrize(
    "bad", [[], [{"role": "robot", "content": "x"}], [{"role": "user", "content": 3}], ["x"]]
)
def test_bad_messages_are_typed_errors(bad: list) -> None:
    with pytest.raises(WasmEngineError) as err:
        messages_of(bad)
    assert err.value.code == "infer.bad_input"


def test_policy_and_cgroup_quota(tmp_path: Path) -> None:
    assert check_policy("prefer_gpu") == "prefer_gpu"
    with pytest.raises(WasmEngineError):
        check_policy("gpu_please")
    f = tmp_path / "cpu.max"
    f.write_text("250000 100000\n")
    assert cgroup_cpus(f) == 3
    f.write_text("max 100000\n")
    assert cgroup_cpus(f) is None
    assert cgroup_cpus(tmp_path / "missing") is None
