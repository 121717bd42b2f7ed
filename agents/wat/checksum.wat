;; checksum: FNV-1a 64-bit hash of the input bytes (the raw msgpack input),
;; returned as a msgpack uint64 (0xcf + 8 bytes big-endian). Real work per byte,
;; so a task's fuel grows with its input.
(module
  (memory (export "memory") 1)
  ;; alloc(len) -> 1024, growing memory when 1024 + len does not fit (-1 if refused).
  (func (export "alloc") (param $len i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.shr_u (i32.add (i32.add (local.get $len) (i32.const 1024)) (i32.const 65535))
                 (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (return (i32.const -1))))))
    i32.const 1024)
  ;; handle(ptr, len) -> (16 << 32) | 9: the msgpack uint64 written at offset 16.
  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (local $h i64) (local $i i32) (local $end i32)
    (local.set $h (i64.const 0xcbf29ce484222325))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $i (local.get $ptr))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $h (i64.mul
          (i64.xor (local.get $h) (i64.load8_u (local.get $i)))
          (i64.const 0x100000001b3)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store8 (i32.const 16) (i32.const 0xcf))
    (local.set $i (i32.const 0))
    (block $written
      (loop $byte
        (br_if $written (i32.ge_u (local.get $i) (i32.const 8)))
        (i64.store8 (i32.add (i32.const 17) (local.get $i))
          (i64.shr_u (local.get $h) (i64.extend_i32_u (i32.sub (i32.const 56) (i32.shl (local.get $i) (i32.const 3))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $byte)))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 9))))
