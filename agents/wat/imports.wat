;; imports: a valid ABI v1 agent that imports a host call that does not exist
;; (we.open): loading it must fail with wasm.bad_module naming the import.
(module
  (import "we" "open" (func $open (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (drop (call $open (local.get $p) (local.get $n)))
    i64.const 0))
