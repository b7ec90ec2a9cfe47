/* safetensors.c: parse and validate a .safetensors file (see safetensors.h).
 *
 * The JSON header is parsed with jansson. Validation order per tensor: an object with a known
 * dtype, a shape of at most 4 non-negative dims, data_offsets [begin, end] with
 * begin <= end <= data size and end - begin == elements x element size (overflow-checked).
 */
#include "format/safetensors.h"
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include "util/alloc.h"
#include "util/error.h"
#include "util/json.h"

static int st_dtype(const char *s, kiln_dtype *dt) {
    if (!strcmp(s, "BF16")) *dt = KILN_DT_BF16;
    else if (!strcmp(s, "F16")) *dt = KILN_DT_F16;
    else if (!strcmp(s, "F32")) *dt = KILN_DT_F32;
    else if (!strcmp(s, "F8_E4M3")) *dt = KILN_DT_F8_E4M3;
    else return -1;
    return 0;
}

static int st_parse_tensor(kiln_tensor *t, const char *path, const char *name, json_t *v,
                           const unsigned char *data, uint64_t data_size, kiln_error *err) {
    memset(t, 0, sizeof *t);
    if (strlen(name) >= sizeof t->name)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor name too long (%zu bytes): %.60s...",
                        path, strlen(name), name);
    snprintf(t->name, sizeof t->name, "%s", name);
    if (!json_is_object(v))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s: header entry is not an object",
                        path, name);
    json_t *jd = json_object_get(v, "dtype");
    if (!json_is_string(jd))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s: missing or non-string dtype", path,
                        name);
    if (st_dtype(json_string_value(jd), &t->dtype) != 0)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "%s: tensor %s: dtype %s is not supported (only BF16, F16, F32, F8_E4M3%s)", path,
                        name, json_string_value(jd),
                        !strcmp(json_string_value(jd), "F8_E5M2") ? "; FP8 E5M2 weights are not supported" : "");
    json_t *js = json_object_get(v, "shape");
    if (!json_is_array(js))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s: missing shape", path, name);
    size_t nd = json_array_size(js);
    if (nd > 4)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: tensor %s: %zu dimensions (at most 4)",
                        path, name, nd);
    t->ndim = (int)nd;
    uint64_t nel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return KILN_ERR(err, KILN_ERR_FORMAT,
                            "%s: tensor %s: shape[%zu] is not a non-negative integer", path, name, i);
        t->shape[i] = (int64_t)json_integer_value(d);
        if (__builtin_mul_overflow(nel, (uint64_t)t->shape[i], &nel))
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s: shape overflows", path, name);
    }
    json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !json_is_integer(json_array_get(jo, 0)) || !json_is_integer(json_array_get(jo, 1)))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s: data_offsets is not [begin, end]",
                        path, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0));
    json_int_t e = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || e < b || (uint64_t)e > data_size)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: tensor %s: data_offsets [%lld, %lld] outside the data area of %llu "
                        "bytes (file truncated or corrupt)",
                        path, name, (long long)b, (long long)e, (unsigned long long)data_size);
    uint64_t want;
    if (__builtin_mul_overflow(nel, (uint64_t)kiln_dtype_block_bytes(t->dtype), &want))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s: byte size overflows", path, name);
    if ((uint64_t)(e - b) != want)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: tensor %s: data_offsets span %lld bytes but dtype %s x shape needs "
                        "%llu",
                        path, name, (long long)(e - b), json_string_value(jd),
                        (unsigned long long)want);
    t->data = data + b;
    t->nbytes = (size_t)want;
    return KILN_OK;
}

int kiln_safetensors_open(kiln_safetensors *st, const char *path, kiln_error *err) {
    memset(st, 0, sizeof *st);
    int rc = kiln_mapfile_open(&st->map, path, err);
    if (rc) return rc;
    const unsigned char *p = st->map.data;
    size_t size = st->map.size;
    if (size < 8) {
        rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: truncated: %zu bytes, no header length", path,
                      size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > size - 8) {
        rc = KILN_ERR(err, KILN_ERR_FORMAT,
                      "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                      (unsigned long long)hlen, size);
        goto fail;
    }
    json_error_t je;
    json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        rc = KILN_JSON_FAIL(err, &je, path, "%s: invalid JSON header: %s (line %d, column %d)",
                      path, je.text, je.line, je.column);
        goto fail;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: invalid JSON header: not an object", path);
        goto fail;
    }
    size_t n = json_object_size(root);
    st->tensors = kiln_calloc(n ? n : 1, sizeof *st->tensors);
    if (!st->tensors) {
        json_decref(root);
        rc = KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory for %zu tensors", path, n);
        goto fail;
    }
    const unsigned char *data = p + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) continue;
        rc = st_parse_tensor(&st->tensors[st->n_tensors], path, key, val, data, data_size, err);
        if (rc) {
            json_decref(root);
            goto fail;
        }
        st->n_tensors++;
    }
    json_decref(root);
    return KILN_OK;
fail:
    kiln_safetensors_close(st);
    return rc;
}

void kiln_safetensors_close(kiln_safetensors *st) {
    if (!st) return;
    kiln_free(st->tensors);
    kiln_mapfile_close(&st->map);
    memset(st, 0, sizeof *st);
}
