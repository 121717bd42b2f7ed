;; recurse: unbounded recursion in handle -> stack overflow trap.
(module
  (memory (export "memory") 1)
  (func $down (param $n i32) (result i32)
    (call $down (i32.add (local.get $n) (i32.const 1))))
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32) (result i64)
    (drop (call $down (i32.const 0)))
    i64.const 0))
