/* gguf.c: GGUF v2/v3 reader.
 *
 * Layout (little-endian): "GGUF" magic, u32 version, u64 tensor count, u64 kv count; then kv
 * pairs (string key, u32 type, value), tensor infos (string name, u32 n_dims, u64 ne[n_dims],
 * u32 ggml type, u64 offset relative to the data section); then padding up to
 * general.alignment (default 32) and the tensor data. Strings are u64 length + bytes (no NUL).
 *
 * The file is mmapped and parsed once through a bounds-checked cursor: every length, count and
 * offset is checked against the file size before it is used, so a malformed file gives an error
 * naming the file and the problem, never a read past the mapping. Metadata values point into
 * the mapping (strings are not copied); string arrays get an offset table so element i is O(1).
 * Nested arrays are walked (to skip them) but not exposed. Keys and tensor names are sorted
 * once for binary-search lookup, which also finds duplicates.
 */
#include "format/gguf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util/alloc.h"
#include "util/error.h"
#include "util/mapfile.h"

#define GGUF_MAX_DIMS 4
#define GGUF_MAX_NESTING 4

typedef struct gguf_kv {
    kiln_gguf_str key;
    kiln_gguf_type type;
    union { uint64_t u; int64_t i; double f; } num; /* scalars */
    kiln_gguf_str str;                                /* STRING */
    kiln_gguf_type arr_type;                          /* ARRAY */
    uint64_t arr_n;
    const unsigned char *arr_data;                    /* first element */
    uint64_t *str_offs;                               /* [arr_n] string arrays: offsets in file */
    const unsigned char *raw;                         /* the value's bytes as stored (after its type) */
    uint64_t raw_len;
} gguf_kv;

struct kiln_gguf {
    kiln_mapfile map;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;                     /* [n_kv] */
    uint64_t *kv_sorted;             /* [n_kv] indices sorted by key */
    kiln_gguf_tensor_info *t;        /* [n_tensors] */
    uint64_t *t_sorted;              /* [n_tensors] indices sorted by name */
    uint64_t alignment;
    uint64_t data_off;
};

/* ---- GGML types ------------------------------------------------------------------------ */

static const struct { const char *name; int blk, bytes; kiln_dtype dt; } k_ggml[] = {
    [0] = {"f32", 1, 4, KILN_DT_F32},       [1] = {"f16", 1, 2, KILN_DT_F16},
    [2] = {"q4_0", 32, 18, KILN_DT_Q4_0},   [3] = {"q4_1", 32, 20, KILN_DT_Q4_1},
    [6] = {"q5_0", 32, 22, KILN_DT_Q5_0},   [7] = {"q5_1", 32, 24, KILN_DT_Q5_1},
    [8] = {"q8_0", 32, 34, KILN_DT_Q8_0},   [9] = {"q8_1", 32, 36, KILN_DT_COUNT},
    [10] = {"q2_K", 256, 84, KILN_DT_COUNT}, [11] = {"q3_K", 256, 110, KILN_DT_COUNT},
    [12] = {"q4_K", 256, 144, KILN_DT_Q4_K}, [13] = {"q5_K", 256, 176, KILN_DT_Q5_K},
    [14] = {"q6_K", 256, 210, KILN_DT_Q6_K}, [15] = {"q8_K", 256, 292, KILN_DT_COUNT},
    [24] = {"i8", 1, 1, KILN_DT_COUNT},     [25] = {"i16", 1, 2, KILN_DT_COUNT},
    [26] = {"i32", 1, 4, KILN_DT_I32},      [27] = {"i64", 1, 8, KILN_DT_COUNT},
    [28] = {"f64", 1, 8, KILN_DT_COUNT},    [30] = {"bf16", 1, 2, KILN_DT_BF16},
};
#define N_GGML ((uint32_t)(sizeof k_ggml / sizeof k_ggml[0]))

const char *kiln_gguf_ggml_type_name(uint32_t t) {
    if (t < N_GGML && k_ggml[t].name) return k_ggml[t].name;
    return "unknown";
}

/* ---- bounds-checked cursor ------------------------------------------------------------- */

typedef struct rd {
    const unsigned char *p;
    uint64_t size, pos;
    const char *path;
    kiln_error *err;
    const char *what; /* what is being read, for messages */
} rd;

static int rd_need(rd *r, uint64_t n) {
    if (n > r->size - r->pos)
        return KILN_ERR(r->err, KILN_ERR_FORMAT,
                        "%s: truncated file: %s needs %llu bytes at offset %llu, file size %llu",
                        r->path, r->what, (unsigned long long)n, (unsigned long long)r->pos,
                        (unsigned long long)r->size);
    return 0;
}
static int rd_bytes(rd *r, void *dst, uint64_t n) {
    int rc = rd_need(r, n);
    if (rc) return rc;
    memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return 0;
}
static int rd_u32(rd *r, uint32_t *v) { return rd_bytes(r, v, 4); }
static int rd_u64(rd *r, uint64_t *v) { return rd_bytes(r, v, 8); }
static int rd_str(rd *r, kiln_gguf_str *s) {
    uint64_t n;
    int rc = rd_u64(r, &n);
    if (rc) return rc;
    if (n > r->size - r->pos)
        return KILN_ERR(r->err, KILN_ERR_FORMAT,
                        "%s: %s: string length %llu at offset %llu runs past the end of the file "
                        "(size %llu)",
                        r->path, r->what, (unsigned long long)n, (unsigned long long)(r->pos - 8),
                        (unsigned long long)r->size);
    s->ptr = (const char *)(r->p + r->pos);
    s->len = n;
    r->pos += n;
    return 0;
}

int kiln_gguf_scalar_size(uint32_t t) {
    switch (t) {
    case KILN_GGUF_UINT8: case KILN_GGUF_INT8: case KILN_GGUF_BOOL: return 1;
    case KILN_GGUF_UINT16: case KILN_GGUF_INT16: return 2;
    case KILN_GGUF_UINT32: case KILN_GGUF_INT32: case KILN_GGUF_FLOAT32: return 4;
    case KILN_GGUF_UINT64: case KILN_GGUF_INT64: case KILN_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Decode a scalar of type t at p into the union. */
static void decode_scalar(uint32_t t, const unsigned char *p, gguf_kv *kv) {
    switch (t) {
    case KILN_GGUF_UINT8: case KILN_GGUF_BOOL: kv->num.u = p[0]; break;
    case KILN_GGUF_INT8: kv->num.i = (int8_t)p[0]; break;
    case KILN_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); kv->num.u = v; break; }
    case KILN_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); kv->num.i = v; break; }
    case KILN_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); kv->num.u = v; break; }
    case KILN_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); kv->num.i = v; break; }
    case KILN_GGUF_FLOAT32: { float v; memcpy(&v, p, 4); kv->num.f = v; break; }
    case KILN_GGUF_UINT64: { uint64_t v; memcpy(&v, p, 8); kv->num.u = v; break; }
    case KILN_GGUF_INT64: { int64_t v; memcpy(&v, p, 8); kv->num.i = v; break; }
    case KILN_GGUF_FLOAT64: { double v; memcpy(&v, p, 8); kv->num.f = v; break; }
    default: break;
    }
}

/* Walk an array body (after its elem type and count) of n elements of type et. When offs is
 * given (top-level string arrays), records each string's offset. */
static int skip_array(rd *r, uint32_t et, uint64_t n, uint64_t *offs, int depth) {
    uint64_t left = r->size - r->pos;
    int ss = kiln_gguf_scalar_size(et);
    if (ss) {
        if (n > left / (uint64_t)ss)
            return KILN_ERR(r->err, KILN_ERR_FORMAT,
                            "%s: %s: array of %llu elements of %d bytes runs past the end of the "
                            "file",
                            r->path, r->what, (unsigned long long)n, ss);
        r->pos += n * (uint64_t)ss;
        return 0;
    }
    if (et == KILN_GGUF_STRING) {
        if (n > left / 8)
            return KILN_ERR(r->err, KILN_ERR_FORMAT,
                            "%s: %s: absurd array count %llu (only %llu bytes left)", r->path,
                            r->what, (unsigned long long)n, (unsigned long long)left);
        for (uint64_t i = 0; i < n; i++) {
            if (offs) offs[i] = r->pos;
            kiln_gguf_str s;
            int rc = rd_str(r, &s);
            if (rc) return rc;
        }
        return 0;
    }
    if (et == KILN_GGUF_ARRAY) {
        if (depth >= GGUF_MAX_NESTING)
            return KILN_ERR(r->err, KILN_ERR_FORMAT, "%s: %s: arrays nested deeper than %d",
                            r->path, r->what, GGUF_MAX_NESTING);
        if (n > left / 12)
            return KILN_ERR(r->err, KILN_ERR_FORMAT,
                            "%s: %s: absurd array count %llu (only %llu bytes left)", r->path,
                            r->what, (unsigned long long)n, (unsigned long long)left);
        for (uint64_t i = 0; i < n; i++) {
            uint32_t et2;
            uint64_t n2;
            int rc = rd_u32(r, &et2);
            if (!rc) rc = rd_u64(r, &n2);
            if (!rc) rc = skip_array(r, et2, n2, NULL, depth + 1);
            if (rc) return rc;
        }
        return 0;
    }
    return KILN_ERR(r->err, KILN_ERR_FORMAT, "%s: %s: unknown array element type %u", r->path,
                    r->what, et);
}

static int parse_kv_value(rd *r, gguf_kv *kv);
static int parse_kv(rd *r, gguf_kv *kv) {
    int rc = rd_str(r, &kv->key);
    if (rc) return rc;
    uint32_t t;
    rc = rd_u32(r, &t);
    if (rc) return rc;
    kv->type = (kiln_gguf_type)t;
    uint64_t start = r->pos;
    kv->raw = r->p + start;
    rc = parse_kv_value(r, kv);
    kv->raw_len = r->pos - start;
    return rc;
}
static int parse_kv_value(rd *r, gguf_kv *kv) {
    uint32_t t = (uint32_t)kv->type;
    int rc;
    int ss = kiln_gguf_scalar_size(t);
    if (ss) {
        rc = rd_need(r, (uint64_t)ss);
        if (rc) return rc;
        decode_scalar(t, r->p + r->pos, kv);
        r->pos += (uint64_t)ss;
        return 0;
    }
    if (t == KILN_GGUF_STRING) return rd_str(r, &kv->str);
    if (t != KILN_GGUF_ARRAY)
        return KILN_ERR(r->err, KILN_ERR_FORMAT, "%s: metadata '%.*s': unknown value type %u",
                        r->path, (int)(kv->key.len > 200 ? 200 : kv->key.len), kv->key.ptr, t);
    uint32_t et;
    rc = rd_u32(r, &et);
    if (!rc) rc = rd_u64(r, &kv->arr_n);
    if (rc) return rc;
    kv->arr_type = (kiln_gguf_type)et;
    kv->arr_data = r->p + r->pos;
    if (et == KILN_GGUF_STRING && kv->arr_n <= (r->size - r->pos) / 8) {
        kv->str_offs = kiln_malloc((size_t)(kv->arr_n ? kv->arr_n : 1) * sizeof(uint64_t));
        if (!kv->str_offs) return KILN_ERR(r->err, KILN_ERR_OOM, "%s: out of memory", r->path);
    }
    return skip_array(r, et, kv->arr_n, kv->str_offs, 0);
}

static int str_cmp(kiln_gguf_str a, kiln_gguf_str b) {
    uint64_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, (size_t)n) : 0;
    if (c) return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

/* qsort has no context argument: sort (key, index) pairs instead. */
typedef struct named { kiln_gguf_str s; uint64_t i; } named;
static int named_cmp(const void *a, const void *b) {
    return str_cmp(((const named *)a)->s, ((const named *)b)->s);
}
static int sort_names(uint64_t n, kiln_gguf_str (*get)(const kiln_gguf *, uint64_t),
                      const kiln_gguf *g, uint64_t *out, int64_t *dup) {
    *dup = -1;
    if (n == 0) return 0;
    named *v = kiln_malloc((size_t)n * sizeof *v);
    if (!v) return -1;
    for (uint64_t i = 0; i < n; i++) v[i] = (named){get(g, i), i};
    qsort(v, (size_t)n, sizeof *v, named_cmp);
    for (uint64_t i = 0; i < n; i++) {
        out[i] = v[i].i;
        if (i && *dup < 0 && str_cmp(v[i].s, v[i - 1].s) == 0) *dup = (int64_t)v[i].i;
    }
    kiln_free(v);
    return 0;
}
static kiln_gguf_str kv_name(const kiln_gguf *g, uint64_t i) { return g->kv[i].key; }
static kiln_gguf_str t_name(const kiln_gguf *g, uint64_t i) { return g->t[i].name; }

static int parse_tensor(rd *r, kiln_gguf_tensor_info *ti, uint64_t *offset) {
    int rc = rd_str(r, &ti->name);
    if (rc) return rc;
    int nl = (int)(ti->name.len > 200 ? 200 : ti->name.len);
    rc = rd_u32(r, &ti->n_dims);
    if (rc) return rc;
    if (ti->n_dims < 1 || ti->n_dims > GGUF_MAX_DIMS)
        return KILN_ERR(r->err, KILN_ERR_FORMAT, "%s: tensor '%.*s': %u dimensions (1..%d allowed)",
                        r->path, nl, ti->name.ptr, ti->n_dims, GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++) ti->ne[d] = 1;
    for (uint32_t d = 0; d < ti->n_dims; d++) {
        rc = rd_u64(r, &ti->ne[d]);
        if (rc) return rc;
        if (ti->ne[d] == 0 || ti->ne[d] > ((uint64_t)1 << 40))
            return KILN_ERR(r->err, KILN_ERR_FORMAT, "%s: tensor '%.*s': bad dimension ne[%u]=%llu",
                            r->path, nl, ti->name.ptr, d, (unsigned long long)ti->ne[d]);
    }
    rc = rd_u32(r, &ti->ggml_type);
    if (!rc) rc = rd_u64(r, offset);
    return rc;
}

/* Size, dtype and data pointer of a tensor once the data section is known. */
static int place_tensor(kiln_gguf *g, kiln_gguf_tensor_info *ti, uint64_t off, kiln_error *err) {
    const char *path = g->map.path;
    int nl = (int)(ti->name.len > 200 ? 200 : ti->name.len);
    uint64_t size = g->map.size;
    ti->dtype = KILN_DT_COUNT;
    if (off % g->alignment)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: tensor '%.*s': data offset %llu is not a multiple of the alignment %llu",
                        path, nl, ti->name.ptr, (unsigned long long)off,
                        (unsigned long long)g->alignment);
    if (off > size - g->data_off)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: tensor '%.*s': data offset %llu is out of bounds (data section is %llu "
                        "bytes)",
                        path, nl, ti->name.ptr, (unsigned long long)off,
                        (unsigned long long)(size - g->data_off));
    ti->data = g->map.data + g->data_off + off;
    uint32_t t = ti->ggml_type;
    if (t >= N_GGML || !k_ggml[t].name) return 0; /* unknown: refused by the user if used */
    ti->dtype = k_ggml[t].dt;
    uint64_t blk = (uint64_t)k_ggml[t].blk;
    if (ti->ne[0] % blk)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: tensor '%.*s': row length %llu is not a multiple of the %s block "
                        "size %llu",
                        path, nl, ti->name.ptr, (unsigned long long)ti->ne[0], k_ggml[t].name,
                        (unsigned long long)blk);
    /* each ne <= 2^40, so check the running product stays below 2^62 */
    uint64_t nb = ti->ne[0] / blk * (uint64_t)k_ggml[t].bytes;
    for (int d = 1; d < GGUF_MAX_DIMS; d++) {
        if (nb > ((uint64_t)1 << 62) / ti->ne[d])
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor '%.*s': size overflows", path, nl,
                            ti->name.ptr);
        nb *= ti->ne[d];
    }
    if (nb > size - g->data_off - off)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: tensor '%.*s': data out of bounds: %llu bytes at data offset %llu, "
                        "but the data section has %llu bytes",
                        path, nl, ti->name.ptr, (unsigned long long)nb, (unsigned long long)off,
                        (unsigned long long)(size - g->data_off));
    ti->nbytes = (size_t)nb;
    return 0;
}

static int gguf_parse(kiln_gguf *g, kiln_error *err) {
    const char *path = g->map.path;
    rd r = {g->map.data, g->map.size, 0, path, err, "header"};
    uint32_t magic;
    if (g->map.size < 4 || (memcpy(&magic, r.p, 4), magic != 0x46554747u))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: not a GGUF file (bad magic)", path);
    r.pos = 4;
    int rc = rd_u32(&r, &g->version);
    if (rc) return rc;
    if (g->version == 1)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "%s: GGUF version 1 is not supported (convert it to v3)", path);
    if (g->version != 2 && g->version != 3)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: unknown GGUF version %u", path,
                        g->version);
    rc = rd_u64(&r, &g->n_tensors);
    if (!rc) rc = rd_u64(&r, &g->n_kv);
    if (rc) return rc;
    /* each kv takes >= 8+4+1 bytes, each tensor info >= 8+4+8+4+8 */
    if (g->n_kv > g->map.size / 13 || g->n_tensors > g->map.size / 32)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: absurd header counts (%llu tensors, %llu metadata entries) for a "
                        "file of %llu bytes",
                        path, (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv,
                        (unsigned long long)g->map.size);
    g->kv = kiln_calloc((size_t)g->n_kv + 1, sizeof *g->kv);
    g->kv_sorted = kiln_calloc((size_t)g->n_kv + 1, sizeof *g->kv_sorted);
    g->t = kiln_calloc((size_t)g->n_tensors + 1, sizeof *g->t);
    g->t_sorted = kiln_calloc((size_t)g->n_tensors + 1, sizeof *g->t_sorted);
    uint64_t *offs = kiln_calloc((size_t)g->n_tensors + 1, sizeof *offs);
    if (!g->kv || !g->kv_sorted || !g->t || !g->t_sorted || !offs) {
        kiln_free(offs);
        return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    }
    char what[160];
    for (uint64_t i = 0; i < g->n_kv && !rc; i++) {
        snprintf(what, sizeof what, "metadata entry %llu", (unsigned long long)i);
        r.what = what;
        rc = parse_kv(&r, &g->kv[i]);
    }
    g->alignment = 32;
    int64_t ai;
    for (uint64_t i = 0; i < g->n_tensors && !rc; i++) {
        snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)i);
        r.what = what;
        rc = parse_tensor(&r, &g->t[i], &offs[i]);
    }
    int64_t dup = -1;
    if (!rc) {
        /* linear lookup before sorting: the key table is not sorted yet */
        ai = -1;
        for (uint64_t i = 0; i < g->n_kv; i++)
            if (str_cmp(g->kv[i].key, (kiln_gguf_str){"general.alignment", 17}) == 0) ai = (int64_t)i;
        if (ai >= 0) {
            const gguf_kv *kv = &g->kv[ai];
            if (kv->type != KILN_GGUF_UINT32 || kv->num.u == 0 || (kv->num.u & (kv->num.u - 1)))
                rc = KILN_ERR(err, KILN_ERR_FORMAT,
                              "%s: general.alignment must be a power-of-two uint32", path);
            else
                g->alignment = kv->num.u;
        }
    }
    if (!rc) {
        g->data_off = (r.pos + g->alignment - 1) / g->alignment * g->alignment;
        if (g->n_tensors && g->data_off > g->map.size)
            rc = KILN_ERR(err, KILN_ERR_FORMAT,
                          "%s: truncated file: data section starts at %llu, past the end (%llu)",
                          path, (unsigned long long)g->data_off, (unsigned long long)g->map.size);
        if (g->data_off > g->map.size) g->data_off = g->map.size;
    }
    for (uint64_t i = 0; i < g->n_tensors && !rc; i++) rc = place_tensor(g, &g->t[i], offs[i], err);
    kiln_free(offs);
    if (rc) return rc;
    if (sort_names(g->n_kv, kv_name, g, g->kv_sorted, &dup))
        return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    if (dup >= 0)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: duplicate metadata key '%.*s'", path,
                        (int)(g->kv[dup].key.len > 200 ? 200 : g->kv[dup].key.len),
                        g->kv[dup].key.ptr);
    if (sort_names(g->n_tensors, t_name, g, g->t_sorted, &dup))
        return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    if (dup >= 0)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: duplicate tensor name '%.*s'", path,
                        (int)(g->t[dup].name.len > 200 ? 200 : g->t[dup].name.len),
                        g->t[dup].name.ptr);
    return 0;
}

int kiln_gguf_open(kiln_gguf **out, const char *path, kiln_error *err) {
    *out = NULL;
    kiln_gguf *g = kiln_calloc(1, sizeof *g);
    if (!g) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    int rc = kiln_mapfile_open(&g->map, path, err);
    if (!rc) rc = gguf_parse(g, err);
    if (rc) {
        kiln_gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

void kiln_gguf_close(kiln_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) kiln_free(g->kv[i].str_offs);
    kiln_free(g->kv);
    kiln_free(g->kv_sorted);
    kiln_free(g->t);
    kiln_free(g->t_sorted);
    kiln_mapfile_close(&g->map);
    kiln_free(g);
}

uint32_t kiln_gguf_version(const kiln_gguf *g) { return g->version; }
const char *kiln_gguf_path(const kiln_gguf *g) { return g->map.path; }

const kiln_mapfile *kiln_gguf_mapping(const kiln_gguf *g) { return &g->map; }
uint64_t kiln_gguf_n_kv(const kiln_gguf *g) { return g->n_kv; }
kiln_gguf_str kiln_gguf_kv_key(const kiln_gguf *g, int64_t i) { return g->kv[i].key; }
kiln_gguf_type kiln_gguf_kv_type(const kiln_gguf *g, int64_t i) { return g->kv[i].type; }
kiln_gguf_type kiln_gguf_kv_arr_type(const kiln_gguf *g, int64_t i, uint64_t *n) {
    if (n) *n = g->kv[i].arr_n;
    return g->kv[i].arr_type;
}

const void *kiln_gguf_kv_raw(const kiln_gguf *g, int64_t i, uint64_t *len) {
    *len = g->kv[i].raw_len;
    return g->kv[i].raw;
}

int64_t kiln_gguf_find_key(const kiln_gguf *g, const char *key) {
    kiln_gguf_str k = {key, strlen(key)};
    uint64_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int c = str_cmp(g->kv[g->kv_sorted[mid]].key, k);
        if (c == 0) return (int64_t)g->kv_sorted[mid];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return -1;
}

static int is_uint(kiln_gguf_type t) {
    return t == KILN_GGUF_UINT8 || t == KILN_GGUF_UINT16 || t == KILN_GGUF_UINT32 ||
           t == KILN_GGUF_UINT64 || t == KILN_GGUF_BOOL;
}
static int is_sint(kiln_gguf_type t) {
    return t == KILN_GGUF_INT8 || t == KILN_GGUF_INT16 || t == KILN_GGUF_INT32 || t == KILN_GGUF_INT64;
}
static int is_flt(kiln_gguf_type t) { return t == KILN_GGUF_FLOAT32 || t == KILN_GGUF_FLOAT64; }

static const gguf_kv *find(const kiln_gguf *g, const char *key) {
    int64_t i = kiln_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

int kiln_gguf_get_u64(const kiln_gguf *g, const char *key, uint64_t *v) {
    const gguf_kv *kv = find(g, key);
    if (!kv) return -1;
    if (is_uint(kv->type)) { *v = kv->num.u; return 0; }
    if (is_sint(kv->type) && kv->num.i >= 0) { *v = (uint64_t)kv->num.i; return 0; }
    return -1;
}
int kiln_gguf_get_i64(const kiln_gguf *g, const char *key, int64_t *v) {
    const gguf_kv *kv = find(g, key);
    if (!kv) return -1;
    if (is_sint(kv->type)) { *v = kv->num.i; return 0; }
    if (is_uint(kv->type) && kv->num.u <= (uint64_t)INT64_MAX) { *v = (int64_t)kv->num.u; return 0; }
    return -1;
}
int kiln_gguf_get_f64(const kiln_gguf *g, const char *key, double *v) {
    const gguf_kv *kv = find(g, key);
    if (!kv) return -1;
    if (is_flt(kv->type)) *v = kv->num.f;
    else if (is_sint(kv->type)) *v = (double)kv->num.i;
    else if (is_uint(kv->type)) *v = (double)kv->num.u;
    else return -1;
    return 0;
}
int kiln_gguf_get_bool(const kiln_gguf *g, const char *key, int *v) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != KILN_GGUF_BOOL) return -1;
    *v = kv->num.u != 0;
    return 0;
}
int kiln_gguf_get_str(const kiln_gguf *g, const char *key, kiln_gguf_str *v) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != KILN_GGUF_STRING) return -1;
    *v = kv->str;
    return 0;
}
int kiln_gguf_get_arr(const kiln_gguf *g, const char *key, kiln_gguf_type *et, uint64_t *n) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != KILN_GGUF_ARRAY) return -1;
    if (et) *et = kv->arr_type;
    if (n) *n = kv->arr_n;
    return 0;
}
int kiln_gguf_arr_str(const kiln_gguf *g, const char *key, uint64_t i, kiln_gguf_str *v) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != KILN_GGUF_ARRAY || kv->arr_type != KILN_GGUF_STRING || i >= kv->arr_n ||
        !kv->str_offs)
        return -1;
    uint64_t off = kv->str_offs[i], n; /* validated at parse time */
    memcpy(&n, g->map.data + off, 8);
    v->ptr = (const char *)g->map.data + off + 8;
    v->len = n;
    return 0;
}
static const gguf_kv *arr_elem(const kiln_gguf *g, const char *key, uint64_t i, gguf_kv *tmp) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != KILN_GGUF_ARRAY || i >= kv->arr_n) return NULL;
    int ss = kiln_gguf_scalar_size(kv->arr_type);
    if (!ss) return NULL;
    tmp->type = kv->arr_type;
    decode_scalar(kv->arr_type, kv->arr_data + i * (uint64_t)ss, tmp);
    return tmp;
}
int kiln_gguf_arr_f64(const kiln_gguf *g, const char *key, uint64_t i, double *v) {
    gguf_kv tmp;
    const gguf_kv *e = arr_elem(g, key, i, &tmp);
    if (!e) return -1;
    if (is_flt(e->type)) *v = e->num.f;
    else if (is_sint(e->type)) *v = (double)e->num.i;
    else *v = (double)e->num.u;
    return 0;
}
int kiln_gguf_arr_i64(const kiln_gguf *g, const char *key, uint64_t i, int64_t *v) {
    gguf_kv tmp;
    const gguf_kv *e = arr_elem(g, key, i, &tmp);
    if (!e || is_flt(e->type)) return -1;
    if (is_sint(e->type)) *v = e->num.i;
    else if (e->num.u <= (uint64_t)INT64_MAX) *v = (int64_t)e->num.u;
    else return -1;
    return 0;
}

uint64_t kiln_gguf_n_tensors(const kiln_gguf *g) { return g->n_tensors; }
const kiln_gguf_tensor_info *kiln_gguf_tensor(const kiln_gguf *g, uint64_t i) {
    return i < g->n_tensors ? &g->t[i] : NULL;
}
const kiln_gguf_tensor_info *kiln_gguf_find_tensor(const kiln_gguf *g, const char *name) {
    kiln_gguf_str k = {name, strlen(name)};
    uint64_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int c = str_cmp(g->t[g->t_sorted[mid]].name, k);
        if (c == 0) return &g->t[g->t_sorted[mid]];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}
