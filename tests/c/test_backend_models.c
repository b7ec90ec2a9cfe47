/* kiln-layer: backend (links only this layer and those below it) */
/* test_backend_models.c: the backend contract holds for more than one model in one process (a
 * target and a draft model, each with its own backend instance and KV pool): two CPU backends
 * over two real models (stories260K, llama2.c format; tinystories-656K, HF safetensors) whose
 * steps are interleaved give logits bit-identical to each run alone. A backend keeps no state
 * outside its instance, so nothing one does can reach the other.
 * And several logits rows per sequence in one step (speculative verification), as the contract
 * allows: the CPU backend's rows are bit-identical to 1-row steps at the same positions. */
#include <string.h>
#include "backend/backend.h"
#include "model/model.h"
#include "test.h"
#include "util/alloc.h"

enum { BS = 8, NB = 12, MAXB = 8, MAXT = 16, NPROMPT = 12 };

typedef struct rig {
    const kiln_model *m;
    kiln_backend *b;
    kiln_step s;
    int32_t tok[MAXT], pos[MAXT], qs[2], ctx[1], bt[MAXB], lg[1];
    int64_t slot[MAXT];
    kiln_step_sampling smp[1];
} rig;

static int rig_open_k(rig *r, const kiln_model *m, int max_logits, kiln_error *err);
static int rig_open(rig *r, const kiln_model *m) {
    kiln_error err = {0};
    int rc = rig_open_k(r, m, 0, &err);
    if (rc) fprintf(stderr, "backend: %s\n", err.msg);
    return rc;
}

static int rig_open_k(rig *r, const kiln_model *m, int max_logits, kiln_error *err) {
    memset(r, 0, sizeof *r);
    r->m = m;
    kiln_backend_config c = {.max_tokens = MAXT, .max_seqs = 1, .max_blocks_per_seq = MAXB,
                             .max_model_len = MAXB * BS, .n_threads = 2, .max_logits_per_seq = max_logits};
    c.kv = (kiln_kv_layout){.n_layers = m->cfg.n_layers, .n_kv_heads = m->cfg.n_kv_heads, .head_dim = m->cfg.head_dim,
                            .block_size = BS, .n_blocks = NB, .dtype = KILN_KV_F32, .elem_bytes = 4};
    int rc = kiln_backend_cpu_ops()->create(&r->b, m, &c, err);
    if (rc) return rc;
    r->s = (kiln_step){.max_tokens = MAXT, .max_seqs = 1, .max_blocks_per_seq = MAXB, .token_ids = r->tok,
                       .positions = r->pos, .slot_mapping = r->slot, .seq_q_start = r->qs, .seq_ctx_len = r->ctx,
                       .block_table = r->bt, .seq_logits = r->lg, .sampling = r->smp};
    for (int b = 0; b < MAXB; b++) r->bt[b] = 1 + b;
    return 0;
}

/* rows [p0, p1) of ids as one step; the logits of its last k rows into out[k][vocab] */
static int rig_step_k(rig *r, const int32_t *ids, int p0, int p1, int k, float *out) {
    kiln_step *s = &r->s;
    s->n_seqs = 1;
    s->n_tokens = p1 - p0;
    r->qs[0] = 0;
    r->qs[1] = p1 - p0;
    r->ctx[0] = p1;
    r->lg[0] = k;
    for (int p = p0; p < p1; p++) {
        r->tok[p - p0] = ids[p];
        r->pos[p - p0] = p;
        r->slot[p - p0] = (int64_t)r->bt[p / BS] * BS + p % BS;
    }
    kiln_error err = {0};
    kiln_step_result res;
    if (r->b->ops->encode_step(r->b, s, &err) || r->b->ops->finish_step(r->b, &res, &err)) {
        fprintf(stderr, "step: %s\n", err.msg);
        return -1;
    }
    if (res.n_logits != k || res.vocab != r->m->cfg.vocab_size) return -1;
    memcpy(out, res.logits, (size_t)k * res.vocab * sizeof(float));
    return 0;
}

static int rig_step(rig *r, const int32_t *ids, int p0, int p1, float *out) { return rig_step_k(r, ids, p0, p1, 1, out); }

/* a prefill of the first 5 ids, then one decode row per step up to NPROMPT */
static const int k_chunks[][2] = {{0, 5}, {5, 6}, {6, 7}, {7, 8}, {8, 9}, {9, 10}, {10, 11}, {11, 12}};
enum { NSTEPS = 8 };

int main(void) {
    const char *pa = kt_shared("models/stories260K/stories260K.bin"), *pb = kt_shared("models/tinystories-656K");
    if (!kt_exists(pa) || !kt_exists(pb)) KT_SKIP("fixtures %s or %s missing", pa, pb);
    kiln_model *ma = NULL, *mb = NULL;
    kiln_error err = {0};
    if (kiln_model_load(&ma, pa, &err) || kiln_model_load(&mb, pb, &err)) {
        KT_CHECK(0, "load: %s", err.msg);
        return kt_done();
    }
    int va = ma->cfg.vocab_size, vb = mb->cfg.vocab_size;
    int32_t ida[NPROMPT], idb[NPROMPT];
    unsigned long long seed = 7;
    for (int i = 0; i < NPROMPT; i++) {
        ida[i] = (int32_t)(kt_rand_u64(&seed) % (unsigned)va);
        idb[i] = (int32_t)(kt_rand_u64(&seed) % (unsigned)vb);
    }
    float *ref_a = kiln_malloc(sizeof(float) * NSTEPS * va), *ref_b = kiln_malloc(sizeof(float) * NSTEPS * vb);
    float *got_a = kiln_malloc(sizeof(float) * va), *got_b = kiln_malloc(sizeof(float) * vb);
    rig a, b;
    /* each model alone */
    KT_CHECK(rig_open(&a, ma) == 0, "backend A");
    for (int k = 0; k < NSTEPS; k++)
        KT_CHECK(rig_step(&a, ida, k_chunks[k][0], k_chunks[k][1], ref_a + (size_t)k * va) == 0, "A alone step %d", k);
    a.b->ops->destroy(a.b);
    KT_CHECK(rig_open(&b, mb) == 0, "backend B");
    for (int k = 0; k < NSTEPS; k++)
        KT_CHECK(rig_step(&b, idb, k_chunks[k][0], k_chunks[k][1], ref_b + (size_t)k * vb) == 0, "B alone step %d", k);
    b.b->ops->destroy(b.b);
    /* both alive, steps interleaved (B's first step between A's prefill and A's decodes) */
    KT_CHECK(rig_open(&a, ma) == 0 && rig_open(&b, mb) == 0, "two backends in one process");
    int bad = 0;
    for (int k = 0; k < NSTEPS; k++) {
        KT_CHECK(rig_step(&a, ida, k_chunks[k][0], k_chunks[k][1], got_a) == 0, "A step %d", k);
        bad += memcmp(got_a, ref_a + (size_t)k * va, sizeof(float) * va) != 0;
        KT_CHECK(rig_step(&b, idb, k_chunks[k][0], k_chunks[k][1], got_b) == 0, "B step %d", k);
        bad += memcmp(got_b, ref_b + (size_t)k * vb, sizeof(float) * vb) != 0;
    }
    KT_CHECK(bad == 0, "%d interleaved steps differ from the runs alone", bad);
    /* and the two models really differ (the check above could not pass by sharing one model) */
    KT_CHECK(va != vb || memcmp(ref_a, ref_b, sizeof(float) * va) != 0, "two different models");
    printf("two models, two backends, %d interleaved steps each: bit-identical to the runs alone\n", NSTEPS);
    a.b->ops->destroy(a.b);
    b.b->ops->destroy(b.b);

    /* several logits rows per sequence (speculative verification): the last 3 rows of a 5-row
     * chunk give the bits of 1-row steps at those positions; beyond the backend's limit, create
     * refuses; past the config's limit, the step is refused */
    float *one = kiln_malloc(sizeof(float) * 5 * va), *three = kiln_malloc(sizeof(float) * 3 * va);
    KT_CHECK(rig_open(&a, ma) == 0, "backend A");
    for (int p = 0; p < 5; p++) KT_CHECK(rig_step(&a, ida, p, p + 1, one + (size_t)p * va) == 0, "1-row step %d", p);
    a.b->ops->destroy(a.b);
    KT_CHECK(rig_open_k(&a, ma, 4, &err) == 0, "backend A with 4 logits rows per sequence: %s", err.msg);
    KT_CHECK(rig_step_k(&a, ida, 0, 5, 3, three) == 0, "a step asking 3 logits rows");
    KT_CHECK(memcmp(three, one + (size_t)2 * va, sizeof(float) * 3 * va) == 0,
             "the last 3 rows' logits differ from 1-row steps at positions 2, 3, 4");
    KT_CHECK(rig_step_k(&a, ida, 0, 5, 5, three) != 0, "5 logits rows refused beyond the config's 4");
    a.b->ops->destroy(a.b);
    rig tmp;
    KT_CHECK(rig_open_k(&tmp, ma, 1000, &err) == KILN_ERR_UNSUPPORTED, "1000 logits rows per sequence refused: %s", err.msg);
    kiln_free(one);
    kiln_free(three);
    kiln_free(ref_a);
    kiln_free(ref_b);
    kiln_free(got_a);
    kiln_free(got_b);
    kiln_model_free(ma);
    kiln_model_free(mb);
    return kt_done();
}
