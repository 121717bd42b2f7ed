"""wasm-engine ui-monitor: a live dashboard and Prometheus metrics from the orchestrator's
telemetry (SUB, dropping when slow) and ``status.get`` snapshots. It is never on the
compute path: nothing the orchestrator does waits for it."""
