/* kv_cache.c: block manager + prefix cache (see kv_cache.h). */
#include "engine/kv_cache.h"
/* SHA256_* (no allocation per hash, unlike EVP_MD_CTX_new): deprecated in OpenSSL 3 but kept. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
#include <string.h>
#include "util/alloc.h"
#include "util/error.h"

typedef struct block_meta {
    int32_t ref;
    int32_t prev, next;     /* LRU free list links (-1 = none) */
    uint8_t in_free;        /* on the free list */
    uint8_t cached;         /* registered in the hash table */
    kiln_block_hash hash;
    kiln_block_hash parent;
    int32_t tnext;          /* hash bucket chain */
} block_meta;

struct kiln_kv_cache {
    int n_blocks, block_size, enable_prefix;
    block_meta *meta;       /* [n_blocks] */
    int32_t *tokens;        /* [n_blocks][block_size] tokens of cached blocks */
    int32_t head, tail;     /* free list: head = next to hand out */
    int n_free, n_cached_free;
    int32_t *buckets;       /* [n_buckets] hash table heads */
    uint32_t n_buckets;
    int trunc_bits;
};

static void list_push_tail(kiln_kv_cache *c, int32_t b) {
    block_meta *m = &c->meta[b];
    m->prev = c->tail;
    m->next = -1;
    if (c->tail >= 0) c->meta[c->tail].next = b; else c->head = b;
    c->tail = b;
    m->in_free = 1;
    c->n_free++;
    if (m->cached) c->n_cached_free++;
}
static void list_remove(kiln_kv_cache *c, int32_t b) {
    block_meta *m = &c->meta[b];
    if (m->prev >= 0) c->meta[m->prev].next = m->next; else c->head = m->next;
    if (m->next >= 0) c->meta[m->next].prev = m->prev; else c->tail = m->prev;
    m->prev = m->next = -1;
    m->in_free = 0;
    c->n_free--;
    if (m->cached) c->n_cached_free--;
}

static uint32_t bucket_of(const kiln_kv_cache *c, const kiln_block_hash *h) {
    uint32_t v;
    memcpy(&v, h->b, 4);
    return v % c->n_buckets;
}

static void table_remove(kiln_kv_cache *c, int32_t b) {
    block_meta *m = &c->meta[b];
    if (!m->cached) return;
    int32_t *pp = &c->buckets[bucket_of(c, &m->hash)];
    while (*pp >= 0 && *pp != b) pp = &c->meta[*pp].tnext;
    if (*pp == b) *pp = m->tnext;
    m->tnext = -1;
    if (m->in_free) c->n_cached_free--;
    m->cached = 0;
}

int kiln_kv_cache_create(kiln_kv_cache **out, int n_blocks, int block_size, int enable_prefix,
                         kiln_error *err) {
    *out = NULL;
    if (n_blocks < 2 || block_size < 1)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "kv cache: need >= 2 blocks (got %d) of >= 1 slot", n_blocks);
    kiln_kv_cache *c = kiln_calloc(1, sizeof *c);
    if (!c) return KILN_ERR(err, KILN_ERR_OOM, "kv cache: out of memory");
    c->n_blocks = n_blocks;
    c->block_size = block_size;
    c->enable_prefix = enable_prefix;
    c->n_buckets = (uint32_t)n_blocks * 2 + 1;
    c->meta = kiln_calloc((size_t)n_blocks, sizeof *c->meta);
    c->tokens = kiln_calloc((size_t)n_blocks * block_size, sizeof(int32_t));
    c->buckets = kiln_malloc(c->n_buckets * sizeof(int32_t));
    if (!c->meta || !c->tokens || !c->buckets) {
        kiln_kv_cache_destroy(c);
        return KILN_ERR(err, KILN_ERR_OOM, "kv cache: out of memory for %d blocks", n_blocks);
    }
    for (uint32_t i = 0; i < c->n_buckets; i++) c->buckets[i] = -1;
    c->head = c->tail = -1;
    c->meta[0].ref = 1; /* the null block is never handed out */
    for (int b = 1; b < n_blocks; b++) {
        c->meta[b].tnext = -1;
        list_push_tail(c, b);
    }
    *out = c;
    return KILN_OK;
}

void kiln_kv_cache_destroy(kiln_kv_cache *c) {
    if (!c) return;
    kiln_free(c->meta);
    kiln_free(c->tokens);
    kiln_free(c->buckets);
    kiln_free(c);
}

int kiln_kv_num_free(const kiln_kv_cache *c) { return c->n_free; }
int kiln_kv_num_usable(const kiln_kv_cache *c) { return c->n_blocks - 1; }
int kiln_kv_num_cached_free(const kiln_kv_cache *c) { return c->n_cached_free; }

int kiln_kv_alloc(kiln_kv_cache *c, int n, int32_t *out, kiln_error *err) {
    if (n > c->n_free)
        return KILN_ERR(err, KILN_ERR_OOM, "kv cache: %d blocks wanted, %d free", n, c->n_free);
    for (int i = 0; i < n; i++) {
        int32_t b = c->head;
        list_remove(c, b);
        table_remove(c, b); /* evict the prefix it held */
        c->meta[b].ref = 1;
        out[i] = b;
    }
    return KILN_OK;
}

void kiln_kv_release(kiln_kv_cache *c, const int32_t *blocks, int n) {
    for (int i = n - 1; i >= 0; i--) {
        int32_t b = blocks[i];
        if (b <= 0 || b >= c->n_blocks) continue;
        if (--c->meta[b].ref == 0) list_push_tail(c, b);
    }
}

static void apply_trunc(const kiln_kv_cache *c, kiln_block_hash *h) {
    if (c->trunc_bits <= 0) return;
    for (int i = 0; i < 32; i++) {
        int keep = c->trunc_bits - 8 * i;
        if (keep >= 8) continue;
        h->b[i] = keep <= 0 ? 0 : (unsigned char)(h->b[i] & (0xff << (8 - keep)));
    }
}

void kiln_kv_hash_block(const kiln_kv_cache *c, const kiln_block_hash *parent, const int32_t *tokens,
                        kiln_block_hash *out) {
    static const kiln_block_hash zero;
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, (parent ? parent : &zero)->b, 32);
    SHA256_Update(&ctx, tokens, (size_t)c->block_size * sizeof(int32_t));
    SHA256_Final(out->b, &ctx);
    apply_trunc(c, out);
}

static int32_t table_find(const kiln_kv_cache *c, const kiln_block_hash *h,
                          const kiln_block_hash *parent, const int32_t *tokens) {
    for (int32_t b = c->buckets[bucket_of(c, h)]; b >= 0; b = c->meta[b].tnext) {
        const block_meta *m = &c->meta[b];
        if (memcmp(m->hash.b, h->b, 32) != 0) continue;
        /* verify: equal hashes must also mean equal tokens and parent */
        if (memcmp(m->parent.b, parent->b, 32) != 0) continue;
        if (memcmp(c->tokens + (size_t)b * c->block_size, tokens, (size_t)c->block_size * 4) != 0) continue;
        return b;
    }
    return -1;
}

int kiln_kv_lookup(kiln_kv_cache *c, const int32_t *tokens, int n_blocks, int32_t *out,
                   kiln_block_hash *hashes) {
    if (!c->enable_prefix) return 0;
    kiln_block_hash parent = {{0}};
    int hits = 0;
    for (int i = 0; i < n_blocks; i++) {
        kiln_block_hash h;
        const int32_t *tk = tokens + (size_t)i * c->block_size;
        kiln_kv_hash_block(c, &parent, tk, &h);
        int32_t b = table_find(c, &h, &parent, tk);
        if (b < 0) break;
        if (c->meta[b].in_free) list_remove(c, b);
        c->meta[b].ref++;
        out[hits++] = b;
        if (hashes) hashes[i] = h;
        parent = h;
    }
    return hits;
}

void kiln_kv_register(kiln_kv_cache *c, int32_t block, const kiln_block_hash *parent,
                      const kiln_block_hash *h, const int32_t *tokens) {
    if (!c->enable_prefix || block <= 0 || block >= c->n_blocks) return;
    block_meta *m = &c->meta[block];
    if (m->cached) return;
    kiln_block_hash hh = *h;
    static const kiln_block_hash zero;
    if (!parent) parent = &zero;
    /* an identical block already cached: keep the first (ours still serves its sequence) */
    if (table_find(c, &hh, parent, tokens) >= 0) return;
    m->hash = hh;
    m->parent = *parent;
    memcpy(c->tokens + (size_t)block * c->block_size, tokens, (size_t)c->block_size * 4);
    uint32_t k = bucket_of(c, &hh);
    m->tnext = c->buckets[k];
    c->buckets[k] = block;
    m->cached = 1;
    if (m->in_free) c->n_cached_free++;
}

void kiln_kv_truncate_hash(kiln_kv_cache *c, int bits) { c->trunc_bits = bits > 0 ? bits : 0; }
