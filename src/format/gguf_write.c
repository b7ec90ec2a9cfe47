/* gguf_write.c: GGUF v3 writer (gguf_write.h). */
#include "format/gguf_write.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "util/alloc.h"
#include "util/buf.h"
#include "util/error.h"

#define ALIGN 32

typedef struct w_kv {
    char *key;
    size_t key_len;
    uint32_t type;
    uint8_t *val; /* stored bytes */
    uint64_t len;
} w_kv;

typedef struct w_tensor {
    char *name;
    kiln_dtype dt;
    int ndim;
    int64_t shape[4];
    size_t nbytes;
    uint64_t offset; /* in the data section */
} w_tensor;

struct kiln_gguf_writer {
    w_kv *kv;
    size_t n_kv, cap_kv;
    w_tensor *t;
    size_t n_t, cap_t;
};

kiln_gguf_writer *kiln_gguf_writer_new(void) { return kiln_calloc(1, sizeof(kiln_gguf_writer)); }

void kiln_gguf_writer_free(kiln_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        kiln_free(w->kv[i].key);
        kiln_free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) kiln_free(w->t[i].name);
    kiln_free(w->kv);
    kiln_free(w->t);
    kiln_free(w);
}

static w_kv *find_kv(const kiln_gguf_writer *w, const char *key, size_t kl) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (w->kv[i].key_len == kl && !memcmp(w->kv[i].key, key, kl)) return &w->kv[i];
    return NULL;
}

int kiln_gguf_has_key(const kiln_gguf_writer *w, const char *key) { return find_kv(w, key, strlen(key)) != NULL; }

/* set key (kl bytes) to the value bytes val[len] of type t (val copied) */
static int set_bytes(kiln_gguf_writer *w, const char *key, size_t kl, uint32_t t, const void *val, uint64_t len) {
    if (!w || !key || kl == 0) return -1;
    uint8_t *copy = kiln_malloc(len ? (size_t)len : 1);
    if (!copy) return -1;
    if (len) memcpy(copy, val, (size_t)len);
    w_kv *e = find_kv(w, key, kl);
    if (e) {
        kiln_free(e->val);
        e->type = t;
        e->val = copy;
        e->len = len;
        return 0;
    }
    if (w->n_kv == w->cap_kv) {
        size_t nc = w->cap_kv ? 2 * w->cap_kv : 16;
        w_kv *nk = kiln_realloc(w->kv, nc * sizeof *nk);
        if (!nk) { kiln_free(copy); return -1; }
        w->kv = nk;
        w->cap_kv = nc;
    }
    char *k = kiln_malloc(kl + 1);
    if (!k) { kiln_free(copy); return -1; }
    memcpy(k, key, kl);
    k[kl] = 0;
    w->kv[w->n_kv++] = (w_kv){k, kl, t, copy, len};
    return 0;
}

#define SETTER(fn, ctype, gt)                                                                  \
    int fn(kiln_gguf_writer *w, const char *key, ctype v) {                                    \
        return key ? set_bytes(w, key, strlen(key), gt, &v, sizeof v) : -1;                    \
    }
SETTER(kiln_gguf_set_u8, uint8_t, KILN_GGUF_UINT8)
SETTER(kiln_gguf_set_i8, int8_t, KILN_GGUF_INT8)
SETTER(kiln_gguf_set_u16, uint16_t, KILN_GGUF_UINT16)
SETTER(kiln_gguf_set_i16, int16_t, KILN_GGUF_INT16)
SETTER(kiln_gguf_set_u32, uint32_t, KILN_GGUF_UINT32)
SETTER(kiln_gguf_set_i32, int32_t, KILN_GGUF_INT32)
SETTER(kiln_gguf_set_u64, uint64_t, KILN_GGUF_UINT64)
SETTER(kiln_gguf_set_i64, int64_t, KILN_GGUF_INT64)
SETTER(kiln_gguf_set_f32, float, KILN_GGUF_FLOAT32)
SETTER(kiln_gguf_set_f64, double, KILN_GGUF_FLOAT64)
#undef SETTER

int kiln_gguf_set_bool(kiln_gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return key ? set_bytes(w, key, strlen(key), KILN_GGUF_BOOL, &b, 1) : -1;
}

int kiln_gguf_set_str(kiln_gguf_writer *w, const char *key, const char *v) {
    if (!key || !v) return -1;
    uint64_t n = strlen(v);
    uint8_t *b = kiln_malloc(8 + (size_t)n);
    if (!b) return -1;
    memcpy(b, &n, 8);
    memcpy(b + 8, v, (size_t)n);
    int rc = set_bytes(w, key, strlen(key), KILN_GGUF_STRING, b, 8 + n);
    kiln_free(b);
    return rc;
}

int kiln_gguf_set_arr(kiln_gguf_writer *w, const char *key, kiln_gguf_type et, const void *elems, uint64_t n) {
    int es = kiln_gguf_scalar_size(et);
    if (!key || !es || (n && !elems) || n > ((uint64_t)1 << 40) / (uint64_t)es) return -1;
    size_t sz = 12 + (size_t)n * (size_t)es;
    uint8_t *b = kiln_malloc(sz);
    if (!b) return -1;
    uint32_t t = (uint32_t)et;
    memcpy(b, &t, 4);
    memcpy(b + 4, &n, 8);
    if (n) memcpy(b + 12, elems, (size_t)n * (size_t)es);
    int rc = set_bytes(w, key, strlen(key), KILN_GGUF_ARRAY, b, sz);
    kiln_free(b);
    return rc;
}

int kiln_gguf_set_arr_str(kiln_gguf_writer *w, const char *key, const char *const *s, const uint64_t *lens,
                          uint64_t n) {
    if (!key || (n && !s)) return -1;
    kiln_buf b = {0};
    uint32_t t = KILN_GGUF_STRING;
    int rc = kiln_buf_add(&b, &t, 4) || kiln_buf_add(&b, &n, 8);
    for (uint64_t i = 0; i < n && !rc; i++) {
        uint64_t l = lens ? lens[i] : strlen(s[i]);
        rc = kiln_buf_add(&b, &l, 8) || kiln_buf_add(&b, s[i], (size_t)l);
    }
    if (!rc) rc = set_bytes(w, key, strlen(key), KILN_GGUF_ARRAY, b.p, b.len);
    kiln_buf_free(&b);
    return rc ? -1 : 0;
}

int kiln_gguf_set_raw(kiln_gguf_writer *w, const char *key, size_t key_len, kiln_gguf_type t, const void *raw,
                      uint64_t len) {
    return set_bytes(w, key, key_len, (uint32_t)t, raw, len);
}

int kiln_gguf_ggml_type_of(kiln_dtype dt) {
    switch (dt) {
    case KILN_DT_F32: return 0;
    case KILN_DT_F16: return 1;
    case KILN_DT_Q4_0: return 2;
    case KILN_DT_Q4_1: return 3;
    case KILN_DT_Q5_0: return 6;
    case KILN_DT_Q5_1: return 7;
    case KILN_DT_Q8_0: return 8;
    case KILN_DT_Q4_K: return 12;
    case KILN_DT_Q5_K: return 13;
    case KILN_DT_Q6_K: return 14;
    case KILN_DT_I32: return 26;
    case KILN_DT_BF16: return 30;
    default: return -1;
    }
}

int kiln_gguf_add_tensor(kiln_gguf_writer *w, const char *name, kiln_dtype dt, int ndim, const int64_t *shape) {
    if (!w || !name || !*name || ndim < 1 || ndim > 4 || kiln_gguf_ggml_type_of(dt) < 0) return -1;
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return -1;
    int64_t rows = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0) return -1;
        if (d < ndim - 1) rows *= shape[d];
    }
    size_t rb = kiln_dtype_row_bytes(dt, shape[ndim - 1]);
    if (!rb) return -1;
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? 2 * w->cap_t : 64;
        w_tensor *nt = kiln_realloc(w->t, nc * sizeof *nt);
        if (!nt) return -1;
        w->t = nt;
        w->cap_t = nc;
    }
    size_t nl = strlen(name);
    char *n = kiln_malloc(nl + 1);
    if (!n) return -1;
    memcpy(n, name, nl + 1);
    w_tensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = n;
    t->dt = dt;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->nbytes = rb * (size_t)rows;
    return (int)w->n_t++;
}

static int put(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n ? 0 : -1; }
static int put_u32(FILE *f, uint32_t v) { return put(f, &v, 4); }
static int put_u64(FILE *f, uint64_t v) { return put(f, &v, 8); }
static int put_str(FILE *f, const char *s, size_t n) { return put_u64(f, n) || put(f, s, n); }
static int pad(FILE *f, uint64_t pos) {
    static const uint8_t z[ALIGN];
    size_t n = (size_t)((ALIGN - pos % ALIGN) % ALIGN);
    return put(f, z, n);
}

int kiln_gguf_write(kiln_gguf_writer *w, const char *path, kiln_gguf_fill_fn fill, void *ctx, kiln_error *err) {
    char tmp[1100];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return KILN_ERR(err, KILN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    uint64_t off = 0;
    size_t maxb = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        off += (w->t[i].nbytes + ALIGN - 1) / ALIGN * ALIGN;
        if (w->t[i].nbytes > maxb) maxb = w->t[i].nbytes;
    }
    int rc = put(f, "GGUF", 4) || put_u32(f, 3) || put_u64(f, w->n_t) || put_u64(f, w->n_kv);
    for (size_t i = 0; i < w->n_kv && !rc; i++)
        rc = put_str(f, w->kv[i].key, w->kv[i].key_len) || put_u32(f, w->kv[i].type) || put(f, w->kv[i].val, w->kv[i].len);
    for (size_t i = 0; i < w->n_t && !rc; i++) {
        const w_tensor *t = &w->t[i];
        rc = put_str(f, t->name, strlen(t->name)) || put_u32(f, (uint32_t)t->ndim);
        for (int d = t->ndim - 1; d >= 0 && !rc; d--) rc = put_u64(f, (uint64_t)t->shape[d]);
        if (!rc) rc = put_u32(f, (uint32_t)kiln_gguf_ggml_type_of(t->dt)) || put_u64(f, t->offset);
    }
    if (rc) {
        fclose(f);
        remove(tmp);
        return KILN_ERR(err, KILN_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    }
    long hdr = ftell(f);
    rc = hdr < 0 || pad(f, (uint64_t)hdr);
    if (rc) {
        fclose(f);
        remove(tmp);
        return KILN_ERR(err, KILN_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    }
    void *buf = kiln_malloc(maxb ? maxb : 1);
    if (!buf) {
        fclose(f);
        remove(tmp);
        return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory for a %zu-byte tensor", path, maxb);
    }
    int st = KILN_OK;
    for (size_t i = 0; i < w->n_t && st == KILN_OK; i++) {
        memset(buf, 0, w->t[i].nbytes);
        st = fill(ctx, (int)i, buf, w->t[i].nbytes, err);
        if (st == KILN_OK && (put(f, buf, w->t[i].nbytes) || pad(f, w->t[i].nbytes)))
            st = KILN_ERR(err, KILN_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    }
    kiln_free(buf);
    if (fclose(f) && st == KILN_OK) st = KILN_ERR(err, KILN_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (st == KILN_OK && rename(tmp, path))
        st = KILN_ERR(err, KILN_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (st != KILN_OK) remove(tmp);
    return st;
}
