"""wasm-engine inference worker: ONNX model repository, dynamic batcher and the LLM engine."""
