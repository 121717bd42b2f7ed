/* reduce_stats: merge the outputs of textstats (or of reduce_stats) into one.
 *
 * Input: a msgpack array of maps, each a textstats output {"bytes", "words",
 *        "lines", "unique_words", "top"} or a reduce_stats output (which adds
 *        "unique_words_max" and "parts"); missing keys count as 0 (as 1 for
 *        "parts", as "unique_words" for "unique_words_max"), unknown keys are
 *        ignored.
 * Output: {"bytes", "words", "lines", "unique_words", "unique_words_max",
 *          "parts", "top": [[word, count], ...]}  (at most 10 pairs)
 *
 * bytes, words, lines and parts are sums: exact when the texts were split at
 * line ends (a word or line cut in two is counted twice). Distinct words cannot
 * be merged from counts, so "unique_words" is a lower bound (the largest part's)
 * and "unique_words_max" an upper bound (the sum); both are exact for one part.
 * "top" sums the counts of equal words across the parts' top lists and keeps the
 * 10 best in textstats' order: approximate, since a word that missed one part's
 * top 10 is not counted there. The output is a valid input, so merges can nest.
 */
#include "wasm_engine.h"
#include "wordtable.h"

#define BAD "reduce_stats: input must be an array of textstats outputs"

typedef struct {
    uint64_t bytes, words, lines, unique_min, unique_max, parts;
} totals;

/* One [word, count] pair of a "top" list into the table. */
static bool read_pair(we_reader *in, wt_table *t) {
    uint32_t n;
    const char *word;
    uint32_t len;
    uint64_t count;
    if (!we_read_array(in, &n) || n != 2 || !we_read_str(in, &word, &len) ||
        !we_read_uint(in, &count))
        return false;
    wt_add(t, word, len, wt_hash(word, len), count);
    return true;
}

/* One stats map: add its sums to tot and its top list to the table. */
static bool read_part(we_reader *in, totals *tot, wt_table *t) {
    uint32_t keys, m;
    uint64_t bytes = 0, words = 0, lines = 0, uniq = 0, uniq_max = 0, parts = 1;
    bool has_max = false;
    if (!we_read_map(in, &keys)) return false;
    while (keys--) {
        const char *key;
        uint32_t klen;
        uint64_t *slot = 0;
        if (!we_read_str(in, &key, &klen)) return false;
        if (we_str_eq(key, klen, "bytes")) slot = &bytes;
        else if (we_str_eq(key, klen, "words")) slot = &words;
        else if (we_str_eq(key, klen, "lines")) slot = &lines;
        else if (we_str_eq(key, klen, "unique_words")) slot = &uniq;
        else if (we_str_eq(key, klen, "unique_words_max")) slot = &uniq_max, has_max = true;
        else if (we_str_eq(key, klen, "parts")) slot = &parts;
        if (slot) {
            if (!we_read_uint(in, slot)) return false;
        } else if (we_str_eq(key, klen, "top")) {
            if (!we_read_array(in, &m)) return false;
            while (m--)
                if (!read_pair(in, t)) return false;
        } else if (!we_skip(in)) {
            return false;
        }
    }
    tot->bytes += bytes;
    tot->words += words;
    tot->lines += lines;
    tot->parts += parts;
    if (uniq > tot->unique_min) tot->unique_min = uniq;
    tot->unique_max += has_max ? uniq_max : uniq;
    return true;
}

static void write_u(we_writer *out, const char *key, uint64_t v) {
    we_write_cstr(out, key);
    we_write_uint(out, v);
}

static int reduce_stats(we_reader *in, we_writer *out) {
    uint32_t n;
    if (!we_read_array(in, &n)) return we_fail(BAD);
    totals tot = {0, 0, 0, 0, 0, 0};
    wt_table t;
    wt_init(&t, 256);
    while (n--)
        if (!read_part(in, &tot, &t)) return we_fail(BAD);
    if (!we_at_end(in)) return we_fail(BAD);

    wt_entry top[WT_TOP];
    uint32_t k = wt_top(&t, top);
    we_write_map(out, 7);
    write_u(out, "bytes", tot.bytes);
    write_u(out, "words", tot.words);
    write_u(out, "lines", tot.lines);
    write_u(out, "unique_words", tot.unique_min);
    write_u(out, "unique_words_max", tot.unique_max);
    write_u(out, "parts", tot.parts);
    we_write_cstr(out, "top");
    wt_write_top(out, top, k);
    return 0;
}

WE_AGENT(reduce_stats)
