;; noop: ABI v1 agent that ignores its input and returns empty output.
(module
  (memory (export "memory") 1)
  ;; alloc(len) -> ptr: a fixed scratch area at 1024 (inputs must fit the page).
  (func (export "alloc") (param $len i32) (result i32)
    i32.const 1024)
  ;; handle(ptr, len) -> (out_ptr << 32) | out_len = 0: empty output.
  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    i64.const 0))
