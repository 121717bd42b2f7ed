;; spawner: hands its input, a msgpack map {"agent": ..., "input": ...}, to
;; we.spawn as the request, waits for that child and returns the reply map
;; ({"ok": true, "output": ...} or {"ok": false, "error": {...}}) as its output.
;; The bump allocator resets when alloc is called outside handle (each call's
;; first step) and grows memory when needed: the reply is written through alloc.
(module
  (import "we" "spawn" (func $spawn (param i32 i32) (result i32)))
  (import "we" "wait" (func $wait (param i32) (result i64)))
  (memory (export "memory") 1)
  (global $top (mut i32) (i32.const 1024))
  (global $in (mut i32) (i32.const 0))
  (func (export "alloc") (param $n i32) (result i32) (local $p i32) (local $end i32)
    (if (i32.eqz (global.get $in)) (then (global.set $top (i32.const 1024))))
    (local.set $p (global.get $top))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (i32.const -1)
              (memory.grow (i32.add (i32.const 1)
                (i32.shr_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
                           (i32.const 16)))))
          (then (return (i32.const -1))))))
    (global.set $top (local.get $end))
    (local.get $p))
  (func (export "handle") (param $p i32) (param $n i32) (result i64) (local $r i64)
    (global.set $in (i32.const 1))
    (local.set $r (call $wait (call $spawn (local.get $p) (local.get $n))))
    (global.set $in (i32.const 0))
    (local.get $r)))
