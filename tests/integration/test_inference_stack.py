"""``generate`` and ``infer`` through a real orchestrator and inference worker (real
ipc:// sockets, real onnxruntime, the real SmolLM2 build and the mlp model):
streaming, seeded sampling, batching across concurrent requests, typed errors,
and a client that disconnects mid-stream (its sequence leaves the batch)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference_worker.build import build_model
from inference_worker.handler import InferenceHandler
from inference_worker.llm import GenerateParams, LLMEngine
from inference_worker.repository import ModelRepository
from inference_worker.serving import Server
from wasm_engine import AsyncClient, Client, WasmEngineError
from wasm_engine import errors as E
from wasm_engine.config import Settings
from wasm_engine.tensors import TensorPlane
from wasm_engine.tensors.arena import Slot
from wasm_engine.worker_loop import WorkerLoop

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def server(smollm2_dir: Path) -> Iterator[Server]:
    models = smollm2_dir.parent
    build_model("mlp", models)
    repo = ModelRepository(models)
    repo.load_all()
    engine = LLMEngine(smollm2_dir, max_batch=4, max_seq=512)
    srv = Server(engine, "smollm2", repo)
    yield srv
    srv.close()


@pytest.fixture
def stack(make_stack: Callable[..., Settings], server: Server) -> Iterator[Settings]:
    settings = make_stack(credits=8)
    tensors = TensorPlane(None, owner="inference-test")  # as its main: maps others' segments
    loop = WorkerLoop(
        settings.replace(worker_name="inference-test"), InferenceHandler(server, tensors)
    )
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    with Client(settings.front, timeout=10) as client:
        end = time.monotonic() + 10
        while len(client.status()["workers"]) < 2:
            assert time.monotonic() < end, "the inference worker did not register"
            time.sleep(0.02)
    yield settings
    loop.stop()
    thread.join(10)


def test_generate_streams_and_answers_paris(stack: Settings, server: Server) -> None:
    pieces: list[str] = []
    with Client(stack.front, timeout=60) as client:
        out = client.generate(QUESTION, max_tokens=16, on_text=pieces.append)
    assert "Paris" in out["text"] and out["device"] == "cpu" and out["finish"] in {"stop", "length"}
    assert "".join(pieces) == out["text"] and len(pieces) > 1
    assert out["tokens"] <= 16 and out["prompt_tokens"] > 5


def test_concurrent_requests_share_the_batch_and_match_batch_one(
    stack: Settings, server: Server
) -> None:
    prompts = [QUESTION, "Name a color.", "What is 2 + 2?", "Say hello."]
    assert server.llm is not None
    alone = [server_alone(server, p) for p in prompts]
    with Client(stack.front, timeout=120) as client:
        futures = [client.submit_generate(p, max_tokens=12) for p in prompts]
        outs = [f.result(120).output for f in futures]
        sampled = [
            client.generate(QUESTION, max_tokens=12, temperature=0.9, seed=s) for s in (5, 5, 6)
        ]
    assert [o["text"] for o in outs] == alone  # greedy: batched = batch-1, token for token
    assert sampled[0]["text"] == sampled[1]["text"]  # same seed, same text
    assert sampled[0]["text"] != sampled[2]["text"] or sampled[0]["tokens"] != sampled[2]["tokens"]


def server_alone(server: Server, prompt: str) -> str:
    done: list[str] = []
    fut = server.generate(f"alone-{prompt}", prompt, GenerateParams(max_tokens=12), "cpu_ok", None)
    done.append(fut.result(60)["text"])
    return done[0]


def test_infer_through_the_stack_matches_in_process(stack: Settings, server: Server) -> None:
    x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    assert server.repo is not None
    want = server.repo.models["mlp"].run({"x": x}).outputs
    with Client(stack.front, timeout=60) as client:
        got = client.infer("mlp", {"x": x})
        assert set(got) == set(want or {})
        for name, value in got.items():
            np.testing.assert_allclose(value, (want or {})[name], rtol=1e-5, atol=1e-6)
        futures = [  # concurrent requests: stacked into shared runs by the dynamic batcher
            client._request(*_infer_frames(client, x[i : i + 1])) for i in range(3)
        ]
        rows = [f.result(60).output["outputs"] for f in futures]
    assert len(rows) == 3


def test_a_client_arena_sends_big_inputs_by_handle(stack: Settings, server: Server) -> None:
    """With ``shm_arena`` a 128 KiB input goes as a shm handle the worker reads in place
    (the request body stays small); its slot is free again once the answer is back."""
    from wasm_engine.inference import infer_input

    x = np.random.default_rng(2).standard_normal((64, 512)).astype(np.float32)  # 128 KiB
    assert server.repo is not None
    want = server.repo.models["mlp"].run({"x": x}).outputs or {}
    with Client(stack.front, timeout=60, shm_arena=4 << 20) as client:
        plane = client._tensor_plane()
        assert plane is not None and plane.arena is not None
        arena, slots, alloc = plane.arena, [], plane.arena.alloc

        def counted(nbytes: int) -> Slot:
            slots.append(nbytes)
            return alloc(nbytes)

        arena.alloc = counted  # type: ignore[method-assign]
        got = client.infer("mlp", {"x": x})
        assert slots == [x.nbytes]  # the input went to the client's arena…
        assert arena.free_bytes == 4 << 20  # …and its slot came back with the answer
        body, refs = infer_input({"x": x}, None, plane)
        assert len(refs) == 1 and body["inputs"]["x"]["loc"] == "shm"
        plane.release(refs[0])
    for name, value in got.items():
        np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-6)
    inline_body, none = infer_input({"x": x})
    assert none == [] and len(inline_body["inputs"]["x"]["data"]) == x.nbytes


def test_the_asyncio_client_generates_and_infers(stack: Settings, server: Server) -> None:
    x = np.random.default_rng(3).standard_normal((2, 512)).astype(np.float32)
    assert server.repo is not None
    want = server.repo.models["mlp"].run({"x": x}).outputs or {}
    pieces: list[str] = []

    async def calls() -> tuple[dict[str, Any], dict[str, Any]]:
        async with AsyncClient(stack.front, timeout=60) as client:
            text = await client.generate(QUESTION, max_tokens=8, on_text=pieces.append)
            return text, await client.infer("mlp", {"x": x})

    text, got = asyncio.run(calls())
    assert text["tokens"] == len(pieces) > 0 and "".join(pieces) == text["text"]
    for name, value in got.items():
        np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-6)
    with Client(stack.front, timeout=60) as client:  # same seed, same text as the blocking one
        assert client.generate(QUESTION, max_tokens=8)["text"] == text["text"]


def _infer_frames(client: Client, x: np.ndarray[Any, Any]) -> tuple[str, str, list[bytes]]:
    from wasm_engine.inference import infer_input

    task_id, rid, frames = client._book.model_frames(
        "infer", "mlp", infer_input({"x": x})[0], task_id=None, timeout=None
    )
    return rid, task_id, frames


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda c: c.infer("nope", {"x": np.zeros((1, 512), np.float32)}), E.INFER_MODEL_MISSING),
        (lambda c: c.infer("mlp", {"x": np.zeros((1, 7), np.float32)}), E.INFER_BAD_INPUT),
        (lambda c: c.infer("mlp", {"x": np.zeros((1, 512), np.int64)}), E.INFER_BAD_INPUT),
        (  # past its timeout before its batch ran (waited max_queue_delay at least)
            lambda c: c.infer("mlp", {"x": np.zeros((1, 512), np.float32)}, timeout=0.0),
            E.TASK_DEADLINE,
        ),
        (lambda c: c.generate("word " * 600, max_tokens=4), E.INFER_PROMPT_TOO_LONG),
        (lambda c: c.generate(QUESTION, max_tokens=0), E.INFER_BAD_INPUT),
        (lambda c: c.generate(QUESTION, device="require_gpu"), E.INFER_DEVICE_UNAVAILABLE),
        (
            lambda c: c.generate("Tell me a very long story.", max_tokens=400, timeout=0.05),
            E.TASK_DEADLINE,
        ),
    ],
    ids=[
        "unknown-model",
        "bad-shape",
        "bad-dtype",
        "infer-timeout",
        "prompt-too-long",
        "bad-params",
        "no-gpu",
        "timeout",
    ],
)
def test_bad_requests_get_typed_errors_and_the_worker_serves_on(
    stack: Settings, call: Callable[[Client], Any], code: str
) -> None:
    with Client(stack.front, timeout=60) as client:
        with pytest.raises(WasmEngineError) as exc:
            call(client)
        assert exc.value.code == code
        assert "Paris" in client.generate(QUESTION, max_tokens=12)["text"]


def test_the_report_counts_llm_requests_refusals_and_fallbacks(server: Server) -> None:
    """What the worker's heartbeats carry for the LLM (``Server.report``, any thread)."""
    before = server.report()["models"]["smollm2"]
    ok = server.generate("r-ok", QUESTION, GenerateParams(max_tokens=4), "prefer_gpu", None)
    long = server.generate("r-long", "word " * 600, GenerateParams(max_tokens=4), "cpu_ok", None)
    assert ok.result(60)["tokens"] >= 1
    with pytest.raises(WasmEngineError):
        long.result(60)
    after = server.report()["models"]["smollm2"]
    assert (after["requests"] - before["requests"], after["failed"] - before["failed"]) == (2, 1)
    assert after["fallbacks"] - before["fallbacks"] == int(after["device"] == "cpu")
    assert sum(after["batches"].values()) == after["runs"]


def test_a_client_gone_mid_stream_leaves_the_batch(stack: Settings, server: Server) -> None:
    assert server.llm is not None
    cancelled = server.llm.counters["cancelled"]
    seen = threading.Event()
    client = Client(stack.front, timeout=60)
    fut = client.submit_generate(
        "Tell me a very long story.", max_tokens=400, on_text=lambda _: seen.set()
    )
    end = time.monotonic() + 60
    while not seen.is_set():
        assert time.monotonic() < end, "no token streamed"
        client.wait([fut], 0.05)
    client.close()  # gone mid-stream: the orchestrator's next send to it fails
    end = time.monotonic() + 30
    while server.llm.counters["cancelled"] == cancelled or server.llm.busy:
        assert time.monotonic() < end, "the sequence is still decoding for nobody"
        time.sleep(0.05)
    with Client(stack.front, timeout=30) as again:
        assert again.status()["counters"]["cancelled_client_gone"] == 1


def test_the_generate_command(stack: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI the issue names: Paris on CPU, require_gpu refused, the same seed twice."""
    import json

    from wasm_engine import cli

    front = ["--front", stack.front]
    assert cli.main(["generate", QUESTION, "--max-tokens", "16", "--json", *front]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "Paris" in out["text"] and out["device"] == "cpu"
    assert cli.main(["generate", QUESTION, "--device", "require_gpu", *front]) == 1
    sampled = ["--temperature", "0.9", "--seed", "11", "--max-tokens", "20", "--json", *front]
    texts = []
    for _ in range(2):
        assert cli.main(["generate", "Tell me about cats.", *sampled]) == 0
        texts.append(json.loads(capsys.readouterr().out)["text"])
    assert texts[0] == texts[1] and texts[0]
