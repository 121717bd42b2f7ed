/* textstats: word statistics of one text.
 *
 * Input: a msgpack str or bin holding the text (any bytes; UTF-8 is not checked).
 * Output: {"bytes": int, "words": int, "lines": int, "unique_words": int,
 *          "top": [[word, count], ...]}  (at most 10 pairs)
 *
 * A word is a maximal run of ASCII letters and digits [A-Za-z0-9], lowercased;
 * every other byte (punctuation, space, any byte >= 0x80) separates words.
 * "lines" counts '\n' bytes, plus one when the text is not empty and does not end
 * in '\n'. "top" lists the most frequent words, by count descending, then by the
 * word's bytes ascending. The input buffer is lowercased in place and the words
 * are counted in an open-addressing hash table on the heap: no copies.
 */
#include "wasm_engine.h"
#include "wordtable.h"

/* 0 for a separator byte, else the lowercased byte. */
static const uint8_t WORD_BYTE[256] = {
    ['0'] = '0', ['1'] = '1', ['2'] = '2', ['3'] = '3', ['4'] = '4',
    ['5'] = '5', ['6'] = '6', ['7'] = '7', ['8'] = '8', ['9'] = '9',
    ['A'] = 'a', ['B'] = 'b', ['C'] = 'c', ['D'] = 'd', ['E'] = 'e', ['F'] = 'f',
    ['G'] = 'g', ['H'] = 'h', ['I'] = 'i', ['J'] = 'j', ['K'] = 'k', ['L'] = 'l',
    ['M'] = 'm', ['N'] = 'n', ['O'] = 'o', ['P'] = 'p', ['Q'] = 'q', ['R'] = 'r',
    ['S'] = 's', ['T'] = 't', ['U'] = 'u', ['V'] = 'v', ['W'] = 'w', ['X'] = 'x',
    ['Y'] = 'y', ['Z'] = 'z',
    ['a'] = 'a', ['b'] = 'b', ['c'] = 'c', ['d'] = 'd', ['e'] = 'e', ['f'] = 'f',
    ['g'] = 'g', ['h'] = 'h', ['i'] = 'i', ['j'] = 'j', ['k'] = 'k', ['l'] = 'l',
    ['m'] = 'm', ['n'] = 'n', ['o'] = 'o', ['p'] = 'p', ['q'] = 'q', ['r'] = 'r',
    ['s'] = 's', ['t'] = 't', ['u'] = 'u', ['v'] = 'v', ['w'] = 'w', ['x'] = 'x',
    ['y'] = 'y', ['z'] = 'z',
};

static int textstats(we_reader *in, we_writer *out) {
    const uint8_t *data;
    uint32_t n;
    if (!we_read_bytes(in, &data, &n) || !we_at_end(in))
        return we_fail("textstats: input must be one msgpack str or bin of text");

    uint8_t *p = (uint8_t *)data, *end = p + n; /* the input is ours: lowercase in place */
    wt_table t;
    wt_init(&t, 1024);
    uint32_t words = 0, lines = 0;
    while (p < end) {
        uint8_t c = WORD_BYTE[*p];
        if (!c) { /* a separator */
            lines += *p++ == '\n';
            continue;
        }
        const uint8_t *start = p;
        uint32_t h = WT_FNV_OFFSET;
        do { /* a word: lowercase and hash it in one pass */
            *p++ = c;
            h = (h ^ c) * WT_FNV_PRIME;
        } while (p < end && (c = WORD_BYTE[*p]));
        words++;
        wt_add(&t, (const char *)start, (uint32_t)(p - start), h, 1);
    }
    if (n && data[n - 1] != '\n') lines++;

    wt_entry top[WT_TOP];
    uint32_t k = wt_top(&t, top);
    we_write_map(out, 5);
    we_write_cstr(out, "bytes");
    we_write_uint(out, n);
    we_write_cstr(out, "words");
    we_write_uint(out, words);
    we_write_cstr(out, "lines");
    we_write_uint(out, lines);
    we_write_cstr(out, "unique_words");
    we_write_uint(out, t.used);
    we_write_cstr(out, "top");
    wt_write_top(out, top, k);
    return 0;
}

WE_AGENT(textstats)
