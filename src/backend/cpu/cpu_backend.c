/* cpu_backend.c: the transformer step on the CPU over a ragged batch and the paged KV pool.
 *
 * Per step (T = s->n_tokens rows, D = dim, H = n_heads, KV = n_kv_heads, hd = head_dim):
 *   x[T][D]    = embedding rows
 *   per layer:  xn = rmsnorm(x);  q[T][H*hd], k[T][KV*hd], v[T][KV*hd] = xn W^T (+ bias: Qwen2);
 *               q, k = rmsnorm per head [hd] (Qwen3);  RoPE(q, k) with the model's inverse
 *               frequencies and cos / sin factor (kiln_rope_inv_freq: RoPE scaling);
 *               k, v -> KV pool at slot_mapping;  att[T][H*hd] = causal GQA attention through
 *               the block tables (attention.c);  x += att Wo^T;  xn = rmsnorm(x);
 *               x += (silu(xn Wg^T) * xn Wu^T) Wd^T  (MoE: the top-k experts' sum, moe.c)
 *   logits[n][V] = rmsnorm(x[last row of each sequence that asked]) Wlm^T
 * Every row's arithmetic is independent of the other rows and of the thread count (fixed
 * reduction orders), so a sequence gives bit-identical results alone or in any batch (I5/I6).
 * All buffers are allocated in create(); a step allocates nothing (I7).
 *
 * Sampling (ops.samples; the engine asks for it with the option cpu.backend_sampling): a step with
 * device_sample = 1 draws its tokens here, right after the logits (cpu_sample.c: per-slot
 * penalty tables like the GPU's, the engine's own sampler), so finish_step hands back tokens,
 * logprobs and top-n instead of logits. Overlap (ops.overlap): the CPU computes inside encode,
 * so a second encode while one step is pending just computes too; rows with prev_row >= 0 read
 * their input token from the previous encoded step's draws. Results live in 3 rotating slots
 * (two steps in flight + the one last returned, valid until the next finish_step); the logits
 * buffer is single, so a step without device sampling must be finished before the next encode.
 *
 * Tensor parallelism (config tp_size > 1): the layers and logits run as N simulated ranks over
 * sharded weights and per-rank KV pools (cpu_tp.c); the pool above is then not allocated.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>
#include "format/gguf.h"
#include "format/quant.h"
#include "backend/backend.h"
#include "backend/cpu/attention.h"
#include "backend/cpu/cpu_sample.h"
#include "backend/cpu/cpu_tp.h"
#include "backend/cpu/qgemm.h"
#include "backend/cpu/qpack.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/moe.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/fp8.h"
#include "util/log.h"

#define KILN_CPU_TINY_MACS (1 << 20) /* multiply-adds a token below which "all cores" means one */

#define PANEL_FLOATS (128u * 1024u) /* per thread: the prefill matmul's f32 weight panel (512 KB) */

typedef struct cpu_backend {
    kiln_backend base;
    const kiln_model *m;
    kiln_backend_config cfg;
    kiln_cpu_ctx ctx;
    float *kv;          /* the KV pool, kiln_kv_elems(&cfg.kv) floats (f32 pool) */
    uint8_t *kv8;       /* or the FP8 E4M3 pool, kiln_kv_elems(&cfg.kv) bytes (stored = real / scale) */
    uint16_t *kv16;     /* or an f16 / bf16 pool, kiln_kv_elems(&cfg.kv) halves (round to nearest even) */
    float *kv_scale;    /* FP8: [n_layers][2] k and v scales (the checkpoint's, else 1.0) */
    float *kv_lut;      /* FP8: [n_layers][2][256] decoded code x scale (attention's reads) */
    float *kvbuf;       /* FP8 / 16-bit: [n_threads][block_size * head_dim] decoded K or V run */
    void *attn_amx;     /* cpu.attn "bf16": [n_threads][attn_amx_bytes] (attention_amx.c), else NULL */
    size_t attn_amx_bytes;
    size_t kv_bytes;
    /* scratch, [max_tokens][...] */
    float *x, *xn, *q, *k, *v, *att, *gate, *up;
    float *moe_out, *moe_scratch; /* MoE: [max_tokens][dim], kiln_cpu_moe_scratch_floats */
    double *rope_cs, *rope_sn; /* [max_tokens][head_dim / 2]: this step's RoPE angles */
    double *rope_inv;          /* [head_dim / 2] the model's inverse frequencies (kiln_rope_inv_freq) */
    double rope_mscale;        /* cos / sin multiplier (YaRN), else 1 */
    float *scores;      /* [n_threads][q_block][heads per KV head][max_model_len] */
    int q_block;        /* attention's query block (kiln_cpu_attn_q_block) */
    kiln_attn_kernels attn; /* attention kernels of the ISA */
    float *logits;      /* [max_seqs][vocab] */
    int32_t *logit_rows;/* [max_seqs] */
    size_t scratch_bytes;
    int32_t *tok_in;    /* [max_tokens] the step's input tokens (prev_row resolved) */
    kiln_cpu_sampler smp;
    /* results: NSLOT rotating slots; a FIFO of the pending steps' slots */
    kiln_cpu_sample_out out[3];
    int slot_n_logits[3], slot_sampled[3];
    int queue[2], n_pending; /* queue[0] = the oldest pending step's slot */
    int last_slot;           /* slot of the last encoded step (-1: none) */
    kiln_cpu_tp *tp;         /* tp_size > 1: the simulated ranks (cpu_tp.h), else NULL */
    kiln_cpu_packs *packs;   /* the weights packed for the W x A8 kernels (qpack.h), or NULL */
} cpu_backend;

#define NSLOT 3

/* A packed tensor's bytes in the checkpoint's file mapping (read-only, private: never
 * written) are read again only where something else uses them (a tied embedding's rows): the
 * pages the packing read are handed back to the page cache (MADV_DONTNEED refaults them from
 * the file on a later read), so the packed copy does not double the weights' resident memory.
 * Owned buffers (dummy weights) are left alone. */
static void release_mapped(const kiln_model *m, const kiln_tensor *w) {
    const unsigned char *p = w->data;
    for (int i = m->gguf ? -1 : 0; i < m->n_files; i++) {
        const kiln_mapfile *f = i < 0 ? kiln_gguf_mapping(m->gguf) : &m->files[i];
        if (!f->data || p < f->data || p + w->nbytes > f->data + f->size) continue;
        const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t a = ((uintptr_t)p + pg - 1) / pg * pg, e = ((uintptr_t)p + w->nbytes) / pg * pg;
        if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
        return;
    }
}

static void cpu_destroy(kiln_backend *b) {
    cpu_backend *c = (cpu_backend *)b;
    if (!c) return;
    kiln_pool_destroy(c->ctx.pool);
    kiln_cpu_packs_destroy(c->packs);
    kiln_cpu_tp_destroy(c->tp);
    kiln_free_aligned(c->kv);
    kiln_free_aligned(c->kv8);
    kiln_free_aligned(c->kv16);
    kiln_free(c->kv_scale);
    kiln_free(c->kv_lut);
    kiln_free_aligned(c->kvbuf);
    kiln_free_aligned(c->attn_amx);
    kiln_free_aligned(c->x);
    kiln_free_aligned(c->xn);
    kiln_free_aligned(c->q);
    kiln_free_aligned(c->k);
    kiln_free_aligned(c->v);
    kiln_free_aligned(c->att);
    kiln_free_aligned(c->gate);
    kiln_free_aligned(c->up);
    kiln_free_aligned(c->moe_out);
    kiln_free_aligned(c->moe_scratch);
    kiln_free_aligned(c->scores);
    kiln_free_aligned(c->ctx.panel);
    kiln_free_aligned(c->ctx.xperm);
    kiln_free_aligned(c->rope_cs);
    kiln_free_aligned(c->rope_sn);
    kiln_free(c->rope_inv);
    kiln_free_aligned(c->logits);
    kiln_free(c->logit_rows);
    kiln_free(c->tok_in);
    kiln_cpu_sampler_free(&c->smp);
    for (int i = 0; i < NSLOT; i++) kiln_cpu_sample_out_free(&c->out[i]);
    kiln_free(c);
}

/* Ask for transparent huge pages over the 2 MB-aligned interior of a big scratch buffer (THP
 * in "madvise" mode): one fault per 2 MB instead of per 4 KB on first touch, and fewer TLB
 * misses (prefill-512 +1.8 %). A hint: failure changes nothing. */
static void advise_huge(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
    const uintptr_t H = (uintptr_t)2 << 20;
    uintptr_t a = ((uintptr_t)p + H - 1) & ~(H - 1), b = ((uintptr_t)p + n) & ~(H - 1);
    if (p && b > a) (void)madvise((void *)a, b - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
#endif
}

static float *alloc_f32(size_t n, size_t *total) {
    *total += n * sizeof(float);
    float *p = kiln_malloc_aligned(n * sizeof(float));
    advise_huge(p, n * sizeof(float));
    return p;
}

/* several logits rows per sequence (speculative verification): the last k rows' logits */
enum { K_CPU_MAX_LOGITS = 64 };

/* The quantized-linear interface's admission on one ISA: kiln_cpu_matmul runs w when the ISA has
 * a dot kernel for its dtype (f32 / f16 / bf16, GGUF Q8_0 / Q4_0 / Q4_1 / Q4_K / Q5_K / Q6_K,
 * F8_E4M3) and, FP8 only, its kiln_quant scales: per tensor, per channel or per block, with
 * weight-only, dynamic per-token or static activations. */
static int check_weight_isa(const kiln_tensor *w, kiln_isa isa, kiln_error *err) {
    if ((w->quant.kind != KILN_SCALE_NONE) != (w->dtype == KILN_DT_F8_E4M3))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: %s scales of %s (%s) not supported",
                        kiln_scale_kind_name(w->quant.kind), w->name, kiln_dtype_name(w->dtype));
    if (w->quant.kind == KILN_SCALE_BLOCK && (w->quant.block_in <= 0 || w->quant.block_out <= 0))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: %s: block scales of %d x %d", w->name, w->quant.block_out,
                        w->quant.block_in);
    if (w->quant.act == KILN_ACT_STATIC && !w->quant.input_scale)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: %s: static activations without an input scale", w->name);
    if (!kiln_cpu_dot_lookup(w->dtype, isa))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: no %s kernel for %s weights (%s)", kiln_isa_name(isa),
                        kiln_dtype_name(w->dtype), w->name);
    return KILN_OK;
}

/* ops.check_weight: runnable on some ISA (the scalar path has every kernel the others have) */
static int cpu_check_weight(const kiln_tensor *w, kiln_error *err) { return check_weight_isa(w, KILN_ISA_SCALAR, err); }

static int cpu_create(kiln_backend **out, const kiln_model *m, const kiln_backend_config *bc,
                      kiln_error *err) {
    *out = NULL;
    const kiln_config *mc = &m->cfg;
    cpu_backend *c = kiln_calloc(1, sizeof *c);
    if (!c) return KILN_ERR(err, KILN_ERR_OOM, "cpu backend: out of memory");
    c->base.ops = kiln_backend_cpu_ops();
    c->m = m;
    c->cfg = *bc;
    int rc = kiln_isa_select(bc->cpu.isa, &c->ctx.isa, err);
    if (rc) goto fail;
    c->ctx.act_q8 = KILN_CPU_ACT_Q8_DEFAULT;
    if (bc->cpu.act && *bc->cpu.act) {
        if (!strcasecmp(bc->cpu.act, "q8")) c->ctx.act_q8 = 1;
        else if (!strcasecmp(bc->cpu.act, "f32")) c->ctx.act_q8 = 0;
        else {
            rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "cpu.act (KILN_CPU_ACT) = %s: expected q8 or f32", bc->cpu.act);
            goto fail;
        }
    }
    c->ctx.panel_min_rows = bc->cpu.panel_min_rows;
    /* AMX: a fact of the CPU and the OS (qgemm.h), for the avx512 path's W x A8 products */
    c->ctx.amx = bc->cpu.amx >= 0 && c->ctx.isa == KILN_ISA_AVX512 && kiln_cpu_has_amx();
    if (bc->cpu.amx > 0 && !c->ctx.amx) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                      "cpu.amx (KILN_CPU_AMX=1): no AMX-INT8 on the %s path here (the CPU, the OS's grant of the tile "
                      "state, or the build lacks it)", kiln_isa_name(c->ctx.isa));
        goto fail;
    }
    /* Threads: as asked; "all cores" (0) means one on a tiny model (under KILN_CPU_TINY_MACS
     * multiply-adds a token: llama2.c's stories260K has 0.26 M), whose matmuls all stay under the
     * pool's serial threshold in decode, so a second thread only adds its start, wake-ups and
     * spins (stories260K, 256 tokens, whole process, best of 10: 17.8-18.1 ms on one thread,
     * 19.8-20.1 ms on two). */
    int n_threads = bc->n_threads;
    if (n_threads <= 0) {
        double macs = (double)mc->dim * mc->vocab_size +
                      (double)mc->n_layers * ((double)mc->dim * (mc->n_heads + 2 * mc->n_kv_heads) * mc->head_dim +
                                              (double)mc->n_heads * mc->head_dim * mc->dim + 3.0 * mc->dim * mc->hidden_dim);
        if (macs < KILN_CPU_TINY_MACS) n_threads = 1;
    }
    rc = kiln_pool_create(&c->ctx.pool, n_threads, err);
    if (rc) goto fail;
    if (kiln_cpu_attn_lookup(c->ctx.isa, &c->attn)) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: no %s attention kernels", kiln_isa_name(c->ctx.isa));
        goto fail;
    }
    /* What the contract allows and this backend does not run, refused at load (I3): a KV pool
     * of another element type, several devices. */
    if (bc->kv.dtype != KILN_KV_F32 && bc->kv.dtype != KILN_KV_FP8_E4M3 && bc->kv.dtype != KILN_KV_F16 &&
        bc->kv.dtype != KILN_KV_BF16) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: a %s KV cache is not supported (f32, f16, bf16, fp8)",
                      kiln_kv_dtype_name(bc->kv.dtype));
        goto fail;
    }
    if (bc->kv.dtype == KILN_KV_FP8_E4M3 && bc->kv.scale != KILN_KV_SCALE_TENSOR) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: an FP8 KV cache with scale layout %d (per-tensor only)",
                      (int)bc->kv.scale);
        goto fail;
    }
    if (bc->kv.elem_bytes != kiln_kv_dtype_bytes(bc->kv.dtype)) {
        rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "cpu backend: KV layout of %d-byte %s elements", bc->kv.elem_bytes,
                      kiln_kv_dtype_name(bc->kv.dtype));
        goto fail;
    }
    if (bc->n_devices > 1) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: a list of %d devices is for cuda (tensor parallelism "
                      "on the cpu: tensor_parallel_size, simulated ranks)", bc->n_devices);
        goto fail;
    }
    if (bc->max_logits_per_seq > K_CPU_MAX_LOGITS) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: %d logits rows per sequence (at most %d)",
                      bc->max_logits_per_seq, K_CPU_MAX_LOGITS);
        goto fail;
    }
    /* Every weight must have a kernel on this ISA: refused at load, never at run time (I3). */
    for (int l = 0; l < mc->n_layers; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        const kiln_tensor *ts[8] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down, w->router};
        for (int i = 0; i < 8; i++)
            if (ts[i] && (rc = check_weight_isa(ts[i], c->ctx.isa, err))) goto fail;
        for (int i = 0; w->experts && i < 3 * mc->n_experts; i++)
            if ((rc = check_weight_isa(&w->experts[i], c->ctx.isa, err))) goto fail;
    }
    if ((rc = check_weight_isa(m->lm_head, c->ctx.isa, err))) goto fail;
    /* W x A8: the weights packed once for the kernels that read them so (qpack.h; the same
     * bits as the per-call transposition, which they skip: at one activation row most of the
     * product's time). With AMX, products of 16+ rows stay on the tiles and the rows' layout. */
    if (c->ctx.act_q8 && bc->cpu.pack >= 0 && bc->tp_size <= 1) {
        if ((rc = kiln_cpu_packs_create(&c->packs, c->ctx.isa, err))) goto fail;
        for (int l = 0; l < mc->n_layers; l++) {
            const kiln_layer_weights *w = &m->layers[l];
            const kiln_tensor *ts[7] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
            for (int i = 0; i < 7; i++) {
                int added;
                if (ts[i] && (rc = kiln_cpu_packs_add(c->packs, ts[i], c->ctx.pool, &added, err))) goto fail;
                if (ts[i] && added) release_mapped(m, ts[i]);
            }
        }
        int added;
        if ((rc = kiln_cpu_packs_add(c->packs, m->lm_head, c->ctx.pool, &added, err))) goto fail;
        if (added) release_mapped(m, m->lm_head);
        int np;
        size_t pb;
        kiln_cpu_packs_stats(c->packs, &np, &pb);
        if (np) {
            c->ctx.packs = c->packs;
            KILN_INFO("cpu: %d weight matrices packed for the %s W x A8 kernels (%.1f MB)", np,
                      kiln_isa_name(c->ctx.isa), (double)pb / 1e6);
        }
    }
    size_t T = (size_t)bc->max_tokens, S = (size_t)bc->max_seqs;
    size_t qd = (size_t)mc->n_heads * mc->head_dim, kvd = (size_t)mc->n_kv_heads * mc->head_dim;
    size_t kvn = (size_t)kiln_kv_elems(&bc->kv);
    int fp8kv = bc->kv.dtype == KILN_KV_FP8_E4M3, kv16 = bc->kv.dtype == KILN_KV_F16 || bc->kv.dtype == KILN_KV_BF16;
    c->kv_bytes = kvn * (size_t)kiln_kv_dtype_bytes(bc->kv.dtype);
    if (bc->tp_size > 1) {
        c->kv_bytes = 0; /* the ranks' pools (cpu_tp.c) */
    } else if (fp8kv) {
        c->kv8 = kiln_malloc_aligned(c->kv_bytes);
        c->kv_scale = kiln_malloc((size_t)mc->n_layers * 2 * sizeof(float));
        c->kv_lut = kiln_malloc((size_t)mc->n_layers * 2 * 256 * sizeof(float));
        c->kvbuf = kiln_malloc_aligned((size_t)kiln_pool_size(c->ctx.pool) * bc->kv.block_size * mc->head_dim * sizeof(float));
        if (!c->kv8 || !c->kv_scale || !c->kv_lut || !c->kvbuf) {
            rc = KILN_ERR(err, KILN_ERR_OOM, "cpu backend: cannot allocate the FP8 KV pool (%.1f MiB)", c->kv_bytes / 1048576.0);
            goto fail;
        }
        for (int l = 0; l < mc->n_layers; l++) { /* vLLM: k_scale / v_scale from the checkpoint, else 1.0 */
            c->kv_scale[2 * l] = m->layers[l].k_scale > 0 ? m->layers[l].k_scale : 1.0f;
            c->kv_scale[2 * l + 1] = m->layers[l].v_scale > 0 ? m->layers[l].v_scale : 1.0f;
            for (int kv = 0; kv < 2; kv++)
                for (int code = 0; code < 256; code++)
                    c->kv_lut[(2 * l + kv) * 256 + code] = kiln_e4m3_to_f32((uint8_t)code) * c->kv_scale[2 * l + kv];
        }
    } else if (kv16) { /* half the f32 pool's bytes: twice the tokens, half the attention's reads */
        c->kv16 = kiln_malloc_aligned(c->kv_bytes);
        c->kvbuf = kiln_malloc_aligned((size_t)kiln_pool_size(c->ctx.pool) * bc->kv.block_size * mc->head_dim * sizeof(float));
        if (!c->kv16 || !c->kvbuf) {
            rc = KILN_ERR(err, KILN_ERR_OOM, "cpu backend: cannot allocate the %s KV pool (%.1f MiB)",
                          kiln_kv_dtype_name(bc->kv.dtype), c->kv_bytes / 1048576.0);
            goto fail;
        }
    } else {
        c->kv = kiln_malloc_aligned(c->kv_bytes);
    }
    /* not advise_huge: the pool is touched sparsely (2 MB pages: +60 MB RSS for a 3-token
     * prompt, for +1.7 % prefill-512 measured) */
    size_t sb = 0;
    c->x = alloc_f32(T * mc->dim, &sb);
    c->xn = alloc_f32(T * mc->dim, &sb);
    c->q = alloc_f32(T * qd, &sb);
    c->k = alloc_f32(T * kvd, &sb);
    c->v = alloc_f32(T * kvd, &sb);
    c->att = alloc_f32(T * qd, &sb);
    c->gate = alloc_f32(T * mc->hidden_dim, &sb);
    c->up = alloc_f32(T * mc->hidden_dim, &sb);
    if (mc->n_experts > 0) {
        c->moe_out = alloc_f32(T * mc->dim, &sb);
        c->moe_scratch = alloc_f32(kiln_cpu_moe_scratch_floats((int)T, mc->dim, mc->n_experts, mc->n_experts_used), &sb);
        if (!c->moe_out || !c->moe_scratch) {
            rc = KILN_ERR(err, KILN_ERR_OOM, "cpu backend: cannot allocate the MoE scratch");
            goto fail;
        }
    }
    c->rope_inv = kiln_malloc((size_t)(mc->head_dim / 2 + 1) * sizeof(double));
    if (!c->rope_inv) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "cpu backend: out of memory");
        goto fail;
    }
    if ((rc = kiln_rope_inv_freq(m, c->rope_inv, &c->rope_mscale, err))) goto fail;
    c->rope_cs = kiln_malloc_aligned(T * (size_t)(mc->head_dim / 2 + 1) * sizeof(double));
    c->rope_sn = kiln_malloc_aligned(T * (size_t)(mc->head_dim / 2 + 1) * sizeof(double));
    sb += 2 * T * (size_t)(mc->head_dim / 2 + 1) * sizeof(double);
    c->q_block = kiln_cpu_attn_q_block(mc->n_heads / mc->n_kv_heads, bc->max_model_len);
    /* attention on AMX-BF16 tiles (cpu.attn "bf16"): refused where it cannot run, never a
     * silent f32 */
    if (bc->cpu.attn && *bc->cpu.attn && strcasecmp(bc->cpu.attn, "f32")) {
        if (strcasecmp(bc->cpu.attn, "bf16")) {
            rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "cpu.attn (KILN_CPU_ATTN) = %s: expected f32 or bf16", bc->cpu.attn);
            goto fail;
        }
        if (c->ctx.isa != KILN_ISA_AVX512 || !kiln_cpu_has_amx_bf16() || bc->cpu.amx < 0) {
            rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                          "cpu.attn bf16 (KILN_CPU_ATTN): needs AMX-BF16 and AVX512-BF16 on the avx512 path and the "
                          "OS's grant of the tile state (here: the %s path%s)", kiln_isa_name(c->ctx.isa),
                          kiln_cpu_has_amx_bf16() ? (bc->cpu.amx < 0 ? ", AMX turned off" : "") : ", no AMX-BF16");
            goto fail;
        }
        if (!KILN_CPU_ATTN_AMX_HD_OK(mc->head_dim) || bc->tp_size > 1) {
            rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                          "cpu.attn bf16 (KILN_CPU_ATTN): head_dim %d (a multiple of 32 up to 256) and no tensor "
                          "parallelism (tp_size %d)", mc->head_dim, bc->tp_size);
            goto fail;
        }
        c->attn_amx_bytes = kiln_cpu_attn_amx_bytes(mc->n_heads / mc->n_kv_heads, c->q_block, mc->head_dim,
                                                    bc->max_model_len);
        c->attn_amx = kiln_malloc_aligned((size_t)kiln_pool_size(c->ctx.pool) * c->attn_amx_bytes);
        if (!c->attn_amx) {
            rc = KILN_ERR(err, KILN_ERR_OOM, "cpu backend: out of memory for the bf16 attention scratch");
            goto fail;
        }
        sb += (size_t)kiln_pool_size(c->ctx.pool) * c->attn_amx_bytes;
    }
    c->scores = alloc_f32((size_t)kiln_pool_size(c->ctx.pool) * c->q_block * (mc->n_heads / mc->n_kv_heads) *
                              bc->max_model_len, &sb);
    /* logits rows: one per sequence, or max_logits_per_seq per sequence (at most one per row) */
    size_t LR = bc->max_logits_per_seq > 1 ? S * (size_t)bc->max_logits_per_seq : S;
    if (LR > T && LR > S) LR = T > S ? T : S;
    c->logits = alloc_f32(LR * mc->vocab_size, &sb);
    /* also the FP8 path's scratch: 4 rows of quantized activations and their scales */
    size_t fp8_need = 8 * (size_t)(mc->hidden_dim > mc->dim ? mc->hidden_dim : mc->dim) + 8 * qd;
    c->ctx.panel_floats = PANEL_FLOATS > fp8_need ? PANEL_FLOATS : fp8_need;
    c->ctx.panel = alloc_f32((size_t)kiln_pool_size(c->ctx.pool) * c->ctx.panel_floats, &sb);
    c->ctx.xperm_floats = T * (size_t)(mc->hidden_dim > mc->dim ? mc->hidden_dim : mc->dim);
    c->ctx.xperm = alloc_f32(c->ctx.xperm_floats, &sb);
    c->logit_rows = kiln_calloc(S, sizeof(int32_t));
    c->tok_in = kiln_calloc(T, sizeof(int32_t));
    int outs_ok = 1;
    for (int i = 0; i < NSLOT; i++) outs_ok &= kiln_cpu_sample_out_init(&c->out[i], (int)S);
    c->last_slot = -1;
    if (bc->sample) { /* the penalty tables ([max_seqs][V] x 5 bytes) only when the engine asks */
        if ((rc = kiln_cpu_sampler_init(&c->smp, mc->vocab_size, (int)S, err))) goto fail;
        sb += S * (size_t)mc->vocab_size * (sizeof(int32_t) + 1);
    }
    if (bc->tp_size > 1) {
        if ((rc = kiln_cpu_tp_create(&c->tp, m, bc, kiln_pool_size(c->ctx.pool), LR, err))) goto fail;
        size_t tkv = 0, tsb = 0;
        kiln_cpu_tp_memory(c->tp, &tkv, &tsb);
        c->kv_bytes += tkv;
        sb += tsb;
    }
    c->scratch_bytes = sb;
    if ((!c->kv && !c->kv8 && !c->kv16 && !c->tp) || !c->x || !c->xn || !c->q || !c->k || !c->v || !c->att || !c->gate || !c->up ||
        !c->scores || !c->ctx.panel || !c->ctx.xperm || !c->rope_cs || !c->rope_sn || !c->logits || !c->logit_rows ||
        !c->tok_in || !outs_ok) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "cpu backend: cannot allocate KV pool (%.1f MiB) and scratch (%.1f MiB)",
                      c->kv_bytes / 1048576.0, sb / 1048576.0);
        goto fail;
    }
    /* The pool is not cleared: attention reads only slots written in this or an earlier step
     * (positions <= the query's), and untouched pages cost nothing until used. */
    *out = &c->base;
    return KILN_OK;
fail:
    cpu_destroy(&c->base);
    return rc;
}

/* Write this step's K and V rows into the pool at their slots (16-bit pool: the ISA's narrow,
 * round to nearest even; FP8 pool: the E4M3 code of real / scale, kiln_f32_to_e4m3: round to
 * nearest even, saturating). */
static void kv_write(cpu_backend *c, const kiln_step *s, int layer) {
    const kiln_config *mc = &c->m->cfg;
    const kiln_kv_layout *L = &c->cfg.kv;
    int hd = mc->head_dim, bf = L->dtype == KILN_KV_BF16;
    for (int t = 0; t < s->n_tokens; t++) {
        int64_t slot = s->slot_mapping[t];
        int64_t blk = slot / L->block_size;
        int off = (int)(slot % L->block_size);
        for (int h = 0; h < mc->n_kv_heads; h++) {
            int64_t ko = kiln_kv_offset(L, layer, blk, 0, h, off), vo = kiln_kv_offset(L, layer, blk, 1, h, off);
            const float *kr = c->k + (size_t)t * mc->n_kv_heads * hd + (size_t)h * hd;
            const float *vr = c->v + (size_t)t * mc->n_kv_heads * hd + (size_t)h * hd;
            if (c->kv16) { /* round to nearest even, as the GPU's bf16 pool */
                c->attn.narrow(kr, c->kv16 + ko, hd, bf);
                c->attn.narrow(vr, c->kv16 + vo, hd, bf);
            } else if (c->kv8) {
                const float ks = c->kv_scale[2 * layer], vs = c->kv_scale[2 * layer + 1];
                for (int d = 0; d < hd; d++) {
                    c->kv8[ko + d] = kiln_f32_to_e4m3(kr[d] / ks);
                    c->kv8[vo + d] = kiln_f32_to_e4m3(vr[d] / vs);
                }
            } else {
                memcpy(c->kv + ko, kr, hd * sizeof(float));
                memcpy(c->kv + vo, vr, hd * sizeof(float));
            }
        }
    }
}

static int cpu_encode(kiln_backend *b, const kiln_step *s, kiln_error *err) {
    cpu_backend *c = (cpu_backend *)b;
    const kiln_model *m = c->m;
    const kiln_config *mc = &m->cfg;
    int rc = kiln_backend_check_step(&c->cfg, mc->vocab_size, 0, s, err); /* I2 */
    if (rc) return rc;
    if (c->n_pending == 2)
        return KILN_ERR(err, KILN_ERR_INTERNAL, "cpu backend: encode_step with two steps in flight");
    if (c->n_pending == 1 && !c->slot_sampled[c->queue[0]])
        return KILN_ERR(err, KILN_ERR_INTERNAL, "cpu backend: encode_step while a step without device sampling is pending");
    if (s->device_sample && !c->cfg.sample)
        return KILN_ERR(err, KILN_ERR_INTERNAL, "cpu backend: a step to sample, but created without sampling");
    int T = s->n_tokens, D = mc->dim;
    /* input tokens; a row with prev_row >= 0 takes the previous encoded step's draw */
    for (int t = 0; t < T; t++) {
        int pr = s->n_prev > 0 ? s->prev_row[t] : -1;
        if (pr < 0) { c->tok_in[t] = s->token_ids[t]; continue; }
        int ls = c->last_slot;
        if (ls < 0 || !c->slot_sampled[ls] || pr >= c->slot_n_logits[ls])
            return KILN_ERR(err, KILN_ERR_RANGE, "step: row %d takes logits row %d of a previous step that drew %d tokens", t,
                            pr, ls < 0 || !c->slot_sampled[ls] ? 0 : c->slot_n_logits[ls]);
        c->tok_in[t] = c->out[ls].tokens[pr];
    }
    for (int t = 0; t < T; t++) {
        const unsigned char *row = (const unsigned char *)m->tok_embd->data +
                                   kiln_dtype_row_bytes(m->tok_embd->dtype, D) * (size_t)c->tok_in[t];
        if (kiln_row_to_f32(m->tok_embd->dtype, row, D, c->x + (size_t)t * D))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: cannot read %s embedding rows",
                            kiln_dtype_name(m->tok_embd->dtype));
    }
    kiln_cpu_rope_angles_inv(c->rope_cs, c->rope_sn, s->positions, T, mc->head_dim / 2, c->rope_inv, c->rope_mscale);
    int n = 0;
    if (c->tp) {
        if ((rc = kiln_cpu_tp_forward(c->tp, &c->ctx, &c->attn, c->scores, c->q_block, s, c->x, c->xn, c->rope_cs, c->rope_sn,
                                      c->logits, &n, err)))
            return rc;
        goto logits_done;
    }
    for (int l = 0; l < mc->n_layers; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        kiln_cpu_rmsnorm(&c->ctx, c->xn, c->x, w->attn_norm, T, D, mc->norm_eps);
        float *const qkv[3] = {c->q, c->k, c->v};
        const kiln_tensor *const wqkv[3] = {w->wq, w->wk, w->wv};
        if ((rc = kiln_cpu_matmul_multi(&c->ctx, 3, qkv, c->xn, T, wqkv, err))) return rc;
        if (w->bq) { /* Qwen2: q [T][H*hd], k / v [T][KV*hd] + their biases */
            kiln_cpu_add_bias(c->q, w->bq, T, mc->n_heads * mc->head_dim);
            kiln_cpu_add_bias(c->k, w->bk, T, mc->n_kv_heads * mc->head_dim);
            kiln_cpu_add_bias(c->v, w->bv, T, mc->n_kv_heads * mc->head_dim);
        }
        if (w->q_norm) { /* Qwen3: RMSNorm over each head's hd values, before RoPE */
            kiln_cpu_rmsnorm(&c->ctx, c->q, c->q, w->q_norm, T * mc->n_heads, mc->head_dim, mc->norm_eps);
            kiln_cpu_rmsnorm(&c->ctx, c->k, c->k, w->k_norm, T * mc->n_kv_heads, mc->head_dim, mc->norm_eps);
        }
        kiln_cpu_rope_apply(&c->ctx, c->q, c->rope_cs, c->rope_sn, T, mc->n_heads, mc->head_dim, mc->rope_style);
        kiln_cpu_rope_apply(&c->ctx, c->k, c->rope_cs, c->rope_sn, T, mc->n_kv_heads, mc->head_dim, mc->rope_style);
        kv_write(c, s, l);
        kiln_cpu_attn_args aa = {
            .kv = c->kv, .layout = &c->cfg.kv, .layer = l,
            .kv8 = c->kv8, .kv16 = c->kv16, .kvbuf = c->kvbuf,
            .kv8_lut = c->kv8 ? c->kv_lut + (size_t)2 * l * 256 : NULL,
            .n_tokens = T, .n_seqs = s->n_seqs, .positions = s->positions, .seq_q_start = s->seq_q_start,
            .block_table = s->block_table, .max_blocks_per_seq = s->max_blocks_per_seq,
            .q = c->q, .att = c->att, .n_heads = mc->n_heads, .n_kv_heads = mc->n_kv_heads, .head_dim = mc->head_dim,
            .scores = c->scores, .max_model_len = c->cfg.max_model_len, .k = c->attn,
            .prefetch = T <= 16, /* small steps (decode) */
            .window = w->window, .q_block = c->q_block, .amx = c->attn_amx, .amx_bytes = c->attn_amx_bytes,
        };
        if ((rc = kiln_cpu_attention(&c->ctx, &aa, err))) return rc;
        if ((rc = kiln_cpu_matmul(&c->ctx, c->xn, c->att, T, w->wo, err))) return rc;
        kiln_cpu_add(&c->ctx, c->x, c->xn, (int64_t)T * D);
        kiln_cpu_rmsnorm(&c->ctx, c->xn, c->x, w->ffn_norm, T, D, mc->norm_eps);
        if (w->router) { /* mixture of experts (moe.c) */
            if ((rc = kiln_cpu_moe_ffn(&c->ctx, w, mc, T, c->xn, c->moe_out, c->gate, c->up, c->moe_scratch, err)))
                return rc;
            kiln_cpu_add(&c->ctx, c->x, c->moe_out, (int64_t)T * D);
            continue;
        }
        if ((rc = kiln_cpu_matmul_swiglu(&c->ctx, c->gate, c->up, c->xn, T, w->w_gate, w->w_up, err)))
            return rc;
        if ((rc = kiln_cpu_matmul(&c->ctx, c->xn, c->gate, T, w->w_down, err))) return rc;
        kiln_cpu_add(&c->ctx, c->x, c->xn, (int64_t)T * D);
    }
    /* gather the rows that need logits, in sequence order: the last seq_logits[i] rows of each
     * sequence (one for generation, k for speculative verification), in row order */
    for (int i = 0; i < s->n_seqs; i++)
        for (int row = s->seq_q_start[i + 1] - s->seq_logits[i]; row < s->seq_q_start[i + 1]; row++, n++)
            kiln_cpu_rmsnorm(&c->ctx, c->xn + (size_t)n * D, c->x + (size_t)row * D, m->out_norm, 1, D, mc->norm_eps);
    if (n > 0 && (rc = kiln_cpu_matmul(&c->ctx, c->logits, c->xn, n, m->lm_head, err))) return rc;
logits_done:; /* tensor parallelism: cpu_tp.c wrote the logits */
    /* the result slot: neither pending nor the one last returned (NSLOT = 3) */
    int slot = (c->last_slot + 1) % NSLOT;
    if (c->last_slot < 0) slot = 0;
    if (s->device_sample && n > 0) kiln_cpu_sample_step(&c->smp, s, c->logits, n, &c->out[slot]);
    c->slot_n_logits[slot] = n;
    c->slot_sampled[slot] = s->device_sample != 0;
    c->last_slot = slot;
    c->queue[c->n_pending++] = slot;
    return KILN_OK;
}

static int cpu_finish(kiln_backend *b, kiln_step_result *r, kiln_error *err) {
    cpu_backend *c = (cpu_backend *)b;
    if (c->n_pending == 0) return KILN_ERR(err, KILN_ERR_INTERNAL, "cpu backend: finish_step without encode_step");
    int slot = c->queue[0];
    c->queue[0] = c->queue[1];
    c->n_pending--;
    b->n_syncs++; /* the CPU computes inside encode; this is the step's one (trivial) wait */
    memset(r, 0, sizeof *r);
    r->n_logits = c->slot_n_logits[slot];
    r->vocab = c->m->cfg.vocab_size;
    if (c->slot_sampled[slot]) {
        r->tokens = c->out[slot].tokens;
        r->logprob = c->out[slot].logprob;
        r->top_ids = c->out[slot].top_ids;
        r->top_lp = c->out[slot].top_lp;
    } else {
        r->logits = c->logits;
    }
    return KILN_OK;
}

static void cpu_memory(const kiln_backend *b, size_t *kv_bytes, size_t *scratch_bytes) {
    const cpu_backend *c = (const cpu_backend *)b;
    if (kv_bytes) *kv_bytes = c->kv_bytes;
    if (scratch_bytes) *scratch_bytes = c->scratch_bytes;
}

static const kiln_backend_ops k_cpu_ops = {
    .name = "cpu",
    .kv_dtype = KILN_KV_F32,
    .kv_dtypes = (1u << KILN_KV_F32) | (1u << KILN_KV_F16) | (1u << KILN_KV_BF16) |
                 (1u << KILN_KV_FP8_E4M3), /* fp8: E4M3, per-layer k / v scales */
    .max_logits_per_seq = K_CPU_MAX_LOGITS,
    .check_weight = cpu_check_weight,
    .samples = 1,
    .sample_opt_in = 1, /* host sampling unless cpu.backend_sampling */
    .overlap = 1,
    .masks = 1,       /* grammar masks in the step (cpu_sample.c) */
    .create = cpu_create,
    .encode_step = cpu_encode,
    .finish_step = cpu_finish,
    .memory = cpu_memory,
    .destroy = cpu_destroy,
    .features = KILN_FEAT_QKV_BIAS | KILN_FEAT_QK_NORM | KILN_FEAT_ROPE_SCALING | KILN_FEAT_WINDOW | KILN_FEAT_MOE,
};

const kiln_backend_ops *kiln_backend_cpu_ops(void) { return &k_cpu_ops; }
