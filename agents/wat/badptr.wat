;; badptr: returns an output ptr/len far outside its one-page memory.
;; ptr = 0xFFFFFFF0 (negative as a signed i32), len = 0x100.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32) (result i64)
    i64.const 0xFFFFFFF000000100))
