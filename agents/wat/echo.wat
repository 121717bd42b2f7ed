;; echo: returns its input unchanged (the output is the input buffer itself).
(module
  (memory (export "memory") 1)
  ;; alloc(len) -> 1024, growing memory first when 1024 + len does not fit.
  (func (export "alloc") (param $len i32) (result i32)
    (local $need i32)
    ;; pages needed = ceil((1024 + len) / 65536)
    (local.set $need
      (i32.shr_u (i32.add (i32.add (local.get $len) (i32.const 1024)) (i32.const 65535))
                 (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        ;; memory.grow returns -1 when refused: hand back -1 as the pointer.
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (return (i32.const -1))))))
    i32.const 1024)
  ;; handle(ptr, len) -> (ptr << 32) | len: the input is the output.
  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len)))))
