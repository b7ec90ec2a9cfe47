/* kv_cache.h: the paged KV block manager with prefix caching.
 *
 * Blocks are physical ids into the backend's pool; block 0 is the null block (never handed
 * out: padded rows write there). Each block has a reference count. A block that fills up with
 * a sequence's tokens can be registered in the prefix cache under a chained hash:
 *     h_i = SHA-256(h_{i-1} || token ids of block i)      (h_{-1} = 32 zero bytes)
 * so equal hashes mean equal prefixes. On a lookup hit the stored tokens and parent hash are
 * compared too, so even a forced collision (kiln_kv_truncate_hash) cannot mix sequences.
 *
 * Free blocks wait in an LRU queue (least recently freed first out). A free block that still
 * holds a cached prefix stays findable until it is handed out again, which evicts it.
 */
#ifndef KILN_ENGINE_KV_CACHE_H
#define KILN_ENGINE_KV_CACHE_H
#include <stdint.h>
#include "kiln.h"

typedef struct kiln_block_hash { unsigned char b[32]; } kiln_block_hash;

typedef struct kiln_kv_cache kiln_kv_cache;

int kiln_kv_cache_create(kiln_kv_cache **out, int n_blocks, int block_size, int enable_prefix,
                         kiln_error *err);
void kiln_kv_cache_destroy(kiln_kv_cache *c);

int kiln_kv_num_free(const kiln_kv_cache *c);   /* blocks that can be handed out */
int kiln_kv_num_usable(const kiln_kv_cache *c); /* all but the null block */
int kiln_kv_num_cached_free(const kiln_kv_cache *c); /* free blocks still holding a prefix */

/* Take n blocks (refcount 1 each) into out[]; KILN_ERR_OOM (nothing taken) if fewer are free. */
int kiln_kv_alloc(kiln_kv_cache *c, int n, int32_t *out, kiln_error *err);
/* Drop one reference of each block (in reverse order, so a sequence's tail is evicted first). */
void kiln_kv_release(kiln_kv_cache *c, const int32_t *blocks, int n);

/* Chained hash of one full block of tokens (parent NULL for the first block). */
void kiln_kv_hash_block(const kiln_kv_cache *c, const kiln_block_hash *parent, const int32_t *tokens,
                        kiln_block_hash *out);
/* Longest run of cached full blocks for tokens[0 .. n_blocks*block_size); takes a reference on
 * each hit block and writes the ids to out. Returns the number of hit blocks. */
int kiln_kv_lookup(kiln_kv_cache *c, const int32_t *tokens, int n_blocks, int32_t *out,
                   kiln_block_hash *hashes);
/* Register a full block of a sequence (its tokens and the chained hash). */
void kiln_kv_register(kiln_kv_cache *c, int32_t block, const kiln_block_hash *parent,
                      const kiln_block_hash *h, const int32_t *tokens);

/* Fault injection (kiln_engine_faults.truncate_hash_bits, tests): keep only the first `bits`
 * bits of every hash (0 = off) to force collisions; lookups still compare the tokens. */
void kiln_kv_truncate_hash(kiln_kv_cache *c, int bits);
#endif
