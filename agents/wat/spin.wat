;; spin: burns CPU for a bounded number of loop iterations, then returns its input.
;;
;; Input: one msgpack unsigned integer N (positive fixint 0x00-0x7f, or uint8 /
;; uint16 / uint32 / uint64: tags 0xcc-0xcf followed by 1/2/4/8 big-endian bytes).
;; handle counts N down to zero and returns the input bytes unchanged, so the
;; output decodes to N: a task whose run time is set by its input and whose
;; output names it. Any other input traps (unreachable). Each iteration costs a
;; few units of fuel, so a task's fuel limit still bounds it. The fault tests
;; use it to keep tasks in flight while they kill workers.
(module
  (memory (export "memory") 1)
  ;; alloc(len) -> 1024: inputs are at most 9 bytes, far inside the one page.
  (func (export "alloc") (param $len i32) (result i32)
    i32.const 1024)
  ;; handle(ptr, len) -> (ptr << 32) | len: spin N times, the input is the output.
  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (local $tag i32)
    (local $size i32)
    (local $i i32)
    (local $n i64)
    (if (i32.eqz (local.get $len)) (then unreachable))
    (local.set $tag (i32.load8_u (local.get $ptr)))
    (if (i32.lt_u (local.get $tag) (i32.const 0x80))
      (then
        (if (i32.ne (local.get $len) (i32.const 1)) (then unreachable))
        (local.set $n (i64.extend_i32_u (local.get $tag))))
      (else
        (if (i32.or (i32.lt_u (local.get $tag) (i32.const 0xcc))
                    (i32.gt_u (local.get $tag) (i32.const 0xcf)))
          (then unreachable))
        ;; payload size = 1 << (tag - 0xcc): 1, 2, 4 or 8 bytes
        (local.set $size (i32.shl (i32.const 1) (i32.sub (local.get $tag) (i32.const 0xcc))))
        (if (i32.ne (local.get $len) (i32.add (local.get $size) (i32.const 1)))
          (then unreachable))
        (local.set $i (i32.const 1))
        (loop $bytes
          (local.set $n
            (i64.or (i64.shl (local.get $n) (i64.const 8))
                    (i64.load8_u (i32.add (local.get $ptr) (local.get $i)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $bytes (i32.le_u (local.get $i) (local.get $size))))))
    (block $done
      (loop $spin
        (br_if $done (i64.eqz (local.get $n)))
        (local.set $n (i64.sub (local.get $n) (i64.const 1)))
        (br $spin)))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len)))))
