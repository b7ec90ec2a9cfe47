/* qpack.c: the packed-weight table (qpack.h): open addressing on the data pointer, grown at
 * half load; entries own their packed buffers. */
#include "backend/cpu/qpack.h"
#include <stdint.h>
#include <string.h>
#include "util/alloc.h"

typedef struct entry {
    const void *key; /* the tensor's data, NULL: empty slot */
    kiln_cpu_pack pack;
} entry;

struct kiln_cpu_packs {
    kiln_isa isa;
    entry *slots;
    int cap, n; /* cap: a power of two */
    size_t bytes;
};

static size_t slot_of(const void *key, int cap) {
    uint64_t h = (uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (size_t)(cap - 1);
}

int kiln_cpu_packs_create(kiln_cpu_packs **out, kiln_isa isa, kiln_error *err) {
    kiln_cpu_packs *p = kiln_calloc(1, sizeof *p);
    if (p) p->slots = kiln_calloc(64, sizeof *p->slots);
    if (!p || !p->slots) {
        kiln_free(p);
        return KILN_ERR(err, KILN_ERR_OOM, "cpu: out of memory for the packed-weight table");
    }
    p->cap = 64;
    p->isa = isa;
    *out = p;
    return KILN_OK;
}

void kiln_cpu_packs_destroy(kiln_cpu_packs *p) {
    if (!p) return;
    for (int i = 0; i < p->cap; i++)
        if (p->slots[i].key) kiln_free_aligned((void *)p->slots[i].pack.wp);
    kiln_free(p->slots);
    kiln_free(p);
}

const kiln_cpu_pack *kiln_cpu_packs_find(const kiln_cpu_packs *p, const kiln_tensor *w) {
    if (!p || !w->data) return NULL;
    for (size_t i = slot_of(w->data, p->cap);; i = (i + 1) & (size_t)(p->cap - 1)) {
        if (!p->slots[i].key) return NULL;
        if (p->slots[i].key == w->data) return &p->slots[i].pack;
    }
}

static int grow(kiln_cpu_packs *p, kiln_error *err) {
    int cap = p->cap * 2;
    entry *s = kiln_calloc((size_t)cap, sizeof *s);
    if (!s) return KILN_ERR(err, KILN_ERR_OOM, "cpu: out of memory for the packed-weight table");
    for (int i = 0; i < p->cap; i++) {
        if (!p->slots[i].key) continue;
        size_t j = slot_of(p->slots[i].key, cap);
        while (s[j].key) j = (j + 1) & (size_t)(cap - 1);
        s[j] = p->slots[i];
    }
    kiln_free(p->slots);
    p->slots = s;
    p->cap = cap;
    return KILN_OK;
}

typedef struct pack_job {
    kiln_qgemm_pack_fn pack;
    const uint8_t *w;
    size_t row_bytes, group_bytes;
    int n_out, n_in;
    uint8_t *out;
} pack_job;

static void pack_groups(void *ctx, int ith, int nth) {
    const pack_job *j = ctx;
    int ng = (j->n_out + 15) / 16, g0 = (int)((int64_t)ng * ith / nth), g1 = (int)((int64_t)ng * (ith + 1) / nth);
    for (int g = g0; g < g1; g++) {
        int nc = j->n_out - 16 * g < 16 ? j->n_out - 16 * g : 16;
        j->pack(j->w + (size_t)g * 16 * j->row_bytes, j->row_bytes, nc, j->n_in, j->out + (size_t)g * j->group_bytes);
    }
}

int kiln_cpu_packs_add(kiln_cpu_packs *p, const kiln_tensor *w, kiln_pool *pool, int *added, kiln_error *err) {
    *added = 0;
    if (!w->data || w->ndim != 2 || kiln_cpu_packs_find(p, w)) return KILN_OK;
    kiln_qgemm_pack_fn pack;
    kiln_qgemm_packed_fn fn;
    int sums16;
    int kq = w->dtype == KILN_DT_Q4_K || w->dtype == KILN_DT_Q5_K || w->dtype == KILN_DT_Q6_K;
    if (!kiln_cpu_qgemm_lookup_packed(w->dtype, p->isa, &pack, &fn, &sums16) || w->shape[1] % (kq ? 256 : 32) != 0) return KILN_OK;
    int n_out = (int)w->shape[0], n_in = (int)w->shape[1];
    size_t rb = kiln_dtype_row_bytes(w->dtype, n_in), gb = kiln_qgemm_packed_bytes(w->dtype, n_in);
    if (rb * (size_t)n_out > w->nbytes)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cpu: %s holds %zu bytes, [%d][%d] %s needs %zu", w->name, w->nbytes,
                        n_out, n_in, kiln_dtype_name(w->dtype), rb * (size_t)n_out);
    size_t bytes = gb * (size_t)((n_out + 15) / 16);
    if (2 * (p->n + 1) > p->cap) {
        int rc = grow(p, err);
        if (rc) return rc;
    }
    uint8_t *out = kiln_malloc_aligned(bytes);
    if (!out) return KILN_ERR(err, KILN_ERR_OOM, "cpu: out of memory packing %s (%zu bytes)", w->name, bytes);
    pack_job j = {pack, w->data, rb, gb, n_out, n_in, out};
    if (pool && kiln_pool_size(pool) > 1) kiln_pool_run(pool, pack_groups, &j);
    else pack_groups(&j, 0, 1);
    size_t i = slot_of(w->data, p->cap);
    while (p->slots[i].key) i = (i + 1) & (size_t)(p->cap - 1);
    p->slots[i].key = w->data;
    p->slots[i].pack = (kiln_cpu_pack){out, gb, fn, sums16};
    p->n++;
    p->bytes += bytes;
    *added = 1;
    return KILN_OK;
}

void kiln_cpu_packs_stats(const kiln_cpu_packs *p, int *n, size_t *bytes) {
    *n = p ? p->n : 0;
    *bytes = p ? p->bytes : 0;
}
