;; badhost: misuses a host call, chosen by the first input byte (a msgpack
;; positive fixint is that byte): 0 log(0xFFFFFFF0, 0x100), a pointer that is
;; negative as an i32; 1 random(65000, 1000), straddling the end of its one
;; page; 2 emit(0, 0xFFFFFFFF); 3 emit of one byte 0xc1, never valid msgpack;
;; 4 random(0, 4096), in bounds (over a small random cap); 5 log(65536, 0),
;; zero bytes at the very end: allowed. Returns no output (nil).
(module
  (import "we" "log" (func $log (param i32 i32)))
  (import "we" "emit" (func $emit (param i32 i32) (result i32)))
  (import "we" "random" (func $random (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\c1")
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (local $mode i32)
    (if (local.get $n) (then (local.set $mode (i32.load8_u (local.get $p)))))
    (block $done
      (block $5 (block $4 (block $3 (block $2 (block $1 (block $0
        (br_table $0 $1 $2 $3 $4 $5 $done (local.get $mode)))
        (call $log (i32.const 0xFFFFFFF0) (i32.const 0x100)) (br $done))
        (call $random (i32.const 65000) (i32.const 1000)) (br $done))
        (drop (call $emit (i32.const 0) (i32.const 0xFFFFFFFF))) (br $done))
        (drop (call $emit (i32.const 0) (i32.const 1))) (br $done))
        (call $random (i32.const 0) (i32.const 4096)) (br $done))
        (call $log (i32.const 65536) (i32.const 0)))
    i64.const 0))
