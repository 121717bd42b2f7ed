/* msgpack_norm: check one msgpack value and re-encode it in canonical form.
 *
 * Input: any one msgpack value without ext types.
 * Output: the same value, every int, str, bin, array and map header in its
 * smallest encoding and every float as float64, which is how Python's
 * msgpack.packb(value) encodes it: equal values give equal bytes, so the output
 * can be hashed or compared. Truncated or invalid msgpack, an ext value or bytes
 * after the value give the error output {"error", "code"}.
 *
 * Walks the input iteratively (a count of values still to read, like we_skip),
 * so nesting depth costs no stack; it exercises every reader and writer of the
 * SDK, which is what the tests use it for.
 */
#include "wasm_engine.h"

#define BAD "msgpack_norm: truncated or invalid msgpack"

static int msgpack_norm(we_reader *in, we_writer *out) {
    uint64_t pending = 1; /* values still to read; each takes >= 1 input byte */
    while (pending--) {
        bool ok = false, b;
        int64_t i;
        uint64_t u;
        double f;
        const char *s;
        const uint8_t *d;
        uint32_t n;
        switch (we_peek(in)) {
        case WE_NIL:
            if ((ok = we_read_nil(in))) we_write_nil(out);
            break;
        case WE_BOOL:
            if ((ok = we_read_bool(in, &b))) we_write_bool(out, b);
            break;
        case WE_INT:
            if ((ok = we_read_int(in, &i))) we_write_int(out, i);
            else if ((ok = we_read_uint(in, &u))) we_write_uint(out, u); /* > INT64_MAX */
            break;
        case WE_FLOAT:
            if ((ok = we_read_float(in, &f))) we_write_float(out, f);
            break;
        case WE_STR:
            if ((ok = we_read_str(in, &s, &n))) we_write_str(out, s, n);
            break;
        case WE_BIN:
            if ((ok = we_read_bin(in, &d, &n))) we_write_bin(out, d, n);
            break;
        case WE_ARRAY:
            if ((ok = we_read_array(in, &n))) {
                we_write_array(out, n);
                pending += n;
            }
            break;
        case WE_MAP:
            if ((ok = we_read_map(in, &n))) {
                we_write_map(out, n);
                pending += 2 * (uint64_t)n;
            }
            break;
        case WE_EXT:
            return we_fail("msgpack_norm: ext types are not supported");
        case WE_END:
        case WE_INVALID:
            break;
        }
        if (!ok) return we_fail(BAD);
    }
    if (!we_at_end(in)) return we_fail("msgpack_norm: bytes after the value");
    return 0;
}

WE_AGENT(msgpack_norm)
