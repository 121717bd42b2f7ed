;; storm: a spawn storm. Hands its input (a spawn request map) to we.spawn in an
;; endless loop, never waiting: the task's budget of child requests must stop it
;; (a trap with detail.trap = host_limit), and the worker must serve on.
(module
  (import "we" "spawn" (func $spawn (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (loop $forever
      (drop (call $spawn (local.get $p) (local.get $n)))
      (br $forever))
    i64.const 0))
