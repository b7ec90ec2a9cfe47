/* step_harness.h: hand-built ragged steps for backend-level GPU tests. A scenario is a set of
 * sequences with random tokens and random distinct KV blocks (holes between them); each step
 * gives some sequences a chunk (prefill piece or one decode token), all rows asking logits. */
#ifndef KILN_STEP_HARNESS_H
#define KILN_STEP_HARNESS_H
#include "backend/backend.h"
#include "test.h"
#include "util/alloc.h"

#define SH_MAX_SEQS 8
typedef struct sh_seq {
    int32_t tokens[512];
    int n_done;         /* tokens already computed */
    int32_t blocks[64]; /* physical block ids */
} sh_seq;

typedef struct sh_ctx {
    kiln_step s;
    kiln_backend_config bc;
    sh_seq seq[SH_MAX_SEQS];
    int n_seq;
} sh_ctx;

static inline void sh_init(sh_ctx *h, int n_seq, int block_size, int n_blocks, unsigned long long *rs, int vocab) {
    memset(h, 0, sizeof *h);
    h->n_seq = n_seq;
    kiln_backend_config *bc = &h->bc;
    bc->max_tokens = 128;
    bc->max_seqs = SH_MAX_SEQS;
    bc->max_blocks_per_seq = 64;
    bc->max_model_len = 512;
    bc->n_threads = 0;
    kiln_engine_options eo; /* the backend's defaults (-1) for every cuda switch */
    kiln_engine_options_default(&eo);
    bc->cuda = eo.cuda;
    kiln_step *s = &h->s;
    s->max_tokens = bc->max_tokens;
    s->max_seqs = bc->max_seqs;
    s->max_blocks_per_seq = bc->max_blocks_per_seq;
    s->token_ids = kiln_calloc((size_t)s->max_tokens, 4);
    s->positions = kiln_calloc((size_t)s->max_tokens, 4);
    s->slot_mapping = kiln_calloc((size_t)s->max_tokens, 8);
    s->seq_q_start = kiln_calloc((size_t)s->max_seqs + 1, 4);
    s->seq_ctx_len = kiln_calloc((size_t)s->max_seqs, 4);
    s->block_table = kiln_calloc((size_t)s->max_seqs * s->max_blocks_per_seq, 4);
    s->seq_logits = kiln_calloc((size_t)s->max_seqs, 4);
    s->sampling = kiln_calloc((size_t)s->max_seqs, sizeof(kiln_step_sampling));
    /* distinct random blocks with holes: ids drawn from [1, n_blocks) without reuse */
    int *used = kiln_calloc((size_t)n_blocks, sizeof(int));
    for (int i = 0; i < n_seq; i++) {
        for (int t = 0; t < 512; t++) h->seq[i].tokens[t] = (int32_t)(kt_rand_u64(rs) % (unsigned)vocab);
        for (int b = 0; b < 8; b++) {
            int id;
            do id = 1 + (int)(kt_rand_u64(rs) % (uint64_t)(n_blocks - 1)); while (used[id]);
            used[id] = 1;
            h->seq[i].blocks[b] = id;
        }
    }
    kiln_free(used);
}

static inline void sh_free(sh_ctx *h) {
    kiln_step *s = &h->s;
    kiln_free(s->token_ids); kiln_free(s->positions); kiln_free(s->slot_mapping); kiln_free(s->seq_q_start);
    kiln_free(s->seq_ctx_len); kiln_free(s->block_table); kiln_free(s->seq_logits); kiln_free(s->sampling);
}

/* Build a step: chunk[i] new tokens for sequence i (0 = not in this step). Does not advance. */
static inline void sh_build(sh_ctx *h, const int *chunk, int block_size) {
    kiln_step *s = &h->s;
    int t = 0, k = 0;
    s->seq_q_start[0] = 0;
    for (int i = 0; i < h->n_seq; i++) {
        if (!chunk[i]) continue;
        sh_seq *q = &h->seq[i];
        for (int r = 0; r < chunk[i]; r++, t++) {
            int p = q->n_done + r;
            s->token_ids[t] = q->tokens[p];
            s->positions[t] = p;
            s->slot_mapping[t] = (int64_t)q->blocks[p / block_size] * block_size + p % block_size;
        }
        s->seq_ctx_len[k] = q->n_done + chunk[i];
        memcpy(s->block_table + (size_t)k * s->max_blocks_per_seq, q->blocks, sizeof q->blocks);
        s->seq_logits[k] = 1;
        k++;
        s->seq_q_start[k] = t;
    }
    s->n_tokens = t;
    s->n_seqs = k;
}
static inline void sh_advance(sh_ctx *h, const int *chunk) {
    for (int i = 0; i < h->n_seq; i++) h->seq[i].n_done += chunk[i];
}
#endif
