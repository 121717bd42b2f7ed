"""The LLM engine on the real SmolLM2 int4 model under onnxruntime (CPU here)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from inference_worker.device import STATS, gpu_offered
from inference_worker.llm import GenerateParams, LLMEngine, TokenEvent
from wasm_engine.errors import WasmEngineError

# the first test may build the model (session fixture): allow for a slow machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Name three prime numbers.",
    "What is 2+2?",
    "Give me a synonym for happy.",
    "Translate 'good morning' to Spanish.",
    "Why is the sky blue?",
    "List two colors.",
]


def drain(engine: LLMEngine, limit: int = 2000) -> dict[str, list[TokenEvent]]:
    out: dict[str, list[TokenEvent]] = {}
    for _ in range(limit):
        if not engine.busy:
            return out
        for ev in engine.step():
            out.setdefault(ev.request_id, []).append(ev)
    raise AssertionError("engine did not finish")


def test_greedy_capital_of_france_is_paris(llm: LLMEngine) -> None:
    r = llm.generate("What is the capital of France?", GenerateParams(max_tokens=16))
    assert "Paris" in r.text
    assert r.device == "cpu" or r.device == "cuda"
    assert len(r.tokens) <= 16 and r.prompt_tokens > 10


def test_continuous_batch_is_token_for_token_batch_one(llm: LLMEngine) -> None:
    params = GenerateParams(max_tokens=24)
    alone = {p: llm.generate(p, params).tokens for p in PROMPTS}
    # four start together, the rest join while they decode: rows are reused as others finish
    for i, p in enumerate(PROMPTS[:4]):
        llm.add(str(i), p, params)
    events: dict[str, list[TokenEvent]] = {}
    for step in range(3):
        for ev in llm.step():
            events.setdefault(ev.request_id, []).append(ev)
        llm.add(str(4 + step), PROMPTS[4 + step], params)
    llm.add("7", PROMPTS[7], params)
    for rid, evs in drain(llm).items():
        events.setdefault(rid, []).extend(evs)
    for i, p in enumerate(PROMPTS):
        assert [e.token_id for e in events[str(i)]] == alone[p], p
        assert events[str(i)][-1].finished
    assert llm.kv.free == llm.max_batch


def test_same_seed_same_text_in_and_out_of_a_batch(llm: LLMEngine) -> None:
    p = GenerateParams(max_tokens=20, temperature=0.9, top_k=40, top_p=0.95, seed=11)
    a = llm.generate("Tell me a story about a cat.", p)
    b = llm.generate("Tell me a story about a cat.", p)
    c = llm.generate("Tell me a story about a cat.", GenerateParams(**{**p.__dict__, "seed": 12}))
    assert a.text == b.text and a.tokens == b.tokens
    assert c.tokens != a.tokens
    llm.add("s", "Tell me a story about a cat.", p)
    llm.add("g", "What is 2+2?", GenerateParams(max_tokens=30))
    batched = drain(llm)
    assert [e.token_id for e in batched["s"]] == a.tokens


def test_decode_steps_are_counted_by_the_sequences_sharing_them(llm: LLMEngine) -> None:
    """The batch sizes the heartbeats report for the LLM: one run per batched decode step,
    sized by its sequences (a prefill serves one request and is not a run)."""
    before, steps = llm.served.report(), llm.counters["decode_steps"]
    for i, prompt in enumerate(PROMPTS[:3]):
        llm.add(f"served-{i}", prompt, GenerateParams(max_tokens=6))
    tokens = sum(len(evs) for evs in drain(llm).values())
    after = llm.served.report()
    ran = Counter(after["batches"])
    ran.subtract(before["batches"])
    ran = +ran
    assert after["runs"] - before["runs"] == llm.counters["decode_steps"] - steps
    assert sum(ran.values()) == after["runs"] - before["runs"]
    # every token but each request's first (its prefill's) came from a decode step
    assert sum(int(size) * n for size, n in ran.items()) == after["rows"] - before["rows"]
    assert after["rows"] - before["rows"] == tokens - 3
    assert "3" in ran and set(ran) <= {"1", "2", "3"}


def test_stop_sequence_and_max_tokens(llm: LLMEngine) -> None:
    r = llm.generate(
        "What is the capital of France?", GenerateParams(max_tokens=16, stop=("Paris",))
    )
    assert r.reason == "stop" and "Paris" not in r.text and r.text.strip()
    r = llm.generate("Write a long poem about rivers.", GenerateParams(max_tokens=5))
    assert r.reason == "length" and len(r.tokens) == 5


def test_end_of_context_finishes_with_length(smollm2_dir: Path) -> None:
    small = LLMEngine(smollm2_dir, max_batch=2, max_seq=48)
    r = small.generate("Write a long poem about rivers.", GenerateParams(max_tokens=100))
    assert r.reason == "length" and r.prompt_tokens + len(r.tokens) == 48 + 1


def test_prompt_too_long_is_typed_and_engine_keeps_serving(llm: LLMEngine) -> None:
    with pytest.raises(WasmEngineError) as err:
        llm.add("long", "word " * 600)
    assert err.value.code == "infer.prompt_too_long"
    assert err.value.detail["context"] == 512
    assert not llm.busy
    assert "Paris" in llm.generate("What is the capital of France?").text


def test_cancel_mid_stream_frees_the_row_and_others_go_on(llm: LLMEngine) -> None:
    params = GenerateParams(max_tokens=20)
    alone = llm.generate(PROMPTS[1], params).tokens
    llm.add("gone", PROMPTS[0], params)
    llm.add("stays", PROMPTS[1], params)
    got: list[TokenEvent] = []
    for _ in range(3):
        got += [e for e in llm.step() if e.request_id == "stays"]
    free_before = llm.kv.free
    assert llm.cancel("gone") and not llm.cancel("gone")
    assert llm.kv.free == free_before + 1
    rest = drain(llm)
    assert "gone" not in rest
    assert [e.token_id for e in got + rest["stays"]] == alone
    assert llm.stats()["cancelled"] >= 1


def test_prefills_per_step_admits_a_burst_gradually(smollm2_dir: Path) -> None:
    eng = LLMEngine(smollm2_dir, max_batch=4, max_seq=128, prefills_per_step=1)
    for i in range(3):
        eng.add(str(i), PROMPTS[i], GenerateParams(max_tokens=6))
    assert [len(eng.step()) for _ in range(3)] == [1, 2, 3]
    assert set(drain(eng)) == {"0", "1", "2"}


def test_cancel_while_waiting(smollm2_dir: Path) -> None:
    one = LLMEngine(smollm2_dir, max_batch=1, max_seq=128)
    one.add("a", "Hi", GenerateParams(max_tokens=3))
    one.add("b", "Hello", GenerateParams(max_tokens=3))
    one.step()
    assert one.stats()["waiting"] == 1 and one.cancel("b")
    assert set(drain(one)) == {"a"}


def test_bad_requests_are_typed(llm: LLMEngine) -> None:
    with pytest.raises(WasmEngineError) as err:
        llm.add("x", [{"role": "robot", "content": "hi"}])
    assert err.value.code == "infer.bad_input"
    llm.add("dup", "Hi", GenerateParams(max_tokens=2))
    with pytest.raises(WasmEngineError) as err:
        llm.add("dup", "Hi")
    assert err.value.code == "infer.bad_input"
    drain(llm)


def test_missing_and_corrupt_models(tmp_path: Path, smollm2_dir: Path) -> None:
    with pytest.raises(WasmEngineError) as err:
        LLMEngine(tmp_path / "nothing")
    assert err.value.code == "infer.model_missing"
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in smollm2_dir.iterdir():
        (broken / f.name).symlink_to(f)
    (broken / "model.onnx").unlink()
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(WasmEngineError) as err:
        LLMEngine(broken, max_seq=64)
    assert err.value.code == "infer.bad_model"
    (broken / "llm.json").unlink()
    (broken / "llm.json").write_text("{")
    with pytest.raises(WasmEngineError) as err:
        LLMEngine(broken, max_seq=64)
    assert err.value.code == "infer.bad_model"


@pytest.mark.skipif(gpu_offered(), reason="this onnxruntime may load CUDA here")
def test_require_gpu_without_gpu_is_device_unavailable(smollm2_dir: Path) -> None:
    with pytest.raises(WasmEngineError) as err:
        LLMEngine(smollm2_dir, device="require_gpu", max_seq=64)
    assert err.value.code == "infer.device_unavailable"


def test_require_gpu_when_cuda_cannot_load(smollm2_dir: Path) -> None:
    """onnxruntime-gpu on a machine without a GPU: the session silently gets CPU only; the
    engine must see that via get_providers() and refuse require_gpu, and count prefer_gpu."""
    if not gpu_offered():
        pytest.skip("this onnxruntime has no CUDA provider at all")
    eng = LLMEngine(smollm2_dir, device="prefer_gpu", max_seq=64)
    if eng.device == "cuda":
        pytest.skip("a GPU is usable here")
    before = STATS.fallbacks
    LLMEngine(smollm2_dir, device="prefer_gpu", max_seq=64)
    assert STATS.fallbacks == before + 1
    with pytest.raises(WasmEngineError) as err:
        LLMEngine(smollm2_dir, device="require_gpu", max_seq=64)
    assert err.value.code == "infer.device_unavailable"


def test_streamed_text_never_splits_a_character(llm: LLMEngine) -> None:
    from inference_worker.llm.chat import Detokenizer

    text = "Crème brûlée costs 5 € 🌍 — 東京"
    ids = llm.tokenizer.tok.encode(text, add_special_tokens=False).ids
    d = Detokenizer(llm.tokenizer)
    pieces = [d.push(t) for t in ids]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_second_build_with_the_output_present_does_nothing(smollm2_dir: Path) -> None:
    from inference_worker.build import build_model

    before = (smollm2_dir / "llm.json").stat().st_mtime_ns
    assert build_model("smollm2", smollm2_dir.parent) == smollm2_dir
    assert (smollm2_dir / "llm.json").stat().st_mtime_ns == before
