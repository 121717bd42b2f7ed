;; hostcalls: every host call of ABI v1 once. Logs a line, emits three events
;; {"step": 0}, {"step": 1}, {"step": 2}, traps unless now() is past 2020, then
;; fills 16 bytes from we.random and returns [bin(16 random bytes), [r0, r1, r2]]
;; where r_k is what the k-th emit returned (0, or -1 / -2 once a budget is
;; spent, stored as a negative fixint). Same seed, same output.
(module
  (import "we" "log" (func $log (param i32 i32)))
  (import "we" "emit" (func $emit (param i32 i32) (result i32)))
  (import "we" "now" (func $now (result i64)))
  (import "we" "random" (func $random (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hostcalls: hello")      ;; 16 bytes of log line
  (data (i32.const 16) "\81\a4step\00")        ;; {"step": k}, k at 22
  ;; the output, 23 bytes at 256: 92 c4 10 <16 random bytes> 93 r0 r1 r2
  (data (i32.const 256) "\92\c4\10")
  (data (i32.const 275) "\93")
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32) (result i64)
    (local $k i32)
    (call $log (i32.const 0) (i32.const 16))
    (loop $next
      (i32.store8 (i32.const 22) (local.get $k))
      (i32.store8 (i32.add (i32.const 276) (local.get $k))
        (call $emit (i32.const 16) (i32.const 7)))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $k) (i32.const 3))))
    ;; 1577836800 s = 2020-01-01T00:00:00Z, in ns
    (if (i64.lt_u (call $now) (i64.const 1577836800000000000)) (then unreachable))
    (call $random (i32.const 259) (i32.const 16))
    ;; (256 << 32) | 23
    i64.const 0x0000010000000017))
