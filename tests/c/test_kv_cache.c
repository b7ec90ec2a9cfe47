/* kiln-layer: engine (links only this layer and those below it) */
/* test_kv_cache.c: the block manager and prefix cache on their own (engine/kv_cache.h):
 * null block never handed out, refcounts, out-of-blocks refusal, chained-hash lookups, LRU
 * eviction of unreferenced cached blocks (least recently freed first), collision safety. */
#include "engine/kv_cache.h"
#include "test.h"

/* register n full blocks of tokens (block_size 4) for a sequence holding blocks[] */
static void reg_seq(kiln_kv_cache *c, const int32_t *blocks, const int32_t *tokens, int n) {
    kiln_block_hash h[16];
    for (int b = 0; b < n; b++) {
        kiln_kv_hash_block(c, b ? &h[b - 1] : NULL, tokens + 4 * b, &h[b]);
        kiln_kv_register(c, blocks[b], b ? &h[b - 1] : NULL, &h[b], tokens + 4 * b);
    }
}

int main(void) {
    kiln_kv_cache *c = NULL;
    kiln_error err = {0};
    KT_CHECK(kiln_kv_cache_create(&c, 9, 4, 1, &err) == 0, "create: %s", err.msg); /* 8 usable + null */
    KT_CHECK(kiln_kv_num_usable(c) == 8 && kiln_kv_num_free(c) == 8, "usable %d free %d", kiln_kv_num_usable(c),
             kiln_kv_num_free(c));
    int32_t a[8], b2[8];
    KT_CHECK(kiln_kv_alloc(c, 9, a, &err) == KILN_ERR_OOM && kiln_kv_num_free(c) == 8, "over-allocation refused, nothing taken");
    KT_CHECK(kiln_kv_alloc(c, 3, a, &err) == 0, "alloc 3");
    for (int i = 0; i < 3; i++) KT_CHECK(a[i] >= 1 && a[i] < 9, "block id %d outside [1, 9) (null block handed out?)", a[i]);
    int32_t ta[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    reg_seq(c, a, ta, 3);
    /* a second sequence sharing the first two blocks: hits take references */
    int32_t hit[3];
    int nh = kiln_kv_lookup(c, ta, 3, hit, NULL);
    KT_CHECK(nh == 3 && hit[0] == a[0] && hit[2] == a[2], "lookup of a registered prefix: %d hits", nh);
    kiln_kv_release(c, hit, nh);
    /* a different first block: no hit, even though later blocks are equal */
    int32_t tb[12] = {100, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    KT_CHECK(kiln_kv_lookup(c, tb, 3, hit, NULL) == 0, "chained hash: a different first block must miss");
    /* free the sequence: its blocks stay cached (findable) while unreferenced */
    kiln_kv_release(c, a, 3);
    KT_CHECK(kiln_kv_num_free(c) == 8 && kiln_kv_num_cached_free(c) == 3, "free %d cached %d", kiln_kv_num_free(c),
             kiln_kv_num_cached_free(c));
    /* a second prefix, freed later (more recently) */
    KT_CHECK(kiln_kv_alloc(c, 2, b2, &err) == 0, "alloc 2");
    int32_t tc[8] = {50, 51, 52, 53, 54, 55, 56, 57};
    reg_seq(c, b2, tc, 2);
    kiln_kv_release(c, b2, 2);
    KT_CHECK(kiln_kv_num_cached_free(c) == 5, "cached free %d", kiln_kv_num_cached_free(c));
    /* take 6 blocks: the 3 never-cached ones go first, then the LRU ones (sequence a's, freed
     * first, tail block first) */
    int32_t big[8];
    KT_CHECK(kiln_kv_alloc(c, 6, big, &err) == 0, "alloc 6");
    KT_CHECK(kiln_kv_lookup(c, tc, 2, hit, NULL) == 2, "the most recently freed prefix must survive");
    kiln_kv_release(c, hit, 2);
    nh = kiln_kv_lookup(c, ta, 3, hit, NULL);
    KT_CHECK(nh < 3, "the least recently freed prefix must have lost blocks (%d hits)", nh);
    kiln_kv_release(c, hit, nh);
    kiln_kv_release(c, big, 6);
    /* forced collisions: 1 hash bit; lookups verify tokens and parent, so nothing mixes */
    kiln_kv_truncate_hash(c, 1);
    int32_t d[2], td[8] = {7, 7, 7, 7, 8, 8, 8, 8}, te[8] = {9, 9, 9, 9, 8, 8, 8, 8};
    KT_CHECK(kiln_kv_alloc(c, 2, d, &err) == 0, "alloc");
    reg_seq(c, d, td, 2);
    KT_CHECK(kiln_kv_lookup(c, te, 2, hit, NULL) == 0, "a colliding hash with other tokens must miss");
    nh = kiln_kv_lookup(c, td, 2, hit, NULL);
    KT_CHECK(nh == 2, "the real prefix still hits under collisions (%d)", nh);
    kiln_kv_release(c, hit, nh);
    kiln_kv_release(c, d, 2);
    kiln_kv_cache_destroy(c);
    return kt_done();
}
