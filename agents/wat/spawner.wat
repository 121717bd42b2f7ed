;; spawner: a valid ABI v1 agent that imports we.spawn, a host call of the
;; design that this build does not provide yet: loading it must fail with
;; wasm.capability_denied naming the import.
(module
  (import "we" "log" (func $log (param i32 i32)))
  (import "we" "spawn" (func $spawn (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (drop (call $spawn (local.get $p) (local.get $n)))
    i64.const 0))
