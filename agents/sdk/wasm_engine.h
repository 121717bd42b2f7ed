/* wasm_engine.h: single-header C SDK for wasm-engine agent ABI v1.
 *
 * Build an agent with freestanding clang (see agents/Makefile for the exact flags):
 *
 *     #include "wasm_engine.h"
 *     static int sum(we_reader *in, we_writer *out) {
 *         uint32_t n;
 *         int64_t x, total = 0;
 *         if (!we_read_array(in, &n)) return we_fail("input must be an array of ints");
 *         while (n--) {
 *             if (!we_read_int(in, &x)) return we_fail("input must be an array of ints");
 *             total += x;
 *         }
 *         we_write_int(out, total);
 *         return 0;
 *     }
 *     WE_AGENT(sum)
 *
 * ABI v1. The module exports `memory`, `alloc(len: i32) -> i32` and
 * `handle(ptr: i32, len: i32) -> i64` returning `(out_ptr << 32) | out_len`. Per
 * call the host runs `alloc(len(input))`, writes the input there, runs `handle`,
 * then copies `out_len` bytes at `out_ptr` out. Input and output are msgpack.
 * WE_AGENT(fn) defines both exports; the linker exports `memory`.
 *
 * Memory: one bump allocator over the linear memory above `__heap_base`, grown
 * with memory.grow as needed; nothing is ever freed one by one. It is reset when
 * the host calls `alloc` outside `handle`, which is the first step of every call,
 * so an instance the host reuses across calls starts each call with an empty heap
 * and does not leak. Consequently a pointer from we_alloc (the input, the output
 * buffer, anything the handler allocated) is valid until the next call begins,
 * never longer: keep nothing across calls in heap memory (static variables
 * survive on a reused instance, but the host may also give each call a fresh
 * instance, so do not rely on them either). `alloc` called while `handle` runs
 * (a host import handing back a result) only bumps, it does not reset. After a
 * trap inside `handle` the instance must not be called again (wasm_worker drops
 * it): the heap would then never be reset.
 * we_alloc traps (`unreachable`) when memory cannot grow (the host's memory cap):
 * the host reports that as a memory-limit error. The export `alloc` returns
 * 0xFFFFFFFF instead, which the host also reports as a memory-limit error.
 *
 * The input buffer is the agent's for the call: a handler may modify it in place
 * (through we_reader.p), e.g. to lowercase text without a copy.
 *
 * Reader: we_read_* decode one value at in->p and advance past it, returning
 * true. On a type mismatch they return false and consume nothing (so a handler
 * may try another type); on truncated or invalid msgpack they return false and
 * set in->err, which is sticky: every later read fails too. we_peek tells the
 * type of the next value without consuming it; we_skip consumes any one value,
 * nested containers included (iteratively: no recursion depth to exhaust).
 *
 * Writer: we_write_* append msgpack to `out`, a growable buffer on the bump heap
 * (grown in place while it is the newest allocation); integers use the smallest
 * encoding, floats are written as float64. Containers are written as a header
 * (we_write_array(out, n), we_write_map(out, n)) followed by n values (2n for a
 * map: key, value, key, value...); the count must be known up front.
 *
 * Errors: a handler returns 0 for success (the output is whatever it wrote) or
 * non-zero for failure: then whatever it wrote is discarded and the output is the
 * msgpack map {"error": <message>, "code": <return value>}, the message being
 * the last one given to we_fail / we_fail_n in this call, or "agent failed"
 * when there is none. `return we_fail("why")` sets the message and returns 1.
 * So an output that is a map with an "error" key means the agent failed.
 *
 * Host calls: the host imports of module "we" (log, emit, now, random, and the
 * child requests spawn, send, generate, infer + wait) are
 * declared below only when WE_HOST_CALLS is defined before including this
 * header. Without it an agent imports nothing at all.
 *
 * No libc: only clang's freestanding headers. Building with -ffreestanding keeps
 * clang from turning loops into memcpy/memset calls; for the calls it emits
 * anyway (large struct copies) weak memcpy/memmove/memset/memcmp are defined
 * here unless WE_NO_MEM_FUNCS is defined.
 */
#ifndef WASM_ENGINE_H
#define WASM_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WE_ABI_VERSION 1

/* ------------------------------------------------------------------ memory */

extern unsigned char __heap_base; /* defined by wasm-ld: first byte above data and stack */

static uintptr_t we__top;       /* next free byte of the bump heap (0: not yet set) */
static int we__in_handle;       /* 1 while handle() runs */
static const char *we__err_msg; /* message for the error output */
static uint32_t we__err_len;

#define WE__PAGE 65536u

static inline void we_reset_heap(void) { we__top = (uintptr_t)&__heap_base; }

/* n bytes, 8-byte aligned, or NULL when memory cannot grow to hold them. */
static inline void *we_try_alloc(size_t n) {
    if (!we__top) we_reset_heap();
    uint64_t p = ((uint64_t)we__top + 7u) & ~(uint64_t)7u;
    uint64_t end = p + (uint64_t)n;
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * WE__PAGE;
    if (end > have) {
        if (end > 0xFFFFFFFFull) return NULL;
        uint64_t pages = (end - have + WE__PAGE - 1) / WE__PAGE;
        if (__builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1) return NULL;
    }
    we__top = (uintptr_t)end;
    return (void *)(uintptr_t)p;
}

/* n bytes, 8-byte aligned; traps when memory cannot grow (the host's memory cap). */
static inline void *we_alloc(size_t n) {
    void *p = we_try_alloc(n);
    if (!p) __builtin_trap();
    return p;
}

/* ---------------------------------------------------------- byte functions */

static inline void we_memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    typedef uint64_t __attribute__((aligned(1), may_alias)) we__u64u;
    for (; n >= 8; n -= 8, d += 8, s += 8) *(we__u64u *)d = *(const we__u64u *)s;
    while (n--) *d++ = *s++;
}

static inline void we_memset(void *dst, int c, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    while (n--) *d++ = (unsigned char)c;
}

static inline int we_memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    for (; n; n--, x++, y++)
        if (*x != *y) return *x < *y ? -1 : 1;
    return 0;
}

static inline size_t we_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

/* Grow the block p of old bytes to new_size bytes: in place when p is the newest
 * allocation, else by copying. Traps when memory cannot grow. */
static inline void *we_realloc(void *p, size_t old, size_t new_size) {
    if (p && (uintptr_t)p + old == we__top) {
        we__top = (uintptr_t)p; /* p is 8-aligned: we_alloc hands it back */
        void *q = we_alloc(new_size);
        return q;
    }
    void *q = we_alloc(new_size);
    if (p) we_memcpy(q, p, old < new_size ? old : new_size);
    return q;
}

#ifndef WE_NO_MEM_FUNCS
__attribute__((weak)) void *memcpy(void *d, const void *s, size_t n) {
    we_memcpy(d, s, n);
    return d;
}
__attribute__((weak)) void *memmove(void *d, const void *s, size_t n) {
    unsigned char *dd = (unsigned char *)d;
    const unsigned char *ss = (const unsigned char *)s;
    if (dd < ss) {
        while (n--) *dd++ = *ss++;
    } else {
        while (n--) dd[n] = ss[n];
    }
    return d;
}
__attribute__((weak)) void *memset(void *d, int c, size_t n) {
    we_memset(d, c, n);
    return d;
}
__attribute__((weak)) int memcmp(const void *a, const void *b, size_t n) {
    return we_memcmp(a, b, n);
}
#endif

/* ------------------------------------------------------------------ reader */

typedef struct {
    const uint8_t *p;   /* next byte to decode */
    const uint8_t *end; /* one past the last input byte */
    int err;            /* sticky: set on truncated or invalid msgpack */
} we_reader;

typedef enum {
    WE_END = 0, /* no more input, or in->err is set */
    WE_NIL,
    WE_BOOL,
    WE_INT, /* any msgpack int, signed or unsigned */
    WE_FLOAT,
    WE_STR,
    WE_BIN,
    WE_ARRAY,
    WE_MAP,
    WE_EXT,
    WE_INVALID /* the reserved byte 0xc1 */
} we_type;

static inline we_type we_peek(const we_reader *r) {
    if (r->err || r->p >= r->end) return WE_END;
    uint8_t b = *r->p;
    if (b <= 0x7f || b >= 0xe0) return WE_INT;
    if (b <= 0x8f) return WE_MAP;
    if (b <= 0x9f) return WE_ARRAY;
    if (b <= 0xbf) return WE_STR;
    switch (b) {
    case 0xc0: return WE_NIL;
    case 0xc2: case 0xc3: return WE_BOOL;
    case 0xc4: case 0xc5: case 0xc6: return WE_BIN;
    case 0xc7: case 0xc8: case 0xc9: return WE_EXT;
    case 0xca: case 0xcb: return WE_FLOAT;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: return WE_INT;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return WE_EXT;
    case 0xd9: case 0xda: case 0xdb: return WE_STR;
    case 0xdc: case 0xdd: return WE_ARRAY;
    case 0xde: case 0xdf: return WE_MAP;
    default: return WE_INVALID;
    }
}

static inline bool we_at_end(const we_reader *r) { return !r->err && r->p >= r->end; }

/* Big-endian n-byte unsigned at r->p + off; sets err when the input is too short. */
static inline bool we__be(we_reader *r, size_t off, size_t n, uint64_t *v) {
    if ((size_t)(r->end - r->p) < off + n) {
        r->err = 1;
        return false;
    }
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) x = (x << 8) | r->p[off + i];
    *v = x;
    return true;
}

/* A payload of len bytes after a header of hdr bytes: returns it and consumes both. */
static inline bool we__payload(we_reader *r, size_t hdr, uint64_t len, const uint8_t **data) {
    uint64_t left = (uint64_t)(r->end - r->p);
    if (left < hdr || left - hdr < len) {
        r->err = 1;
        return false;
    }
    *data = r->p + hdr;
    r->p += hdr + len;
    return true;
}

static inline bool we_read_nil(we_reader *r) {
    if (we_peek(r) != WE_NIL) return false;
    r->p++;
    return true;
}

static inline bool we_read_bool(we_reader *r, bool *v) {
    if (we_peek(r) != WE_BOOL) return false;
    *v = *r->p++ == 0xc3;
    return true;
}

/* Any msgpack int as (negative, magnitude bits): internal to the int readers. */
static inline bool we__int(we_reader *r, uint64_t *bits, bool *is_signed, size_t *used) {
    if (we_peek(r) != WE_INT) return false;
    uint8_t b = *r->p;
    uint64_t v;
    *is_signed = false;
    if (b <= 0x7f) {
        *bits = b;
        *used = 1;
        return true;
    }
    if (b >= 0xe0) {
        *bits = (uint64_t)(int64_t)(int8_t)b;
        *is_signed = true;
        *used = 1;
        return true;
    }
    size_t n = (size_t)1 << (b & 3); /* cc..cf: 1,2,4,8 bytes; d0..d3 likewise */
    if (!we__be(r, 1, n, &v)) return false;
    if (b >= 0xd0) { /* signed: sign-extend from n bytes */
        unsigned shift = (unsigned)(64 - 8 * n);
        v = (uint64_t)((int64_t)(v << shift) >> shift);
        *is_signed = true;
    }
    *bits = v;
    *used = 1 + n;
    return true;
}

/* Any msgpack int that fits int64. */
static inline bool we_read_int(we_reader *r, int64_t *v) {
    uint64_t bits;
    bool sig;
    size_t used;
    if (!we__int(r, &bits, &sig, &used)) return false;
    if (!sig && bits > (uint64_t)INT64_MAX) return false;
    *v = (int64_t)bits;
    r->p += used;
    return true;
}

/* Any non-negative msgpack int. */
static inline bool we_read_uint(we_reader *r, uint64_t *v) {
    uint64_t bits;
    bool sig;
    size_t used;
    if (!we__int(r, &bits, &sig, &used)) return false;
    if (sig && (int64_t)bits < 0) return false;
    *v = bits;
    r->p += used;
    return true;
}

/* A float32 or float64 (an int is not converted: read it with we_read_int). */
static inline bool we_read_float(we_reader *r, double *v) {
    if (we_peek(r) != WE_FLOAT) return false;
    uint64_t bits;
    if (*r->p == 0xca) {
        if (!we__be(r, 1, 4, &bits)) return false;
        uint32_t b32 = (uint32_t)bits;
        float f;
        __builtin_memcpy(&f, &b32, 4);
        *v = f;
        r->p += 5;
    } else {
        if (!we__be(r, 1, 8, &bits)) return false;
        __builtin_memcpy(v, &bits, 8);
        r->p += 9;
    }
    return true;
}

/* The header length and payload length of the str/bin/array/map/ext at r->p. */
static inline bool we__sized(we_reader *r, uint8_t b, size_t *hdr, uint64_t *len) {
    size_t n;
    switch (b) {
    case 0xc4: case 0xc7: case 0xd9: n = 1; break;
    case 0xc5: case 0xc8: case 0xda: case 0xdc: case 0xde: n = 2; break;
    default: n = 4; break; /* c6 c9 db dd df */
    }
    *hdr = 1 + n;
    return we__be(r, 1, n, len);
}

static inline bool we_read_str(we_reader *r, const char **s, uint32_t *len) {
    if (we_peek(r) != WE_STR) return false;
    uint8_t b = *r->p;
    size_t hdr = 1;
    uint64_t n = b & 0x1f;
    if (b >= 0xd9 && !we__sized(r, b, &hdr, &n)) return false;
    const uint8_t *d;
    if (!we__payload(r, hdr, n, &d)) return false;
    *s = (const char *)d;
    *len = (uint32_t)n;
    return true;
}

static inline bool we_read_bin(we_reader *r, const uint8_t **data, uint32_t *len) {
    if (we_peek(r) != WE_BIN) return false;
    size_t hdr;
    uint64_t n;
    if (!we__sized(r, *r->p, &hdr, &n) || !we__payload(r, hdr, n, data)) return false;
    *len = (uint32_t)n;
    return true;
}

/* A str or a bin: its bytes. */
static inline bool we_read_bytes(we_reader *r, const uint8_t **data, uint32_t *len) {
    return we_read_bin(r, data, len) || we_read_str(r, (const char **)data, len);
}

static inline bool we__container(we_reader *r, we_type t, uint8_t fix_lo, uint32_t *n) {
    if (we_peek(r) != t) return false;
    uint8_t b = *r->p;
    if ((b & 0xf0) == fix_lo) {
        *n = b & 0x0f;
        r->p++;
        return true;
    }
    size_t hdr;
    uint64_t v;
    if (!we__sized(r, b, &hdr, &v)) return false;
    *n = (uint32_t)v;
    r->p += hdr;
    return true;
}

/* An array header: n values follow. */
static inline bool we_read_array(we_reader *r, uint32_t *n) {
    return we__container(r, WE_ARRAY, 0x90, n);
}

/* A map header: n key/value pairs (2n values) follow. */
static inline bool we_read_map(we_reader *r, uint32_t *n) {
    return we__container(r, WE_MAP, 0x80, n);
}

/* Consume one value, containers with everything in them. */
static inline bool we_skip(we_reader *r) {
    uint64_t pending = 1; /* values still to consume; each takes >= 1 input byte */
    while (pending) {
        we_type t = we_peek(r);
        uint8_t b = t == WE_END ? 0 : *r->p;
        uint32_t n;
        uint64_t len, v;
        size_t hdr;
        const uint8_t *d;
        switch (t) {
        case WE_END: case WE_INVALID: r->err = 1; return false;
        case WE_NIL: case WE_BOOL: r->p++; break;
        case WE_INT: {
            bool sig;
            size_t used;
            if (!we__int(r, &v, &sig, &used)) return false;
            r->p += used;
            break;
        }
        case WE_FLOAT:
            if (!we__payload(r, 1, b == 0xca ? 4 : 8, &d)) return false;
            break;
        case WE_STR: case WE_BIN:
            if (t == WE_STR && b < 0xd9) {
                if (!we__payload(r, 1, b & 0x1f, &d)) return false;
            } else if (!we__sized(r, b, &hdr, &len) || !we__payload(r, hdr, len, &d)) {
                return false;
            }
            break;
        case WE_EXT:
            if (b >= 0xd4) { /* fixext 1,2,4,8,16 plus a type byte */
                if (!we__payload(r, 2, (uint64_t)1 << (b - 0xd4), &d)) return false;
            } else if (!we__sized(r, b, &hdr, &len) || !we__payload(r, hdr + 1, len, &d)) {
                return false;
            }
            break;
        case WE_ARRAY:
            if (!we_read_array(r, &n)) return false;
            pending += n;
            break;
        case WE_MAP:
            if (!we_read_map(r, &n)) return false;
            pending += 2 * (uint64_t)n;
            break;
        }
        pending--;
    }
    return true;
}

/* s[0..n) equals the NUL-terminated lit. */
static inline bool we_str_eq(const char *s, uint32_t n, const char *lit) {
    size_t m = we_strlen(lit);
    return m == n && we_memcmp(s, lit, n) == 0;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    uint8_t *buf; /* on the bump heap */
    uint32_t len, cap;
} we_writer;

/* Room for n more bytes; returns where they go. Traps when memory cannot grow. */
static inline uint8_t *we_reserve(we_writer *w, uint32_t n) {
    uint64_t need = (uint64_t)w->len + n;
    if (need > w->cap) {
        uint64_t cap = w->cap ? (uint64_t)w->cap * 2 : 256;
        if (cap < need) cap = need;
        if (cap > 0xFFFFFFFFull) __builtin_trap();
        w->buf = (uint8_t *)we_realloc(w->buf, w->cap, (size_t)cap);
        w->cap = (uint32_t)cap;
    }
    return w->buf + w->len;
}

static inline void we__put_be(we_writer *w, uint8_t tag, uint64_t v, unsigned n) {
    uint8_t *p = we_reserve(w, 1 + n);
    p[0] = tag;
    for (unsigned i = 0; i < n; i++) p[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    w->len += 1 + n;
}

static inline void we_write_raw(we_writer *w, const void *data, uint32_t n) {
    we_memcpy(we_reserve(w, n), data, n);
    w->len += n;
}

static inline void we__byte(we_writer *w, uint8_t b) {
    *we_reserve(w, 1) = b;
    w->len++;
}

static inline void we_write_nil(we_writer *w) { we__byte(w, 0xc0); }

static inline void we_write_bool(we_writer *w, bool v) { we__byte(w, v ? 0xc3 : 0xc2); }

static inline void we_write_uint(we_writer *w, uint64_t v) {
    if (v <= 0x7f) we__byte(w, (uint8_t)v);
    else if (v <= 0xff) we__put_be(w, 0xcc, v, 1);
    else if (v <= 0xffff) we__put_be(w, 0xcd, v, 2);
    else if (v <= 0xffffffffu) we__put_be(w, 0xce, v, 4);
    else we__put_be(w, 0xcf, v, 8);
}

static inline void we_write_int(we_writer *w, int64_t v) {
    if (v >= 0) we_write_uint(w, (uint64_t)v);
    else if (v >= -32) we__byte(w, (uint8_t)(int8_t)v);
    else if (v >= INT8_MIN) we__put_be(w, 0xd0, (uint64_t)v, 1);
    else if (v >= INT16_MIN) we__put_be(w, 0xd1, (uint64_t)v, 2);
    else if (v >= INT32_MIN) we__put_be(w, 0xd2, (uint64_t)v, 4);
    else we__put_be(w, 0xd3, (uint64_t)v, 8);
}

static inline void we_write_float(we_writer *w, double v) {
    uint64_t bits;
    __builtin_memcpy(&bits, &v, 8);
    we__put_be(w, 0xcb, bits, 8);
}

static inline void we__head(we_writer *w, uint32_t n, uint8_t fix, uint32_t fix_max,
                            uint8_t t8, uint8_t t16) {
    if (n <= fix_max) we__byte(w, (uint8_t)(fix | n));
    else if (t8 && n <= 0xff) we__put_be(w, t8, n, 1);
    else if (n <= 0xffff) we__put_be(w, t16, n, 2);
    else we__put_be(w, (uint8_t)(t16 + 1), n, 4);
}

static inline void we_write_str(we_writer *w, const char *s, uint32_t n) {
    we__head(w, n, 0xa0, 31, 0xd9, 0xda);
    we_write_raw(w, s, n);
}

static inline void we_write_cstr(we_writer *w, const char *s) {
    we_write_str(w, s, (uint32_t)we_strlen(s));
}

static inline void we_write_bin(we_writer *w, const void *data, uint32_t n) {
    if (n <= 0xff) we__put_be(w, 0xc4, n, 1);
    else if (n <= 0xffff) we__put_be(w, 0xc5, n, 2);
    else we__put_be(w, 0xc6, n, 4);
    we_write_raw(w, data, n);
}

/* An array header: write n values after it. */
static inline void we_write_array(we_writer *w, uint32_t n) { we__head(w, n, 0x90, 15, 0, 0xdc); }

/* A map header: write n key/value pairs after it. */
static inline void we_write_map(we_writer *w, uint32_t n) { we__head(w, n, 0x80, 15, 0, 0xde); }

/* ------------------------------------------------------------------ errors */

/* Set the error message (a string that outlives the call, e.g. a literal); returns 1. */
static inline int we_fail(const char *msg) {
    we__err_msg = msg;
    we__err_len = (uint32_t)we_strlen(msg);
    return 1;
}

/* Set the error message from n bytes (copied to the heap); returns 1. */
static inline int we_fail_n(const char *msg, uint32_t n) {
    char *copy = (char *)we_alloc(n);
    we_memcpy(copy, msg, n);
    we__err_msg = copy;
    we__err_len = n;
    return 1;
}

/* ----------------------------------------------------------------- exports */

typedef int (*we_handler)(we_reader *in, we_writer *out);

static inline uint32_t we__export_alloc(uint32_t len) {
    if (!we__in_handle) we_reset_heap(); /* a new call begins: drop the last one's heap */
    void *p = we_try_alloc(len);
    return p ? (uint32_t)(uintptr_t)p : 0xFFFFFFFFu;
}

static inline uint64_t we__export_handle(we_handler fn, uint32_t ptr, uint32_t len) {
    we_reader in = {(const uint8_t *)(uintptr_t)ptr, (const uint8_t *)(uintptr_t)ptr + len, 0};
    we_writer out = {0, 0, 0};
    we__err_msg = 0;
    we__err_len = 0;
    we__in_handle = 1;
    int rc = fn(&in, &out);
    if (rc != 0) {
        out.len = 0;
        we_write_map(&out, 2);
        we_write_str(&out, "error", 5);
        if (we__err_msg) we_write_str(&out, we__err_msg, we__err_len);
        else we_write_str(&out, "agent failed", 12);
        we_write_str(&out, "code", 4);
        we_write_int(&out, rc);
    }
    we__in_handle = 0;
    return ((uint64_t)(uintptr_t)out.buf << 32) | out.len;
}

/* Define the ABI v1 exports `alloc` and `handle` around
 * `static int fn(we_reader *in, we_writer *out)`. Use once per module. */
#define WE_AGENT(fn)                                                              \
    __attribute__((export_name("alloc"))) uint32_t we_export_alloc(uint32_t len) { \
        return we__export_alloc(len);                                             \
    }                                                                             \
    __attribute__((export_name("handle"))) uint64_t we_export_handle(uint32_t ptr, \
                                                                     uint32_t len) { \
        return we__export_handle(fn, ptr, len);                                   \
    }

/* ------------------------------------------------------------ host imports */

#ifdef WE_HOST_CALLS
/* Host functions of module "we" (declared only here: an agent that does not
 * define WE_HOST_CALLS imports nothing). Signatures as wasm_worker's host side
 * defines them (hostcalls.SIGNATURES); the runtime refuses a module whose import
 * types differ. Buffers are (ptr, len) in this module's memory.
 *   we_log:    one log line of UTF-8 text, capped per task (the excess is dropped).
 *   we_emit:   one msgpack value as a task event; 0, or -1 / -2 once the task's
 *              event-count / event-bytes budget is spent.
 *   we_now:    wall-clock time, nanoseconds since the Unix epoch.
 *   we_random: fill buf with the task's seeded random stream (reproducible per seed).
 * Child requests go through the orchestrator: each takes one msgpack map and
 * returns a handle (>= 0) at once, so an agent can fan out before it waits:
 *   we_spawn:    {"agent": name or digest, "input": value, "fuel"?, "timeout"?}
 *   we_send:     the same plus "session" (a stateful agent's session)
 *   we_generate: {"prompt": str | "messages": [{role, content}...], "max_tokens"?,
 *                 "temperature"?, "top_k"?, "top_p"?, "stop"?: [str], "seed"?, "model"?}
 *   we_infer:    {"model": name, "inputs": {...}}
 *   we_wait:     blocks until that child answered; its reply, a msgpack map
 *                {"ok": true, "output": value, "fuel_used": n} or
 *                {"ok": false, "error": {"code", "message", "retryable"}}, is written on
 *                this module's heap through `alloc` (valid until the call ends)
 *                and returned as (ptr << 32) | len. we_wait_reader wraps it.
 * A request for an agent or model outside the manifest's grants, or past the
 * task's budget of children, fails the task (a trap with a typed error).
 * Tensors (docs/agents.md, "Tensors"): a tensor handle is the msgpack map a client or
 * another task put in this agent's input ({dtype, shape, loc, segment, offset, nbytes,
 * generation, owner, ns}); pass its bytes as they are (we_read_raw gives the span).
 *   we_tensor_read:    copy len bytes from byte `offset` of the tensor into dst (one
 *                      copy, straight from shared memory); returns the tensor's nbytes
 *                      (len 0 asks the size). A bad or stale handle, or a range past
 *                      the tensor's end, fails the task (shm.bad_handle,
 *                      shm.stale_handle, shm.foreign_namespace).
 *   we_tensor_publish: spec is a msgpack map {"dtype": str, "shape": [int...]}; the len
 *                      bytes at data (exactly dtype size x prod(shape)) are copied once
 *                      into the worker's shared memory; the new handle's msgpack map is
 *                      written on this module's heap and returned as (ptr << 32) | len:
 *                      put it in the output (we_write_tensor does both). Counted
 *                      against the task's tensor budget (64 MiB by default). */
#define WE__IMPORT(name) __attribute__((import_module("we"), import_name(name)))
WE__IMPORT("log") void we_log(const char *msg, uint32_t len);
WE__IMPORT("emit") int32_t we_emit(const uint8_t *event, uint32_t len);
WE__IMPORT("now") int64_t we_now(void);
WE__IMPORT("random") void we_random(uint8_t *buf, uint32_t len);
WE__IMPORT("spawn") int32_t we_spawn(const uint8_t *request, uint32_t len);
WE__IMPORT("send") int32_t we_send(const uint8_t *request, uint32_t len);
WE__IMPORT("generate") int32_t we_generate(const uint8_t *request, uint32_t len);
WE__IMPORT("infer") int32_t we_infer(const uint8_t *request, uint32_t len);
WE__IMPORT("wait") uint64_t we_wait(int32_t handle);
WE__IMPORT("tensor_read")
int64_t we_tensor_read(const uint8_t *ref, uint32_t ref_len, uint64_t offset, void *dst,
                       uint32_t len);
WE__IMPORT("tensor_publish")
uint64_t we_tensor_publish(const uint8_t *spec, uint32_t spec_len, const void *data,
                           uint32_t len);
#undef WE__IMPORT

/* A reader over the reply of child request `handle` (see we_wait). */
static inline we_reader we_wait_reader(int32_t handle) {
    uint64_t packed = we_wait(handle);
    const uint8_t *p = (const uint8_t *)(uintptr_t)(uint32_t)(packed >> 32);
    we_reader r = {p, p + (uint32_t)packed, 0};
    return r;
}

/* The span [*start, *end) of the next value, consumed; false if there is none. */
static inline bool we_read_raw(we_reader *r, const uint8_t **start, uint32_t *len) {
    const uint8_t *s = r->p;
    if (!we_skip(r)) return false;
    *start = s;
    *len = (uint32_t)(r->p - s);
    return true;
}

/* we_log of a NUL-terminated string. */
static inline void we_log_cstr(const char *msg) { we_log(msg, (uint32_t)we_strlen(msg)); }

/* we_emit of what w holds (one msgpack value). */
static inline int32_t we_emit_writer(const we_writer *w) { return we_emit(w->buf, w->len); }

/* Publish a tensor of `dtype` and shape[0..ndim) from data[0..len) and append its
 * handle (a msgpack map) to out. */
static inline void we_write_tensor(we_writer *out, const char *dtype, const uint32_t *shape,
                                   uint32_t ndim, const void *data, uint32_t len) {
    we_writer spec = {0, 0, 0};
    we_write_map(&spec, 2);
    we_write_str(&spec, "dtype", 5);
    we_write_cstr(&spec, dtype);
    we_write_str(&spec, "shape", 5);
    we_write_array(&spec, ndim);
    for (uint32_t i = 0; i < ndim; i++) we_write_uint(&spec, shape[i]);
    uint64_t ref = we_tensor_publish(spec.buf, spec.len, data, len);
    we_write_raw(out, (const void *)(uintptr_t)(uint32_t)(ref >> 32), (uint32_t)ref);
}
#endif

#endif /* WASM_ENGINE_H */
