;; counter: a stateful agent for session tests. Each call adds 1 to a global
;; and returns it (a msgpack positive fixint, so at most 127). In a session's
;; instance the count goes 1, 2, 3...; in a fresh instance it is always 1.
(module
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32) (result i64)
    (global.set $n (i32.and (i32.add (global.get $n) (i32.const 1)) (i32.const 127)))
    (i32.store8 (i32.const 512) (global.get $n))
    (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 1))))
