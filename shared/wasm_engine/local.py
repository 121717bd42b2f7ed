"""An ephemeral stack of real processes on private ``ipc://`` endpoints.

``LocalStack`` starts an orchestrator and N wasm-workers as child processes of
the caller (no supervisord), waits until every worker has registered, and stops
them all on exit; :meth:`LocalStack.start_monitor` adds a ui-monitor on request.
Benchmarks and the end-to-end tests use it; so can a user who wants a throwaway
runtime inside a script. Each stack lives in its own folder, so two stacks on
one machine never share an endpoint. It can also kill and restart its
processes, which is what fault tests need.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from .client import Client
from .config import Settings, to_env
from .errors import WasmEngineError
from .tensors import reap, stack_id

log = logging.getLogger("wasm_engine.local")


class LocalStack:
    def __init__(self, wasm_workers: int = 1, *, home: Path | None = None, **settings: Any) -> None:
        self._tmp = None if home is not None else tempfile.TemporaryDirectory(prefix="we-stack-")
        self.home = Path(home) if home is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.home.mkdir(parents=True, exist_ok=True)
        ipc = f"ipc://{self.home}"
        self.settings = Settings(
            front=f"{ipc}/front.sock",
            back=f"{ipc}/back.sock",
            telemetry=f"{ipc}/telemetry.sock",
            home=str(self.home),
            wasm_workers=wasm_workers,
            **settings,
        )
        self.orchestrator: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.monitor: subprocess.Popen[bytes] | None = None
        self._spawned = 0
        self._spawned_inference = 0

    @property
    def front(self) -> str:
        return self.settings.front

    @property
    def stack_id(self) -> str:
        """The id in this stack's shm segment names (``wasm-engine-<id>-…``)."""
        return stack_id(self.settings.stack, self.settings.home)

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(to_env(self.settings))
        env.update(extra)
        return env

    def _spawn(self, module: str, name: str, **extra: str) -> subprocess.Popen[bytes]:
        logfile = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            return subprocess.Popen(
                [sys.executable, "-m", module],
                env=self._env(**extra),
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logfile.close()

    def start_orchestrator(self) -> None:
        self.orchestrator = self._spawn("orchestrator", "orchestrator")

    def add_worker(self, **extra: str) -> subprocess.Popen[bytes]:
        self._spawned += 1
        name = f"wasm-worker-{self._spawned}"
        proc = self._spawn("wasm_worker", name, WASM_ENGINE_WORKER_NAME=name, **extra)
        self.workers.append(proc)
        return proc

    def add_inference_worker(self, **extra: str) -> subprocess.Popen[bytes]:
        """An inference worker serving ``settings.models`` (it loads and warms them first)."""
        self._spawned_inference += 1
        name = f"inference-worker-{self._spawned_inference}"
        proc = self._spawn("inference_worker", name, WASM_ENGINE_WORKER_NAME=name, **extra)
        self.workers.append(proc)
        return proc

    def start_monitor(self, port: int, host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
        """A ui-monitor watching this stack, serving on ``host:port`` (not waited for)."""
        self.monitor = self._spawn(
            "ui_monitor",
            "ui-monitor",
            WASM_ENGINE_MONITOR_HOST=host,
            WASM_ENGINE_MONITOR_PORT=str(port),
        )
        return self.monitor

    def start(self, timeout: float = 30.0) -> LocalStack:
        self.start_orchestrator()
        for _ in range(self.settings.wasm_workers):
            self.add_worker()
        for _ in range(self.settings.inference_workers):
            self.add_inference_worker()
        self.wait_ready(self.settings.wasm_workers + self.settings.inference_workers, timeout)
        return self

    def wait_ready(self, workers: int, timeout: float = 30.0) -> dict[str, Any]:
        """Block until ``workers`` workers are registered and ready; returns the status."""
        end = time.monotonic() + timeout
        with Client(self.front, timeout=1.0) as client:
            while True:
                try:
                    status = client.status()
                    ready = [w for w in status["workers"] if w["state"] == "ready"]
                    if len(ready) >= workers:
                        return status
                except WasmEngineError:
                    status = {}
                if time.monotonic() > end:
                    raise TimeoutError(f"{workers} workers not ready in {timeout}s: {status}")
                time.sleep(0.05)

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self) -> None:
        """Workers first (their bye reaches a live orchestrator), then the orchestrator;
        the monitor, if any, before them all (a stopped one is woken to obey)."""
        if self.monitor is not None:
            if self.monitor.poll() is None:
                os.kill(self.monitor.pid, signal.SIGCONT)
            self._terminate([self.monitor])
            self.monitor = None
        self._terminate(self.workers)
        self._terminate([self.orchestrator] if self.orchestrator else [])
        self.workers.clear()
        self.orchestrator = None
        reap(self.stack_id)  # what a process killed with its orchestrator left in /dev/shm
        if self._tmp is not None:
            self._tmp.cleanup()

    @staticmethod
    def _terminate(procs: list[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("pid %d ignored SIGTERM: killing it", proc.pid)
                proc.kill()
                proc.wait()

    def log_text(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
