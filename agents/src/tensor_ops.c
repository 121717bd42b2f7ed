/* tensor_ops: an agent that reads and publishes tensors through the tensor host calls.
 *
 * Input: a map with "op" and the op's keys:
 *   {"op": "sum", "ref": handle, "offset"?: byte, "count"?: n}
 *       sums `count` float32 values from byte `offset` of the tensor (default: all
 *       after it), reading 64 KiB at a time with we_tensor_read
 *       -> {"sum": float64, "nbytes": the tensor's bytes, "count": values summed}
 *   {"op": "read", "ref": handle, "offset": byte, "len": n, "dst"?: ptr,
 *    "ref_ptr"?: ptr, "ref_len"?: n}
 *       one raw we_tensor_read; dst, ref_ptr and ref_len default to a heap buffer and
 *       the handle's own bytes (tests pass wild pointers through them)
 *       -> {"nbytes": what the call returned, "first": the first byte read, or nil}
 *   {"op": "publish", "n": n, "scale"?: float, "times"?: k, "dtype"?: str,
 *    "shape"?: [int...], "data_ptr"?: ptr, "len"?: n}
 *       publishes float32 i * scale for i < n (default shape [n]), k times; dtype,
 *       shape, data_ptr and len override what is sent (tests lie with them)
 *       -> {"refs": [handle...]}
 * Anything else fails with the SDK's error output.
 */
#define WE_HOST_CALLS
#include "wasm_engine.h"

#define CHUNK 65536

typedef struct {
    const uint8_t *ref, *shape;
    uint32_t ref_len, shape_len, dtype_len;
    const char *op, *dtype;
    uint32_t op_len;
    uint64_t offset, count, len, n, times, dst, ref_ptr, ref_n, data_ptr;
    bool has_count, has_len, has_dst, has_ref_ptr, has_ref_n, has_data_ptr;
    double scale;
} args;

static bool read_number(we_reader *in, double *v) {
    int64_t i;
    if (we_read_int(in, &i)) {
        *v = (double)i;
        return true;
    }
    return we_read_float(in, v);
}

static bool parse(we_reader *in, args *a) {
    uint32_t keys;
    if (!we_read_map(in, &keys)) return false;
    a->scale = 1.0;
    a->times = 1;
    while (keys--) {
        const char *k;
        uint32_t kn;
        if (!we_read_str(in, &k, &kn)) return false;
        bool ok = true;
        if (we_str_eq(k, kn, "op")) ok = we_read_str(in, &a->op, &a->op_len);
        else if (we_str_eq(k, kn, "ref")) ok = we_read_raw(in, &a->ref, &a->ref_len);
        else if (we_str_eq(k, kn, "shape")) ok = we_read_raw(in, &a->shape, &a->shape_len);
        else if (we_str_eq(k, kn, "dtype")) ok = we_read_str(in, &a->dtype, &a->dtype_len);
        else if (we_str_eq(k, kn, "scale")) ok = read_number(in, &a->scale);
        else if (we_str_eq(k, kn, "offset")) ok = we_read_uint(in, &a->offset);
        else if (we_str_eq(k, kn, "n")) ok = we_read_uint(in, &a->n);
        else if (we_str_eq(k, kn, "times")) ok = we_read_uint(in, &a->times);
        else if (we_str_eq(k, kn, "count")) ok = a->has_count = we_read_uint(in, &a->count);
        else if (we_str_eq(k, kn, "len")) ok = a->has_len = we_read_uint(in, &a->len);
        else if (we_str_eq(k, kn, "dst")) ok = a->has_dst = we_read_uint(in, &a->dst);
        else if (we_str_eq(k, kn, "ref_ptr")) ok = a->has_ref_ptr = we_read_uint(in, &a->ref_ptr);
        else if (we_str_eq(k, kn, "ref_len")) ok = a->has_ref_n = we_read_uint(in, &a->ref_n);
        else if (we_str_eq(k, kn, "data_ptr"))
            ok = a->has_data_ptr = we_read_uint(in, &a->data_ptr);
        else ok = we_skip(in);
        if (!ok) return false;
    }
    return a->op != 0;
}

static int sum(const args *a, we_writer *out) {
    if (!a->ref) return we_fail("tensor_ops: sum needs a ref");
    uint64_t nbytes = (uint64_t)we_tensor_read(a->ref, a->ref_len, 0, 0, 0);
    if (a->offset > nbytes) return we_fail("tensor_ops: offset past the tensor");
    uint64_t count = a->has_count ? a->count : (nbytes - a->offset) / 4;
    float *buf = (float *)we_alloc(CHUNK);
    double total = 0.0;
    uint64_t at = a->offset, left = count;
    while (left) {
        uint32_t take = left > CHUNK / 4 ? CHUNK / 4 : (uint32_t)left;
        we_tensor_read(a->ref, a->ref_len, at, buf, take * 4);
        for (uint32_t i = 0; i < take; i++) total += (double)buf[i];
        at += (uint64_t)take * 4;
        left -= take;
    }
    we_write_map(out, 3);
    we_write_str(out, "sum", 3);
    we_write_float(out, total);
    we_write_str(out, "nbytes", 6);
    we_write_uint(out, nbytes);
    we_write_str(out, "count", 5);
    we_write_uint(out, count);
    return 0;
}

static int raw_read(const args *a, we_writer *out) {
    uint32_t len = a->has_len ? (uint32_t)a->len : 0;
    uint8_t *dst = a->has_dst ? (uint8_t *)(uintptr_t)(uint32_t)a->dst : (uint8_t *)we_alloc(len);
    const uint8_t *ref = a->has_ref_ptr ? (const uint8_t *)(uintptr_t)(uint32_t)a->ref_ptr : a->ref;
    uint32_t ref_len = a->has_ref_n ? (uint32_t)a->ref_n : a->ref_len;
    int64_t nbytes = we_tensor_read(ref, ref_len, a->offset, dst, len);
    we_write_map(out, 2);
    we_write_str(out, "nbytes", 6);
    we_write_int(out, nbytes);
    we_write_str(out, "first", 5);
    if (len && !a->has_dst) we_write_uint(out, dst[0]);
    else we_write_nil(out);
    return 0;
}

static int publish(const args *a, we_writer *out) {
    if (a->n > 0x3fffffff) return we_fail("tensor_ops: n too large");
    uint32_t n = (uint32_t)a->n;
    float *data = (float *)we_alloc((size_t)n * 4 + 1);
    for (uint32_t i = 0; i < n; i++) data[i] = (float)((double)i * a->scale);
    we_writer spec = {0, 0, 0};
    we_write_map(&spec, 2);
    we_write_str(&spec, "dtype", 5);
    if (a->dtype) we_write_str(&spec, a->dtype, a->dtype_len);
    else we_write_str(&spec, "float32", 7);
    we_write_str(&spec, "shape", 5);
    if (a->shape) {
        we_write_raw(&spec, a->shape, a->shape_len);
    } else {
        we_write_array(&spec, 1);
        we_write_uint(&spec, n);
    }
    const void *src = a->has_data_ptr ? (const void *)(uintptr_t)(uint32_t)a->data_ptr : data;
    uint32_t len = a->has_len ? (uint32_t)a->len : n * 4;
    if (a->times > 0xffff) return we_fail("tensor_ops: times too large");
    we_write_map(out, 1);
    we_write_str(out, "refs", 4);
    we_write_array(out, (uint32_t)a->times);
    for (uint64_t k = 0; k < a->times; k++) {
        uint64_t ref = we_tensor_publish(spec.buf, spec.len, src, len);
        we_write_raw(out, (const void *)(uintptr_t)(uint32_t)(ref >> 32), (uint32_t)ref);
    }
    return 0;
}

static int tensor_ops(we_reader *in, we_writer *out) {
    args a = {0};
    if (!parse(in, &a)) return we_fail("tensor_ops: input must be a map with \"op\"");
    if (we_str_eq(a.op, a.op_len, "sum")) return sum(&a, out);
    if (we_str_eq(a.op, a.op_len, "read")) return raw_read(&a, out);
    if (we_str_eq(a.op, a.op_len, "publish")) return publish(&a, out);
    return we_fail("tensor_ops: op must be sum, read or publish");
}

WE_AGENT(tensor_ops)
