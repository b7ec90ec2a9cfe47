/* kiln-layer: contract (links only this layer and those below it) */
/* test_step.c: the step contract (step/step.h): kiln_step_check accepts a valid ragged step and
 * refuses each kind of bad descriptor (every rule can fail), several logits rows per sequence
 * only where the limits allow them and never with device sampling; grammar mask rows; the KV element types
 * (names, sizes, the fp8 alias) and the scale counts of a quantized pool; the quantization
 * descriptor's names and the FP8 storage types of format/. */
#include <string.h>
#include "format/dtype.h"
#include "format/tensor.h"
#include "step/step.h"
#include "test.h"

enum { MAXT = 16, MAXS = 4, MAXB = 4, BS = 4, NB = 12, V = 50 };

typedef struct {
    kiln_step s;
    int32_t tok[MAXT], pos[MAXT], qs[MAXS + 1], ctx[MAXS], bt[MAXS * MAXB], lg[MAXS], prev[MAXT];
    int64_t slot[MAXT];
    kiln_step_sampling smp[MAXS];
} rig;

/* two sequences: a 5-row prefill chunk (positions 0..4, blocks 3, 7) and a decode row at
 * position 9 (blocks 1, 2, 5) */
static void rig_init(rig *r) {
    memset(r, 0, sizeof *r);
    kiln_step *s = &r->s;
    s->max_tokens = MAXT;
    s->max_seqs = MAXS;
    s->max_blocks_per_seq = MAXB;
    s->token_ids = r->tok;
    s->positions = r->pos;
    s->slot_mapping = r->slot;
    s->seq_q_start = r->qs;
    s->seq_ctx_len = r->ctx;
    s->block_table = r->bt;
    s->seq_logits = r->lg;
    s->sampling = r->smp;
    s->prev_row = r->prev;
    s->n_tokens = 6;
    s->n_seqs = 2;
    r->qs[0] = 0, r->qs[1] = 5, r->qs[2] = 6;
    r->ctx[0] = 5, r->ctx[1] = 10;
    r->bt[0] = 3, r->bt[1] = 7;
    r->bt[MAXB + 0] = 1, r->bt[MAXB + 1] = 2, r->bt[MAXB + 2] = 5;
    for (int t = 0; t < 5; t++) {
        r->tok[t] = 10 + t;
        r->pos[t] = t;
        r->slot[t] = (int64_t)r->bt[t / BS] * BS + t % BS;
    }
    r->tok[5] = 42;
    r->pos[5] = 9;
    r->slot[5] = 5 * BS + 1;
    r->lg[0] = r->lg[1] = 1;
    for (int t = 0; t < MAXT; t++) r->prev[t] = -1;
    for (int i = 0; i < MAXS; i++) r->smp[i].pen_slot = -1;
}

static kiln_step_limits limits(void) {
    kiln_step_limits l = {.max_tokens = MAXT, .max_seqs = MAXS, .max_blocks_per_seq = MAXB, .max_model_len = MAXB * BS,
                          .vocab = V};
    l.kv = (kiln_kv_layout){.n_layers = 2, .n_kv_heads = 2, .head_dim = 8, .block_size = BS, .n_blocks = NB,
                            .dtype = KILN_KV_F32, .elem_bytes = 4};
    return l;
}

static int check(const rig *r, const kiln_step_limits *l) {
    kiln_error err = {0};
    int rc = kiln_step_check(l, &r->s, &err);
    if (rc && getenv("KILN_TEST_VERBOSE")) fprintf(stderr, "  refused: %s\n", err.msg);
    return rc;
}

int main(void) {
    rig r;
    kiln_step_limits l = limits();
    rig_init(&r);
    KT_CHECK(check(&r, &l) == KILN_OK, "a valid ragged step is accepted");

    /* each rule can fail */
#define REFUSED(what, edit)                                                                        \
    do {                                                                                           \
        rig_init(&r);                                                                              \
        edit;                                                                                      \
        KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "refused: %s", what);                            \
    } while (0)
    REFUSED("more rows than capacity", r.s.n_tokens = MAXT + 1);
    REFUSED("query starts not covering the rows", r.qs[2] = 5);
    REFUSED("a negative row count", (r.qs[1] = 7, r.qs[2] = 6));
    REFUSED("context beyond max_model_len", r.ctx[1] = MAXB * BS + 1);
    REFUSED("the null block in a block table", r.bt[1] = 0);
    REFUSED("a block id past the pool", r.bt[MAXB + 2] = NB);
    REFUSED("a position outside the context", r.pos[5] = 10);
    REFUSED("a token outside the vocabulary", r.tok[2] = V);
    REFUSED("a KV slot outside the pool", r.slot[0] = (int64_t)NB * BS);
    REFUSED("prev rows without device sampling", (r.s.n_prev = 1, r.prev[5] = 0));
    REFUSED("a negative logits count", r.lg[0] = -1);
    REFUSED("more logits rows than the sequence has", (l.max_logits_per_seq = 8, r.lg[1] = 2));
    l.max_logits_per_seq = 0;

    /* several logits rows per sequence: only where the limits allow it, with device sampling only
     * where the sampler draws every row (limits.sample_rows) and no penalty table is used */
    rig_init(&r);
    r.lg[0] = 3;
    KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "3 logits rows refused when the backend takes 1");
    l.max_logits_per_seq = 4;
    KT_CHECK(check(&r, &l) == KILN_OK, "3 logits rows of a 5-row chunk accepted when the backend takes 4");
    r.lg[0] = 5;
    KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "5 logits rows refused above the limit of 4");
    r.lg[0] = 3;
    r.s.device_sample = 1;
    KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "several logits rows refused with device sampling");
    l.sample_rows = 1; /* a sampler that draws every row (cuda, issue 20) */
    KT_CHECK(check(&r, &l) == KILN_OK, "several logits rows with device sampling where the sampler draws each");
    r.smp[0].pen_slot = 0;
    KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "several rows drawn with one penalty-table row refused");
    r.smp[0].pen_slot = -1;
    l.sample_rows = 0;
    r.lg[0] = 1;
    KT_CHECK(check(&r, &l) == KILN_OK, "device sampling of one row per sequence accepted");
    r.smp[1].n_logprobs = KILN_STEP_MAX_TOP + 1;
    KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "top-n beyond KILN_STEP_MAX_TOP refused");
    l.max_logits_per_seq = 0;

    /* grammar masks (constrained rows drawn by the backend): only where the limits allow them,
     * one logits row then, as many rows as masked draws, rows of (vocab + 31) / 32 words */
    {
        uint32_t masks[MAXS * ((V + 31) / 32)];
        memset(masks, 0, sizeof masks);
        rig_init(&r);
        r.s.device_sample = 1;
        r.s.masks = masks;
        r.s.mask_words = (V + 31) / 32;
        r.s.n_masks = 1;
        r.smp[1].mask = 1;
        KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "a mask refused where the backend has none");
        l.masks = 1;
        KT_CHECK(check(&r, &l) == KILN_OK, "a masked draw accepted");
        r.smp[0].mask = 2;
        KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "a mask row past n_masks refused");
        r.s.n_masks = 2;
        KT_CHECK(check(&r, &l) == KILN_OK, "two masked draws accepted");
        r.s.n_masks = 3;
        KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "a mask row no draw uses refused");
        r.s.n_masks = 2;
        r.s.mask_words = 1;
        KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "mask rows narrower than the vocabulary refused");
        r.s.mask_words = (V + 31) / 32;
        l.max_logits_per_seq = 4;
        l.sample_rows = 1;
        r.lg[0] = 3;
        KT_CHECK(check(&r, &l) == KILN_ERR_RANGE, "a mask on several logits rows refused");
        l.max_logits_per_seq = 0;
        l.sample_rows = 0;
        l.masks = 0;
    }

    /* KV element types */
    KT_CHECK(kiln_kv_dtype_bytes(KILN_KV_F32) == 4 && kiln_kv_dtype_bytes(KILN_KV_BF16) == 2 &&
                 kiln_kv_dtype_bytes(KILN_KV_F16) == 2 && kiln_kv_dtype_bytes(KILN_KV_FP8_E4M3) == 1,
             "KV element sizes");
    KT_CHECK(kiln_kv_dtype_bytes((kiln_kv_dtype)99) == 0 && strcmp(kiln_kv_dtype_name((kiln_kv_dtype)99), "?") == 0,
             "an unknown KV type");
    KT_CHECK(kiln_kv_dtype_from_name("fp8") == KILN_KV_FP8_E4M3 && kiln_kv_dtype_from_name("FP8_E4M3") == KILN_KV_FP8_E4M3 &&
                 kiln_kv_dtype_from_name("bf16") == KILN_KV_BF16 && kiln_kv_dtype_from_name("int4") == -1 &&
                 kiln_kv_dtype_from_name(NULL) == -1,
             "KV type names");
    for (int t = 0; t < KILN_KV_DTYPE_COUNT; t++)
        KT_CHECK(kiln_kv_dtype_from_name(kiln_kv_dtype_name((kiln_kv_dtype)t)) == t, "name round trip %d", t);
    kiln_kv_layout kl = l.kv;
    KT_CHECK(kiln_kv_scale_count(&kl) == 0, "no scales for an f32 pool");
    kl.dtype = KILN_KV_FP8_E4M3;
    kl.scale = KILN_KV_SCALE_TENSOR;
    KT_CHECK(kiln_kv_scale_count(&kl) == 2 * 2, "per-tensor scales: K and V per layer");
    kl.scale = KILN_KV_SCALE_HEAD;
    KT_CHECK(kiln_kv_scale_count(&kl) == 2 * 2 * 2, "per-head scales: K and V per layer and KV head");

    /* format: FP8 storage types and the quantization descriptor's names */
    KT_CHECK(kiln_dtype_block_bytes(KILN_DT_F8_E4M3) == 1 && kiln_dtype_row_bytes(KILN_DT_F8_E4M3, 5120) == 5120 &&
                 kiln_dtype_is_fp8(KILN_DT_F8_E4M3) && kiln_dtype_is_fp8(KILN_DT_F8_E5M2) &&
                 !kiln_dtype_is_fp8(KILN_DT_BF16) && !kiln_dtype_is_quant(KILN_DT_F8_E4M3),
             "FP8 storage types");
    KT_CHECK(strcmp(kiln_dtype_name(KILN_DT_F8_E4M3), "f8_e4m3") == 0, "FP8 name");
    KT_CHECK(strcmp(kiln_scale_kind_name(KILN_SCALE_CHANNEL), "per-channel") == 0 &&
                 strcmp(kiln_scale_kind_name(KILN_SCALE_BLOCK), "per-block") == 0,
             "scale kind names");
    kiln_tensor t;
    memset(&t, 0, sizeof t);
    KT_CHECK(t.quant.kind == KILN_SCALE_NONE && t.quant.scale == NULL, "a zeroed tensor has no scales");
    return kt_done();
}
