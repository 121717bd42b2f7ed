/* planner: fan a job out to child agents, join their results, hand them on.
 *
 * Input:  {"agent": name, "inputs": [v1, v2, ...], "reduce"?: name, "then"?: name}
 * Steps:  spawn `agent` once per input (all at once: the children run in parallel
 *         on the worker pool), wait for each; if "reduce" is given, spawn it on the
 *         array of the children's outputs; if "then" is given, spawn it on what the
 *         previous step gave (e.g. a summarizer that calls the LLM).
 * Output: {"children": n, "result": <the reducer's output, or the array of
 *          outputs>, "then": <the last step's output, or nil>}
 * A child that fails fails the plan: the error names which child and its code
 * (or, for an output map with an "error" key, the SDK's failure output, its message).
 * Needs the manifest to grant the agents it names (grants.agents), and a
 * children budget of at least len(inputs) + 2 (limits.children).
 */
#define WE_HOST_CALLS
#include "wasm_engine.h"

#define BAD "planner: input must be {\"agent\": str, \"inputs\": [...], \"reduce\"?: str, \"then\"?: str}"

typedef struct {
    const char *s;
    uint32_t n;
} str;

/* Spawn `agent` on the raw msgpack value [v, v + vlen). */
static int32_t spawn_raw(str agent, const uint8_t *v, uint32_t vlen) {
    we_writer w = {0, 0, 0};
    we_write_map(&w, 2);
    we_write_str(&w, "agent", 5);
    we_write_str(&w, agent.s, agent.n);
    we_write_str(&w, "input", 5);
    we_write_raw(&w, v, vlen);
    return we_spawn(w.buf, w.len);
}

/* Wait for child `h`; on success the span of its output, else we_fail's code. */
static int join(int32_t h, uint32_t which, const uint8_t **out, uint32_t *out_len) {
    we_reader r = we_wait_reader(h);
    uint32_t keys;
    bool ok = false;
    const char *code = "?";
    uint32_t code_len = 1;
    *out = 0;
    if (!we_read_map(&r, &keys)) return we_fail("planner: unreadable child reply");
    while (keys--) {
        const char *k;
        uint32_t kn;
        if (!we_read_str(&r, &k, &kn)) return we_fail("planner: unreadable child reply");
        if (we_str_eq(k, kn, "ok")) {
            if (!we_read_bool(&r, &ok)) return we_fail("planner: unreadable child reply");
        } else if (we_str_eq(k, kn, "output")) {
            if (!we_read_raw(&r, out, out_len)) return we_fail("planner: unreadable child reply");
        } else if (we_str_eq(k, kn, "error")) {
            uint32_t ek;
            if (!we_read_map(&r, &ek)) return we_fail("planner: unreadable child error");
            while (ek--) {
                const char *ekey;
                uint32_t ekn;
                if (!we_read_str(&r, &ekey, &ekn)) return we_fail("planner: unreadable child error");
                if (!(we_str_eq(ekey, ekn, "code") && we_read_str(&r, &code, &code_len)) &&
                    !we_skip(&r))
                    return we_fail("planner: unreadable child error");
            }
        } else if (!we_skip(&r)) {
            return we_fail("planner: unreadable child reply");
        }
    }
    if (ok && *out) {
        /* the SDK's convention: an output map with an "error" key is an agent's failure */
        we_reader o = {*out, *out + *out_len, 0};
        uint32_t ok_keys;
        if (!we_read_map(&o, &ok_keys)) return 0;
        while (ok_keys--) {
            const char *k;
            uint32_t kn;
            if (!we_read_str(&o, &k, &kn)) return 0;
            if (we_str_eq(k, kn, "error") && we_read_str(&o, &code, &code_len)) break;
            if (!we_skip(&o)) return 0;
        }
        if (ok_keys == UINT32_MAX) return 0; /* no "error" key */
    }
    /* "planner: child <which> failed: <code or the agent's error message>" */
    we_writer msg = {0, 0, 0};
    char digits[10];
    uint32_t nd = 0;
    do digits[nd++] = (char)('0' + which % 10); while ((which /= 10) && nd < 10);
    we_write_raw(&msg, "planner: child ", 15);
    while (nd) we_write_raw(&msg, &digits[--nd], 1);
    we_write_raw(&msg, " failed: ", 9);
    we_write_raw(&msg, code, code_len);
    return we_fail_n((const char *)msg.buf, msg.len);
}

static int plan(we_reader *in, we_writer *out) {
    uint32_t keys, n = 0;
    str agent = {0, 0}, reduce = {0, 0}, then = {0, 0};
    const uint8_t *inputs = 0;
    if (!we_read_map(in, &keys)) return we_fail(BAD);
    while (keys--) {
        const char *k;
        uint32_t kn;
        if (!we_read_str(in, &k, &kn)) return we_fail(BAD);
        str *slot = we_str_eq(k, kn, "agent")    ? &agent
                    : we_str_eq(k, kn, "reduce") ? &reduce
                    : we_str_eq(k, kn, "then")   ? &then
                                                 : 0;
        if (slot) {
            if (!we_read_str(in, &slot->s, &slot->n)) return we_fail(BAD);
        } else if (we_str_eq(k, kn, "inputs")) {
            if (!we_read_array(in, &n)) return we_fail(BAD);
            inputs = in->p;
            for (uint32_t i = 0; i < n; i++)
                if (!we_skip(in)) return we_fail(BAD);
        } else if (!we_skip(in)) {
            return we_fail(BAD);
        }
    }
    if (!agent.s || !inputs) return we_fail(BAD);

    /* fan out: every child first, then wait */
    int32_t *handles = (int32_t *)we_alloc((size_t)n * sizeof(int32_t) + 1);
    we_reader items = {inputs, in->end, 0};
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *v;
        uint32_t vn;
        if (!we_read_raw(&items, &v, &vn)) return we_fail(BAD);
        handles[i] = spawn_raw(agent, v, vn);
    }
    we_writer joined = {0, 0, 0};
    we_write_array(&joined, n);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *o;
        uint32_t on;
        int rc = join(handles[i], i, &o, &on);
        if (rc) return rc;
        we_write_raw(&joined, o, on);
    }
    const uint8_t *result = joined.buf, *last = 0;
    uint32_t result_len = joined.len, last_len = 0;
    if (reduce.s) {
        int rc = join(spawn_raw(reduce, joined.buf, joined.len), n, &result, &result_len);
        if (rc) return rc;
    }
    if (then.s) {
        int rc = join(spawn_raw(then, result, result_len), n + 1, &last, &last_len);
        if (rc) return rc;
    }
    we_write_map(out, 3);
    we_write_str(out, "children", 8);
    we_write_uint(out, n + (reduce.s ? 1 : 0) + (then.s ? 1 : 0));
    we_write_str(out, "result", 6);
    we_write_raw(out, result, result_len);
    we_write_str(out, "then", 4);
    if (last) we_write_raw(out, last, last_len);
    else we_write_nil(out);
    return 0;
}

WE_AGENT(plan)
