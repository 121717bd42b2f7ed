;; imports: a valid ABI v1 agent that imports a host call (we.spawn). The
;; runtime provides no imports yet, so loading it must fail naming the import.
(module
  (import "we" "spawn" (func $spawn (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (drop (call $spawn (local.get $p) (local.get $n)))
    i64.const 0))
