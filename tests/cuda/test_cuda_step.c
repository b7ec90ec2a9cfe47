/* test_cuda_step.c: the CUDA backend's step against the CPU backend, at the backend interface,
 * on mistral-tiny-random (bf16, head_dim 48, GQA 2:1) and -f16:
 *   - ragged steps (prefill chunks and decodes together, block tables with holes): logits
 *     within 2e-2 relative L2 of the CPU backend's, every step;
 *   - I1: each step makes exactly one synchronising CUDA call (the finish_step stream sync),
 *     no device malloc/free, and n_syncs grows by one per step;
 *   - I7: no kiln allocation inside encode/finish;
 *   - I6 (batch_invariant): a sequence's logits are bit-identical alone and in a batch;
 *   - KILN_CUDA_DEBUG=1 (wait + check after every op, NaN-poisoned scratch) gives the same
 *     logits; with strict it is refused; mixed matrix dtypes are refused at create (I3). */
#include <stdlib.h>
#include "backend/cuda/sync.h"
#include "cuda_test.h"
#include "model/loaders.h"
#include "model/model.h"
#include "step_harness.h"

#define BS 16
#define NBLK 200

static const int k_script[][4] = { /* per step: new tokens of sequences A, B, C, D */
    {10, 5, 0, 0}, {13, 1, 16, 0}, {1, 1, 24, 1}, {1, 1, 1, 1}, {1, 0, 1, 37}, {1, 1, 1, 1}};
#define N_STEPS ((int)(sizeof k_script / sizeof k_script[0]))

static int create(const kiln_backend_ops *ops, kiln_backend **b, const kiln_model *m, sh_ctx *h, int inv, int strict,
                  kiln_error *err) {
    kiln_backend_config bc = h->bc;
    kc_target_from_env(&bc.cuda); /* KILN_CUDA_TARGET=sm_86: the forced target's kernel choices */
    bc.kv.n_layers = m->cfg.n_layers;
    bc.kv.n_kv_heads = m->cfg.n_kv_heads;
    bc.kv.head_dim = m->cfg.head_dim;
    bc.kv.block_size = BS;
    bc.kv.n_blocks = NBLK;
    bc.kv.dtype = ops->kv_dtype; /* each backend's own pool type: f32 on cpu, bf16 on cuda */
    bc.kv.elem_bytes = kiln_kv_dtype_bytes(ops->kv_dtype);
    bc.batch_invariant = inv;
    bc.strict = strict;
    return ops->create(b, m, &bc, err);
}

/* run the script on a backend; logits of every step appended to out ([rows][V]) */
static int run_script(kiln_backend *b, sh_ctx *h, float *out, int V, int *rows, int count_sync) {
    kiln_error err = {0};
    int n = 0;
    for (int i = 0; i < h->n_seq; i++) h->seq[i].n_done = 0;
    for (int k = 0; k < N_STEPS; k++) {
        sh_build(h, k_script[k], BS);
        kiln_cuda_syncs before = {0};
        const kiln_cuda_syncs *cs = kiln_backend_cuda_syncs(b);
        if (cs) before = *cs;
        uint64_t nsync = b->n_syncs, allocs = kiln_alloc_count();
        kiln_step_result r;
        if (b->ops->encode_step(b, &h->s, &err) || b->ops->finish_step(b, &r, &err)) {
            fprintf(stderr, "FAIL %s step %d: %s\n", b->ops->name, k, err.msg);
            return -1;
        }
        uint64_t allocs_after = kiln_alloc_count();
        if (count_sync && cs) {
            /* the wait is on the step's event (a step may be left in flight behind another) */
            KT_CHECK(cs->event_syncs == before.event_syncs + 1, "I1: step %d made %llu event syncs", k,
                     (unsigned long long)(cs->event_syncs - before.event_syncs));
            KT_CHECK(kiln_cuda_syncs_total(cs) == kiln_cuda_syncs_total(&before) + 1,
                     "I1: step %d made %llu synchronising calls", k,
                     (unsigned long long)(kiln_cuda_syncs_total(cs) - kiln_cuda_syncs_total(&before)));
            KT_CHECK(b->n_syncs == nsync + 1, "I1: n_syncs grew by %llu", (unsigned long long)(b->n_syncs - nsync));
            KT_CHECK(allocs_after == allocs, "I7: step %d made %llu kiln allocations", k,
                     (unsigned long long)(allocs_after - allocs));
        }
        KT_CHECK(r.n_logits == h->s.n_seqs && r.vocab == V, "step %d: %d logit rows for %d seqs", k, r.n_logits,
                 h->s.n_seqs);
        memcpy(out + (size_t)n * V, r.logits, (size_t)r.n_logits * V * 4);
        n += r.n_logits;
        sh_advance(h, k_script[k]);
    }
    *rows = n;
    return 0;
}

static void model_case(const char *dir, unsigned long long *rs) {
    if (!kt_exists(dir)) { fprintf(stderr, "SKIP %s: fixture missing\n", dir); return; }
    kiln_error err = {0};
    kiln_model *m = NULL;
    if (kiln_model_load(&m, dir, &err)) { KT_CHECK(0, "load %s: %s", dir, err.msg); return; }
    int V = m->cfg.vocab_size;
    sh_ctx h;
    sh_init(&h, 4, BS, NBLK, rs, V);
    size_t cap = (size_t)64 * V;
    float *lc = kiln_malloc(cap * 4), *lg = kiln_malloc(cap * 4), *ld = kiln_malloc(cap * 4);
    kiln_backend *cpu = NULL, *gpu = NULL, *dbg = NULL;
    int nc = 0, ng = 0, nd = 0;
    KT_CHECK(create(kiln_backend_cpu_ops(), &cpu, m, &h, 0, 0, &err) == 0, "cpu create: %s", err.msg);
    KT_CHECK(create(kiln_backend_cuda_ops(), &gpu, m, &h, 0, 1, &err) == 0, "cuda create: %s", err.msg);
    if (cpu && gpu && run_script(cpu, &h, lc, V, &nc, 0) == 0 && run_script(gpu, &h, lg, V, &ng, 1) == 0) {
        KT_CHECK(nc == ng, "row counts %d vs %d", nc, ng);
        double worst = 0;
        for (int r = 0; r < nc && r < ng; r++) {
            double e = kt_rel_l2(lg + (size_t)r * V, lc + (size_t)r * V, (size_t)V);
            if (!(e <= worst)) worst = e;
        }
        /* bf16 activations and a bf16 KV pool against the CPU's f32 through 2 random layers: on
         * the H100 the worst row over 9 seeds (2026-11-26) was 0.012-0.021 for the bf16 model
         * (0.004-0.006 for f16), so 2e-2 failed now and then on fresh seeds; a wrong op gives
         * 1e-1 and more */
        KT_CHECK(worst <= 3e-2, "%s: cuda vs cpu logits, worst row rel L2 %g", dir, worst);
        printf("step %s: %d logit rows over %d ragged steps, worst rel L2 vs cpu %.3g\n", dir, nc, N_STEPS, worst);
    }
    /* debug mode: same logits; refused under strict */
    h.bc.cuda.debug = 1; /* KILN_CUDA_DEBUG=1 */
    kiln_backend *bad = NULL;
    int rc = create(kiln_backend_cuda_ops(), &bad, m, &h, 0, 1, &err);
    KT_CHECK(rc == KILN_ERR_STRICT && !bad, "strict + KILN_CUDA_DEBUG=1 not refused (rc %d)", rc);
    KT_CHECK(create(kiln_backend_cuda_ops(), &dbg, m, &h, 0, 0, &err) == 0, "cuda debug create: %s", err.msg);
    h.bc.cuda.debug = -1;
    if (dbg && gpu && run_script(dbg, &h, ld, V, &nd, 0) == 0) {
        double e = kt_rel_l2(ld, lg, (size_t)nd * V);
        KT_CHECK(nd == ng && e <= 1e-5, "debug mode logits differ: rel L2 %g", e);
        printf("step %s: debug mode (per-op checks, poisoned scratch) rel L2 vs normal %.3g\n", dir, e);
    }
    if (cpu) cpu->ops->destroy(cpu);
    if (gpu) gpu->ops->destroy(gpu);
    if (dbg) dbg->ops->destroy(dbg);
    kiln_free(lc); kiln_free(lg); kiln_free(ld);
    sh_free(&h);
    kiln_model_free(m);
}

/* I6: sequence A alone (its own script) vs A inside the full batch, batch-invariant mode */
static void invariance_case(const char *dir, unsigned long long *rs) {
    if (!kt_exists(dir)) return;
    kiln_error err = {0};
    kiln_model *m = NULL;
    if (kiln_model_load(&m, dir, &err)) { KT_CHECK(0, "load: %s", err.msg); return; }
    int V = m->cfg.vocab_size;
    sh_ctx h;
    sh_init(&h, 4, BS, NBLK, rs, V);
    kiln_backend *b1 = NULL, *b2 = NULL;
    KT_CHECK(create(kiln_backend_cuda_ops(), &b1, m, &h, 1, 1, &err) == 0, "cuda inv create: %s", err.msg);
    KT_CHECK(create(kiln_backend_cuda_ops(), &b2, m, &h, 1, 1, &err) == 0, "cuda inv create: %s", err.msg);
    float *solo = kiln_malloc((size_t)N_STEPS * V * 4), *all = kiln_malloc((size_t)64 * V * 4);
    int ok = b1 && b2;
    int same = 1, steps = 0;
    for (int k = 0; ok && k < N_STEPS; k++) {
        int only[4] = {k_script[k][0], 0, 0, 0};
        kiln_step_result r;
        /* the batch: every sequence; A is the first logit row whenever it takes part */
        sh_build(&h, k_script[k], BS);
        if (b2->ops->encode_step(b2, &h.s, &err) || b2->ops->finish_step(b2, &r, &err)) { ok = 0; break; }
        memcpy(all, r.logits, (size_t)V * 4);
        if (!only[0]) { sh_advance(&h, k_script[k]); continue; }
        sh_build(&h, only, BS);
        if (b1->ops->encode_step(b1, &h.s, &err) || b1->ops->finish_step(b1, &r, &err)) { ok = 0; break; }
        same &= memcmp(all, r.logits, (size_t)V * 4) == 0;
        steps++;
        sh_advance(&h, k_script[k]);
    }
    KT_CHECK(ok, "batch-invariant run failed: %s", err.msg);
    KT_CHECK(same, "I6: sequence A's logits alone differ from A in the batch (KILN_BATCH_INVARIANT)");
    printf("invariance %s: A alone vs in batch over %d steps: %s\n", dir, steps, same ? "bit-identical" : "DIFFERENT");
    if (b1) b1->ops->destroy(b1);
    if (b2) b2->ops->destroy(b2);
    kiln_free(solo); kiln_free(all);
    sh_free(&h);
    kiln_model_free(m);
}

/* I3: mixed matrix dtypes are refused at create */
static void refusal_case(const char *dir) {
    if (!kt_exists(dir)) return;
    kiln_error err = {0};
    kiln_model *m = NULL;
    if (kiln_model_load(&m, dir, &err)) return;
    kiln_tensor *t = (kiln_tensor *)kiln_model_find(m, "model.layers.1.self_attn.k_proj.weight");
    KT_CHECK(t != NULL, "no k_proj tensor");
    if (t) {
        t->dtype = KILN_DT_F16; /* lie about it: create must refuse before reading anything */
        sh_ctx h;
        unsigned long long s = 1;
        sh_init(&h, 1, BS, NBLK, &s, m->cfg.vocab_size);
        kiln_backend *b = NULL;
        int rc = create(kiln_backend_cuda_ops(), &b, m, &h, 0, 1, &err);
        KT_CHECK(rc == KILN_ERR_UNSUPPORTED && !b, "mixed dtypes not refused (rc %d)", rc);
        printf("refusal: %s\n", err.msg);
        if (b) b->ops->destroy(b);
        sh_free(&h);
    }
    kiln_model_free(m);
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    if (!kt_exists(kt_shared("models/mistral-tiny-random/config.json")))
        KT_SKIP("fixture %s missing (set KILN_SHARED)", kt_shared("models/mistral-tiny-random"));
    model_case(kt_shared("models/mistral-tiny-random"), &s);
    model_case(kt_shared("models/mistral-tiny-random-f16"), &s);
    model_case(kt_shared("models/tinystories-656K"), &s);
    invariance_case(kt_shared("models/mistral-tiny-random"), &s);
    refusal_case(kt_shared("models/mistral-tiny-random"));
    return kt_done();
}
