/* summarize: ask the LLM what a set of documents is about, from their statistics.
 *
 * Input:  a textstats / reduce_stats output ({"words", "top": [[word, count], ...], ...}).
 * Steps:  builds a prompt from the most frequent words (those of 4+ letters: "the",
 *         "and" say nothing about a text) and calls we_generate
 *         (greedy, at most 48 tokens, stop at the first new line), then waits.
 * Output: {"prompt": str, "answer": str, "tokens": n, "device": str}: the answer is
 *         the "text" of the generate result, "device" where the model ran.
 * Needs grants.models to include the model ("smollm2", the default) when the
 * manifest lists models.
 */
#define WE_HOST_CALLS
#include "wasm_engine.h"

#define BAD "summarize: input must be a textstats output with a \"top\" list"

static void text(we_writer *w, const char *s) { we_write_raw(w, s, (uint32_t)we_strlen(s)); }

/* Copy the value of key `want` in the map at r (a str) into *s, *n. */
static bool find_str(we_reader r, const char *want, const char **s, uint32_t *n) {
    uint32_t keys;
    if (!we_read_map(&r, &keys)) return false;
    while (keys--) {
        const char *k;
        uint32_t kn;
        if (!we_read_str(&r, &k, &kn)) return false;
        if (we_str_eq(k, kn, want)) return we_read_str(&r, s, n);
        if (!we_skip(&r)) return false;
    }
    return false;
}

static int summarize(we_reader *in, we_writer *out) {
    uint32_t keys, pairs = 0, used = 0;
    uint64_t words = 0;
    we_writer prompt = {0, 0, 0};
    text(&prompt, "The most frequent words of a set of technical documents are: ");
    if (!we_read_map(in, &keys)) return we_fail(BAD);
    while (keys--) {
        const char *k;
        uint32_t kn;
        if (!we_read_str(in, &k, &kn)) return we_fail(BAD);
        if (we_str_eq(k, kn, "words")) {
            if (!we_read_uint(in, &words)) return we_fail(BAD);
        } else if (we_str_eq(k, kn, "top")) {
            if (!we_read_array(in, &pairs)) return we_fail(BAD);
            for (uint32_t i = 0; i < pairs; i++) {
                uint32_t two, wn;
                const char *word;
                uint64_t count;
                if (!we_read_array(in, &two) || two != 2 || !we_read_str(in, &word, &wn) ||
                    !we_read_uint(in, &count))
                    return we_fail(BAD);
                if (wn < 4) continue;
                if (used++) text(&prompt, ", ");
                we_write_raw(&prompt, word, wn);
                (void)count; /* the order says enough: counts confuse a small model */
            }
        } else if (!we_skip(in)) {
            return we_fail(BAD);
        }
    }
    if (!used) return we_fail("summarize: no word of 4+ letters in \"top\"");
    text(&prompt, ". In one short sentence, what are these documents about?");

    we_writer req = {0, 0, 0};
    we_write_map(&req, 4);
    we_write_str(&req, "prompt", 6);
    we_write_str(&req, (const char *)prompt.buf, prompt.len);
    we_write_str(&req, "max_tokens", 10);
    we_write_uint(&req, 48);
    we_write_str(&req, "temperature", 11);
    we_write_float(&req, 0.0);
    we_write_str(&req, "stop", 4);
    we_write_array(&req, 1);
    we_write_str(&req, "\n", 1);
    we_reader reply = we_wait_reader(we_generate(req.buf, req.len));

    /* {"ok": bool, "output": {"text", "tokens", "device", ...}} or {"ok": false, "error": ...} */
    uint32_t rk;
    bool ok = false;
    const uint8_t *o = 0;
    uint32_t on = 0;
    if (!we_read_map(&reply, &rk)) return we_fail("summarize: unreadable generate reply");
    while (rk--) {
        const char *k;
        uint32_t kn;
        if (!we_read_str(&reply, &k, &kn)) return we_fail("summarize: unreadable reply");
        if (we_str_eq(k, kn, "ok")) {
            if (!we_read_bool(&reply, &ok)) return we_fail("summarize: unreadable reply");
        } else if (we_str_eq(k, kn, "output")) {
            if (!we_read_raw(&reply, &o, &on)) return we_fail("summarize: unreadable reply");
        } else if (we_str_eq(k, kn, "error")) {
            const char *code;
            uint32_t cn;
            we_reader e = reply;
            if (find_str(e, "message", &code, &cn)) {
                we_writer msg = {0, 0, 0};
                text(&msg, "summarize: generate failed: ");
                we_write_raw(&msg, code, cn);
                return we_fail_n((const char *)msg.buf, msg.len);
            }
            return we_fail("summarize: generate failed");
        } else if (!we_skip(&reply)) {
            return we_fail("summarize: unreadable reply");
        }
    }
    if (!ok || !o) return we_fail("summarize: generate failed");
    we_reader result = {o, o + on, 0};
    const char *answer = "", *device = "?";
    uint32_t an = 0, dn = 1;
    uint64_t tokens = 0;
    uint32_t ok_keys;
    if (!we_read_map(&result, &ok_keys)) return we_fail("summarize: unreadable generate output");
    while (ok_keys--) {
        const char *k;
        uint32_t kn;
        if (!we_read_str(&result, &k, &kn)) return we_fail("summarize: unreadable output");
        if (we_str_eq(k, kn, "text")) {
            if (!we_read_str(&result, &answer, &an)) return we_fail("summarize: bad text");
        } else if (we_str_eq(k, kn, "device")) {
            if (!we_read_str(&result, &device, &dn)) return we_fail("summarize: bad device");
        } else if (we_str_eq(k, kn, "tokens")) {
            if (!we_read_uint(&result, &tokens)) return we_fail("summarize: bad tokens");
        } else if (!we_skip(&result)) {
            return we_fail("summarize: unreadable output");
        }
    }
    we_write_map(out, 5);
    we_write_str(out, "prompt", 6);
    we_write_str(out, (const char *)prompt.buf, prompt.len);
    we_write_str(out, "answer", 6);
    we_write_str(out, answer, an);
    we_write_str(out, "tokens", 6);
    we_write_uint(out, tokens);
    we_write_str(out, "device", 6);
    we_write_str(out, device, dn);
    we_write_str(out, "words", 5);
    we_write_uint(out, words);
    return 0;
}

WE_AGENT(summarize)
