/* cuda_moe.c: the mixture-of-experts FFN (Mixtral) in the CUDA backend, host side: what is
 * refused at load, the scratch taken at create, and the call in a MoE layer's FFN (moe.cu does
 * the work; moe.h has the math). The weights are uploaded by cuda_weights.c (put_moe): per layer
 * the router [E][D] and two expert buffers, gate|up [E][2F][D] and down [E][D][F].
 * A MoE layer's FFN replaces gate|up GEMM + SwiGLU + down GEMM: the same input (xn, adt; the
 * router reads the residual x and the FFN norm instead, to renormalise the row in f32) and
 * output (proj [T][D] f32, added to the residual by the next add_rmsnorm). */
#include "backend/cuda/cuda_backend_internal.h"
#include "backend/cuda/moe.h"

int kiln_cuda_moe_check(const cuda_backend *c, kiln_error *err) {
    const kiln_model *m = c->m;
    const kiln_config *mc = &m->cfg;
    int E = mc->n_experts, K = mc->n_experts_used;
    if (E < 1 || E > KILN_MOE_MAX_EXPERTS || K < 1 || K > E || K > KILN_MOE_MAX_USED)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %d experts with %d per token (at most %d experts, "
                        "%d per token)", E, K, KILN_MOE_MAX_EXPERTS, KILN_MOE_MAX_USED);
    if (mc->dim % 8 || mc->hidden_dim % 8)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: mixture of experts with dim %d / expert size %d "
                        "(multiples of 8)", mc->dim, mc->hidden_dim);
    if ((size_t)c->cfg.max_tokens * (size_t)K > (size_t)1 << 30)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %d tokens x %d experts per step", c->cfg.max_tokens, K);
    for (int l = 0; l < mc->n_layers; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        if (!w->router || !w->experts)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cuda backend: MoE layer %d without router or experts", l);
        for (int i = -1; i < 3 * E; i++) {
            const kiln_tensor *t = i < 0 ? w->router : &w->experts[i];
            int64_t rows = i < 0 ? E : i % 3 == 2 ? mc->dim : mc->hidden_dim;
            int64_t cols = i < 0 || i % 3 != 2 ? mc->dim : mc->hidden_dim;
            /* the expert kernels read dense rows of the activations' dtype; GGUF blocks and FP8
             * codes would need their decoders in moe.cu (not written) */
            if (t->dtype != c->adt || t->quant.kind != KILN_SCALE_NONE)
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                                "cuda backend: mixture-of-experts weight %s is %s%s; the GPU expert kernels take "
                                "dense f32/f16/bf16 experts of the activations' dtype (%s), not GGUF-quantized "
                                "or FP8 ones (--backend cpu runs them)",
                                t->name, kiln_dtype_name(t->dtype), t->quant.kind != KILN_SCALE_NONE ? " with scales" : "",
                                kiln_dtype_name(c->adt));
            if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
                return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cuda backend: %s is not [%lld][%lld]", t->name,
                                (long long)rows, (long long)cols);
        }
    }
    return KILN_OK;
}

/* device bytes of layer l's router and experts (as stored) */
size_t kiln_cuda_moe_layer_bytes(const kiln_model *m, int l) {
    const kiln_layer_weights *w = &m->layers[l];
    size_t n = w->router ? w->router->nbytes : 0;
    for (int i = 0; w->experts && i < 3 * m->cfg.n_experts; i++) n += w->experts[i].nbytes;
    return n;
}

int kiln_cuda_moe_alloc(cuda_backend *c, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    size_t b[4];
    kiln_cuda_moe_scratch_bytes(c->cfg.max_tokens, mc->dim, mc->hidden_dim, mc->n_experts, mc->n_experts_used, c->adt,
                                &b[0], &b[1], &b[2], &b[3]);
    void **p[4] = {(void **)&c->moe_idx, (void **)&c->moe_w, &c->moe_act, (void **)&c->moe_y};
    static const char *what[4] = {"MoE routing", "MoE weights", "MoE expert activations", "MoE expert outputs"};
    for (int i = 0; i < 4; i++) {
        int rc = kiln_cuda_dev_malloc(c, p[i], b[i], what[i], err);
        if (rc) return rc;
        c->scratch_bytes += b[i];
    }
    return KILN_OK;
}

/* layer l's FFN for T rows: proj[T][D] = moe(xn[T][D]) */
int kiln_cuda_moe_enqueue(cuda_backend *c, int T, int l, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    const cuda_layer *w = &c->layers[l];
    if (c->debug) { /* unwritten reads show up as NaN */
        size_t b[4];
        kiln_cuda_moe_scratch_bytes(T, mc->dim, mc->hidden_dim, mc->n_experts, mc->n_experts_used, c->adt, &b[0],
                                    &b[1], &b[2], &b[3]);
        LAUNCH(kiln_cuda_fill_u32((uint32_t *)c->moe_act, 0xffffffffu, (int64_t)(b[2] / 4), c->st));
        LAUNCH(kiln_cuda_fill_u32((uint32_t *)c->moe_y, 0xffffffffu, (int64_t)(b[3] / 4), c->st));
    }
    kiln_cuda_moe_args a = {
        .T = T, .D = mc->dim, .F = mc->hidden_dim, .E = mc->n_experts, .K = mc->n_experts_used, .dt = c->adt,
        .tc = c->cfg.batch_invariant ? 0 : 1, /* the tensor-core GEMM at prefill sizes (moe.h), never
                                               * when the path must not depend on the batch */
        .xn = c->xn, .x_res = c->x, .norm_w = c->norms + (size_t)(2 * l + 1) * mc->dim, .eps = mc->norm_eps,
        .router = w->router, .w_gu = w->moe_gu, .w_down = w->moe_d, .out = c->proj,
        .idx = c->moe_idx, .wts = c->moe_w, .act = c->moe_act, .y = c->moe_y,
    };
    LAUNCH(kiln_cuda_moe_ffn(&a, c->st));
    return KILN_OK;
}
