/* wordtable.h: word -> count hash table on the bump heap, and top-k selection.
 * Shared by textstats.c and reduce_stats.c. Keys are not copied: they point into
 * memory that lives for the whole call (the input buffer).
 */
#ifndef WORDTABLE_H
#define WORDTABLE_H

#include "wasm_engine.h"

#define WT_TOP 10 /* length of the "top" lists */

#define WT_FNV_OFFSET 2166136261u
#define WT_FNV_PRIME 16777619u

typedef struct {
    const char *word; /* NULL: empty slot */
    uint32_t len;
    uint32_t hash;
    uint64_t count;
} wt_entry;

typedef struct {
    wt_entry *slots;
    uint32_t mask; /* capacity - 1; capacity is a power of two */
    uint32_t used;
} wt_table;

static inline uint32_t wt_hash(const char *s, uint32_t n) {
    uint32_t h = WT_FNV_OFFSET;
    for (uint32_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * WT_FNV_PRIME;
    return h;
}

/* a[0..n) == b[0..n), 8 bytes at a time (wasm loads need no alignment). */
static inline bool wt_eq(const char *a, const char *b, uint32_t n) {
    typedef uint64_t __attribute__((aligned(1), may_alias)) u64u;
    for (; n >= 8; n -= 8, a += 8, b += 8)
        if (*(const u64u *)a != *(const u64u *)b) return false;
    for (; n; n--, a++, b++)
        if (*a != *b) return false;
    return true;
}

/* FNV-1a's low bits are weak for short keys: mix before masking. */
static inline uint32_t wt_slot(uint32_t h) { return (h ^ (h >> 16)) * 0x45d9f3bu; }

static inline void wt_init(wt_table *t, uint32_t capacity_pow2) {
    t->slots = (wt_entry *)we_alloc(sizeof(wt_entry) * (size_t)capacity_pow2);
    we_memset(t->slots, 0, sizeof(wt_entry) * (size_t)capacity_pow2);
    t->mask = capacity_pow2 - 1;
    t->used = 0;
}

static inline void wt_grow(wt_table *t) {
    wt_table bigger;
    wt_init(&bigger, (t->mask + 1) * 2); /* the old slots stay behind on the bump heap */
    for (uint32_t i = 0; i <= t->mask; i++) {
        wt_entry *e = &t->slots[i];
        if (!e->word) continue;
        uint32_t j = wt_slot(e->hash) & bigger.mask;
        while (bigger.slots[j].word) j = (j + 1) & bigger.mask;
        bigger.slots[j] = *e;
    }
    bigger.used = t->used;
    *t = bigger;
}

/* Add n to the count of word s[0..len) whose wt_hash is h. */
static inline void wt_add(wt_table *t, const char *s, uint32_t len, uint32_t h, uint64_t n) {
    uint32_t j = wt_slot(h) & t->mask;
    for (;;) {
        wt_entry *e = &t->slots[j];
        if (!e->word) break;
        if (e->hash == h && e->len == len && wt_eq(e->word, s, len)) {
            e->count += n;
            return;
        }
        j = (j + 1) & t->mask;
    }
    t->slots[j] = (wt_entry){s, len, h, n};
    if (++t->used * 2 > t->mask + 1) wt_grow(t); /* keep the load at most 1/2 */
}

/* a ranks before b: higher count first, then bytewise smaller word (a prefix first). */
static inline bool wt_before(const wt_entry *a, const wt_entry *b) {
    if (a->count != b->count) return a->count > b->count;
    uint32_t m = a->len < b->len ? a->len : b->len;
    int c = we_memcmp(a->word, b->word, m);
    return c != 0 ? c < 0 : a->len < b->len;
}

/* The first (at most) WT_TOP entries in wt_before order into top[]; returns how many. */
static inline uint32_t wt_top(const wt_table *t, wt_entry top[WT_TOP]) {
    uint32_t k = 0;
    for (uint32_t i = 0; i <= t->mask; i++) {
        const wt_entry *e = &t->slots[i];
        if (!e->word || (k == WT_TOP && !wt_before(e, &top[k - 1]))) continue;
        uint32_t j = k < WT_TOP ? k++ : k - 1; /* insertion sort into the sorted top[] */
        while (j > 0 && wt_before(e, &top[j - 1])) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = *e;
    }
    return k;
}

/* [[word, count], ...] */
static inline void wt_write_top(we_writer *out, const wt_entry *top, uint32_t k) {
    we_write_array(out, k);
    for (uint32_t i = 0; i < k; i++) {
        we_write_array(out, 2);
        we_write_str(out, top[i].word, top[i].len);
        we_write_uint(out, top[i].count);
    }
}

#endif /* WORDTABLE_H */
