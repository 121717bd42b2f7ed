;; bigout: claims a 100 MiB output at ptr 0. It first tries to grow memory to
;; hold it (1601 pages); under a smaller memory cap the grow is refused and the
;; claimed output lies past memory. Either way it is over a 16 MiB output cap.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32) (result i64)
    (drop (memory.grow (i32.const 1600)))
    i64.const 0x0000000006400000))
