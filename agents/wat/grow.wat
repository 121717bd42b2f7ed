;; grow: memory bomb; grows one page at a time until memory.grow is refused
;; (returns -1 at the store's memory cap), then traps with unreachable.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32) (result i64)
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))
