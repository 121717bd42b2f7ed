"""Helpers for the ui-monitor tests: a free port, HTTP GETs against the real server, and a
:func:`monitored` stack (a LocalStack with a ui-monitor process watching it)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from fault_helpers import until

from wasm_engine.local import LocalStack


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET; a refused connection reads as status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, (url, status, body[:500])
    return json.loads(body)


def monitored(
    make_stack: Callable[..., LocalStack], workers: int, **settings: Any
) -> tuple[LocalStack, str]:
    """A real stack and a ui-monitor on it; returns both once the monitor is ready."""
    stack = make_stack(workers, **settings)
    port = free_port()
    stack.start_monitor(port)
    base = f"http://127.0.0.1:{port}"
    until("the monitor to be ready", lambda: get(base + "/readyz")[0] == 200, timeout=60)
    return stack, base
