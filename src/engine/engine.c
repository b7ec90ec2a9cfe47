/* engine.c: the public engine API (kiln.h): open/close, requests, the step, polling.
 *
 * kiln_engine_step(), plain (host sampling, or a backend without overlap):
 *   1. schedule (scheduler.c) -> the step descriptor;
 *   2. backend encode_step (never waits) + finish_step (the step's one wait, counted: I1);
 *   3. for every sequence whose last row produced logits: sample (sampler.c) or take the
 *      backend's draw, append, check stop conditions (output.c); full blocks are registered in
 *      the prefix cache.
 *
 * Overlapped (async) scheduling, as vLLM's "async scheduling": on when the backend draws the
 * tokens and allows two steps in flight (ops.overlap && device_sample; off with the option
 * overlap = -1, KILN_OVERLAP=0 in the kiln command). The step descriptors are double-buffered (steps[2],
 * step_reqs[2]). One call, with step n in flight:
 *   1. build step n+1 into the other buffer while step n runs. A sequence whose step-n row
 *      draws a token has that token "in flight" (r->n_inflight): it gets a decode row at
 *      position n_tokens whose input the backend takes from step n's draw (prev_row = its
 *      logits row in step n); RNG offset and min_tokens count the token in flight; a sequence
 *      whose token in flight reaches max_tokens or the context limit is not scheduled;
 *   2. encode step n+1 (the device queues it behind step n);
 *   3. finish step n (the call's one wait) and apply it. A sequence that finished at step n
 *      (EOS, stop id/string, length) or was aborted still has a row in step n+1: its result
 *      is discarded when step n+1 is applied (requests named by a step in flight are not freed
 *      before: r->n_sched).
 * The first call with nothing in flight encodes step 1, builds and encodes step 2 from it, then
 * waits for step 1. Each call still makes exactly one wait; stats.steps counts the waits (steps
 * finished), stats.overlapped_steps the steps encoded while another was in flight.
 *
 * Drain rule: nothing is preempted while a step is in flight (its sequences' rows and tokens
 * would be lost). When building step n+1 would need a preemption, the partial step is undone
 * (penalty rows given back; blocks already taken stay with their sequences, which need them
 * next anyway) and the call instead finishes step n (its one wait), applies it, and builds
 * step n+1 as without overlap (preemption allowed); that step stays in flight for the next
 * call. kiln_engine_prompt_logits and close first finish a step left in flight.
 *
 * End of the run: a request that ends by length is known when step n+1 is built (no row);
 * one that ends by EOS / stop is only known when step n is applied, after step n+1 was
 * encoded. When that leaves every request finished with step n+1 in flight, the call reports
 * *n_active = 1 and the next call drains it: it encodes nothing and makes the one wait.
 * (A caller that stops calling instead leaves it in flight: the next call that has work
 * finishes it as its one wait, while the new step is encoded.)
 *
 * Why KV blocks can be released on the host while a step that uses them is in flight (a
 * finished or aborted sequence, whose row in step n+1 is discarded): the device runs steps in
 * submission order, and a released block is handed out again only by a step built later,
 * which is encoded after, so the old step's reads and writes of it happen first. The new
 * owner reads only slots it wrote itself (attention covers positions it computed), so junk
 * left in a reused block by the discarded row is never read. The discarded row writes K/V at
 * its sequence's position n_tokens, which lies in a block that is not full of computed tokens,
 * so never in a block registered in the prefix cache. Its penalty-table row, given back, is
 * reloaded (zeroed) by the next owner's load, again in a later step; the discarded draw is
 * counted into it before that. The prefix cache hashes only known tokens: register_blocks
 * covers n_computed, committed when a step is applied, when every computed token is known.
 *
 * Speculative decoding (spec.c, spec_ngram.c, spec_draft.c): a draft model's proposals are made
 * before the step is built; a speculating sequence's k + 1 logits rows are verified, committed
 * and rolled back by kiln_spec_verify when the step is applied (host sampling, no overlap).
 *
 * Time: backend_seconds = encode + finish (the wait) per call; host_seconds = the rest of the
 * call (scheduling, applying, sampling on the host): the host's own work per step.
 * Nothing in the step allocates (I7); tests count allocations through util/alloc.h.
 * The step is a profiler range "kiln_step" where the backend has one (ops.range_push: NVTX on
 * cuda): tools/cuda_trace checks I1 per range.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/log.h"
#include "util/timeutil.h"
#include "util/json.h"

void kiln_engine_options_default(kiln_engine_options *o) {
    memset(o, 0, sizeof *o);
    o->backend = "cpu";
    o->max_seqs = 64;
    o->max_batch_tokens = 2048;
    o->kv_block_size = 16;
    o->enable_prefix_cache = 1;
    o->dummy_seed = 1;
    o->kv_memory_fraction = 0.25;
    kiln_cuda_options *c = &o->cuda;
    c->gemv_max_rows = c->skinny_max_rows = c->wide_min_rows = c->wide_variant = c->glu_fused = c->pdl = -1;
    c->graphs = c->piece_max_rows = c->decode_tc_rows = c->decode_tc_split = c->att_blocks_per_sm = -1;
    c->gate_up_16bit = c->qreg_max_rows = c->fp8_mma_max_rows = c->fp8_fuse_quant = c->gemm_tune = -1;
    c->l2_prefetch_mb = c->l2_prefetch_mode = c->pdl_min_rows = -1;
    c->q8_fuse_quant = c->qreg_variant = -1;
}

void kiln_request_params_default(kiln_request_params *p) {
    memset(p, 0, sizeof *p);
    p->max_tokens = -1;
    p->sampling.temperature = 1.0f;
    p->sampling.top_p = 1.0f;
    p->sampling.repetition_penalty = 1.0f;
}

/* With a window on every layer (e->kv_window), the most blocks one sequence holds at once: the
 * window behind its oldest uncomputed row plus one step's chunk (scheduler.c releases the rest),
 * each end possibly straddling a block. */
static int window_blocks(const kiln_engine *e) {
    int span = e->kv_window - 1 + e->max_batch_tokens;
    int n = (span + e->block_size - 1) / e->block_size + 1;
    return n < e->max_blocks_per_seq ? n : e->max_blocks_per_seq;
}

static void free_step(kiln_step *s) {
    kiln_free(s->token_ids);
    kiln_free(s->positions);
    kiln_free(s->slot_mapping);
    kiln_free(s->seq_q_start);
    kiln_free(s->seq_ctx_len);
    kiln_free(s->block_table);
    kiln_free(s->seq_logits);
    kiln_free(s->sampling);
    kiln_free(s->bias_ids);
    kiln_free(s->bias_values);
    kiln_free(s->supp_ids);
    kiln_free(s->masks);
    kiln_free(s->pen_slot);
    kiln_free(s->pen_start);
    kiln_free(s->pen_n_prompt);
    kiln_free(s->pen_tokens);
    kiln_free(s->prev_row);
    memset(s, 0, sizeof *s);
}

static int alloc_step(kiln_step *s, int max_tokens, int max_seqs, int max_blocks, int max_model_len, int mask_words) {
    memset(s, 0, sizeof *s);
    s->mask_words = mask_words; /* 0: no grammar masks in this engine's steps */
    if (mask_words > 0 && !(s->masks = kiln_calloc((size_t)max_seqs * mask_words, sizeof(uint32_t)))) return 0;
    s->max_tokens = max_tokens;
    s->max_seqs = max_seqs;
    s->max_blocks_per_seq = max_blocks;
    s->token_ids = kiln_calloc((size_t)max_tokens, sizeof(int32_t));
    s->positions = kiln_calloc((size_t)max_tokens, sizeof(int32_t));
    s->slot_mapping = kiln_calloc((size_t)max_tokens, sizeof(int64_t));
    s->seq_q_start = kiln_calloc((size_t)max_seqs + 1, sizeof(int32_t));
    s->seq_ctx_len = kiln_calloc((size_t)max_seqs, sizeof(int32_t));
    s->block_table = kiln_calloc((size_t)max_seqs * max_blocks, sizeof(int32_t));
    s->seq_logits = kiln_calloc((size_t)max_seqs, sizeof(int32_t));
    s->sampling = kiln_calloc((size_t)max_seqs, sizeof(kiln_step_sampling));
    s->bias_ids = kiln_calloc((size_t)max_seqs * KILN_MAX_LOGIT_BIAS, sizeof(int32_t));
    s->bias_values = kiln_calloc((size_t)max_seqs * KILN_MAX_LOGIT_BIAS, sizeof(float));
    s->supp_ids = kiln_calloc((size_t)max_seqs * (KILN_MAX_EOS + KILN_MAX_STOP_IDS), sizeof(int32_t));
    s->pen_slot = kiln_calloc((size_t)max_seqs, sizeof(int32_t));
    s->pen_start = kiln_calloc((size_t)max_seqs + 1, sizeof(int32_t));
    s->pen_n_prompt = kiln_calloc((size_t)max_seqs, sizeof(int32_t));
    s->cap_pen_tokens = max_model_len + max_tokens;
    s->pen_tokens = kiln_calloc((size_t)s->cap_pen_tokens, sizeof(int32_t));
    s->prev_row = kiln_malloc((size_t)max_tokens * sizeof(int32_t));
    if (s->prev_row)
        for (int t = 0; t < max_tokens; t++) s->prev_row[t] = -1;
    return s->prev_row && s->token_ids && s->positions && s->slot_mapping && s->seq_q_start && s->seq_ctx_len &&
           s->block_table && s->seq_logits && s->sampling && s->bias_ids && s->bias_values && s->supp_ids &&
           s->pen_slot && s->pen_start && s->pen_n_prompt && s->pen_tokens;
}

static size_t phys_mem_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz : (size_t)8 << 30;
}

int kiln_engine_open(kiln_engine **out, const kiln_engine_options *o, kiln_error *err) {
    *out = NULL;
    kiln_json_enter(); /* jansson under the allocation hook, before any thread of ours */
    kiln_engine *e = kiln_calloc(1, sizeof *e);
    if (!e) return KILN_ERR(err, KILN_ERR_OOM, "engine: out of memory");
    e->opt = *o;
    e->pending = -1;
    int rc;
    e->strict = o->strict > 0;
    e->ops = kiln_backend_find(o->backend);
    if (!e->ops) {
        char why[sizeof err->msg - 64];
        kiln_backend_unavailable(o->backend, why, sizeof why);
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s", why);
        goto fail;
    }
    if (!o->model_path) { rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: no model path"); goto fail; }
    if (o->n_devices < 0 || o->n_devices > KILN_MAX_DEVICES) {
        rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: %d devices (0 .. %d)", o->n_devices, KILN_MAX_DEVICES);
        goto fail;
    }
    if (o->tensor_parallel_size < 0 || o->tensor_parallel_size > KILN_MAX_DEVICES ||
        (o->tensor_parallel_size > 1 && o->n_devices > 1 && o->n_devices != o->tensor_parallel_size)) {
        rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: tensor_parallel_size %d (0 .. %d) with %d devices listed",
                      o->tensor_parallel_size, KILN_MAX_DEVICES, o->n_devices);
        goto fail;
    }
    kiln_kv_dtype kv_dtype = e->ops->kv_dtype;
    if (o->kv_cache_dtype && *o->kv_cache_dtype && strcmp(o->kv_cache_dtype, "auto") != 0) {
        int t = kiln_kv_dtype_from_name(o->kv_cache_dtype);
        if (t < 0) {
            rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: unknown kv_cache_dtype '%s' (auto, f32, bf16, f16, fp8)",
                          o->kv_cache_dtype);
            goto fail;
        }
        unsigned can = e->ops->kv_dtypes ? e->ops->kv_dtypes : 1u << e->ops->kv_dtype;
        if (!(can & (1u << t))) {
            rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "engine: a %s KV cache is not supported by the %s backend (it holds %s)",
                          kiln_kv_dtype_name((kiln_kv_dtype)t), e->ops->name, kiln_kv_dtype_name(e->ops->kv_dtype));
            goto fail;
        }
        kv_dtype = (kiln_kv_dtype)t;
    }
    if (o->load_dummy)
        /* a GPU backend fills dummy matrices on the device (same values): no host copy */
        rc = kiln_model_load_dummy_quant(&e->model, o->model_path, o->dummy_seed, strcmp(e->ops->name, "cuda") != 0,
                                         o->dummy_quant, err);
    else
        rc = kiln_model_load(&e->model, o->model_path, err);
    if (rc) goto fail;
    if (o->quantization && *o->quantization) { /* online FP8 (model/fp8.c) */
        int pc = !strcmp(o->quantization, "fp8-per-channel");
        if (strcmp(o->quantization, "fp8") != 0 && !pc) {
            rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: quantization '%s' is not supported (fp8, fp8-per-channel)",
                          o->quantization);
            goto fail;
        }
        if (e->model->fp8.format == KILN_FP8_NONE) {
            if ((rc = kiln_model_quantize_fp8(e->model, pc ? KILN_SCALE_CHANNEL : KILN_SCALE_TENSOR, err))) goto fail;
        } else if (pc) {
            rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: quantization fp8-per-channel on a checkpoint that is FP8 "
                          "already (%s)", kiln_fp8_format_name(e->model->fp8.format));
            goto fail;
        }
    }
    /* I3: a model feature the backend does not run (ops.features) is refused at load */
    if ((rc = kiln_backend_check_model(e->ops, e->model, err))) goto fail;
    const kiln_config *mc = &e->model->cfg;
    /* windows on every layer: KV blocks no query can see any more are released (scheduler.c);
     * a model with some full-attention layers keeps them all (one block id covers every layer) */
    e->kv_window = 0;
    for (int l = 0; l < mc->n_layers; l++) {
        int w = e->model->layers[l].window;
        if (w <= 0) { e->kv_window = 0; break; }
        if (w > e->kv_window) e->kv_window = w;
    }

    const char *tp = o->tokenizer_path ? o->tokenizer_path : e->model->tokenizer_path;
    if (tp && *tp && !o->skip_tokenizer) {
        if ((rc = kiln_tokenizer_load(&e->tok, tp, err))) goto fail;
        if (kiln_tokenizer_vocab_size(e->tok) > mc->vocab_size)
            KILN_WARN("tokenizer has %d tokens, the model %d", kiln_tokenizer_vocab_size(e->tok), mc->vocab_size);
        if ((rc = kiln_engine_grammar_init(e, err))) goto fail;
    }

    e->block_size = o->kv_block_size > 0 ? o->kv_block_size : 16;
    e->max_model_len = o->max_model_len > 0 && o->max_model_len < mc->max_seq_len ? o->max_model_len : mc->max_seq_len;
    e->max_seqs = o->max_seqs > 0 ? o->max_seqs : 64;
    e->max_batch_tokens = o->max_batch_tokens > 0 ? o->max_batch_tokens : 2048;
    e->max_blocks_per_seq = (e->max_model_len + e->block_size - 1) / e->block_size;
    {
        /* scratch_pool_mb (KILN_SCRATCH_POOL_MB) caps the step's rows: the scratch of one row
         * (activations x, xn, q, k, v, attention out, gate, up in f32) times max_batch_tokens
         * must fit. */
        size_t per_row = (size_t)(2 * mc->dim + 2 * mc->n_heads * mc->head_dim + 2 * mc->n_kv_heads * mc->head_dim +
                                  2 * mc->hidden_dim) * sizeof(float);
        size_t pool_mb = o->scratch_pool_mb;
        if (pool_mb > 0) {
            size_t rows = pool_mb > ((size_t)1 << 30) ? SIZE_MAX : (pool_mb << 20) / per_row;
            if (rows < 1) {
                rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "scratch_pool_mb (KILN_SCRATCH_POOL_MB) = %zu holds no step row (%zu bytes each)",
                              pool_mb, per_row);
                goto fail;
            }
            if (rows < (size_t)e->max_batch_tokens) e->max_batch_tokens = (int)rows;
        }
        e->scratch_row_bytes = per_row;
    }

    e->kv_layout.n_layers = mc->n_layers;
    e->kv_layout.n_kv_heads = mc->n_kv_heads;
    e->kv_layout.head_dim = mc->head_dim;
    e->kv_layout.block_size = e->block_size;
    e->kv_layout.dtype = kv_dtype;
    /* an FP8 pool keeps one scale for K and one for V per layer (vLLM's k_scale / v_scale) */
    e->kv_layout.scale = kv_dtype == KILN_KV_FP8_E4M3 ? KILN_KV_SCALE_TENSOR : KILN_KV_SCALE_NONE;
    e->kv_layout.elem_bytes = kiln_kv_dtype_bytes(e->kv_layout.dtype);
    size_t block_bytes = (size_t)mc->n_layers * 2 * mc->n_kv_heads * e->block_size * mc->head_dim * (size_t)e->kv_layout.elem_bytes;
    int n_blocks = o->kv_blocks;
    size_t dev_budget = SIZE_MAX; /* the device's room for an automatic pool (ops.kv_budget) */
    if (n_blocks <= 0) {
        double frac = o->kv_memory_fraction > 0 && o->kv_memory_fraction <= 0.95 ? o->kv_memory_fraction : 0.25;
        size_t budget = o->kv_memory_mb ? o->kv_memory_mb << 20 : (size_t)(phys_mem_bytes() * frac);
        /* a device pool: also no more than the device holds beside the weights (ops.kv_budget) */
        if (!o->kv_memory_mb && e->ops->kv_budget)
            dev_budget = e->ops->kv_budget(e->model, o->n_devices > 0 ? o->devices[0] : 0);
        if (dev_budget < budget) budget = dev_budget;
        /* every sequence at its longest (with windows: what it holds at once) */
        size_t want = (size_t)e->max_seqs * (e->kv_window > 0 ? window_blocks(e) : e->max_blocks_per_seq);
        size_t fit = budget / block_bytes;
        n_blocks = (int)((want < fit ? want : fit) + 1);
    } else {
        n_blocks += 1; /* the null block */
    }
    if (n_blocks < 2) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "engine: the KV budget holds no block (%zu bytes each)%s", block_bytes,
                      dev_budget < block_bytes ? ": the device has no room left beside the weights and a 10 % reserve; "
                                                 "set --kv-memory-mb, or use a smaller or quantized model"
                                               : "");
        goto fail;
    }
    e->kv_layout.n_blocks = n_blocks;
    if ((rc = kiln_kv_cache_create(&e->kv, n_blocks, e->block_size, o->enable_prefix_cache >= 0, err))) goto fail;
    if (o->faults.truncate_hash_bits > 0) kiln_kv_truncate_hash(e->kv, o->faults.truncate_hash_bits);

    /* host_sampling (KILN_HOST_SAMPLING=1): sample in the engine from host logits even when the
     * backend can draw on the device (the reference the GPU sampler is tested against) */
    e->device_sample = e->ops->samples && o->host_sampling <= 0;
    /* a backend whose sampler is opt-in (cpu) draws only with cpu.backend_sampling
     * (KILN_CPU_SAMPLE=1) */
    if (e->ops->sample_opt_in && o->cpu.backend_sampling <= 0) e->device_sample = 0;
    /* fault injection (read once, here): faults.extra_sync makes every step wait twice (I1
     * broken on purpose); faults.break_batch perturbs the logits of the second sequence of a
     * batched step (I5 broken on purpose), which needs host logits, so it turns device
     * sampling and overlap off. They let `kiln validate` prove its checks can fail. */
    e->fault_extra_sync = o->faults.extra_sync > 0;
    e->fault_break_batch = o->faults.break_batch > 0;
    /* overlapped scheduling: the backend allows two steps in flight and draws the tokens itself;
     * off with the option overlap = -1 (KILN_OVERLAP=0) */
    e->overlap = e->ops->overlap && e->device_sample && o->overlap >= 0 && !e->fault_break_batch;
    /* constrained rows drawn on the device: the scheduler sends each one's grammar mask with the
     * step (scheduler.c add_sampling); a backend without masks refuses them (constraint.c) */
    e->device_masks = e->device_sample && e->ops->masks && e->gmu_init;
    e->jump_forward = o->jump_forward > 0;
    /* speculative decoding (spec.c): refused by name where the backend cannot verify */
    if ((rc = kiln_spec_init(e, o, err))) goto fail;
    /* the chunked-prefill ITL policy (scheduler.c, step_cost.h) */
    {
        const kiln_sched_options *so = &o->sched;
        if (!(so->max_itl_ms >= 0) || !(so->max_step_ms >= 0) || !(so->cost_fixed_ms >= 0) ||
            !(so->cost_token_ms >= 0) || !(so->cost_row_ms >= 0) || !(so->cost_kkey_ms >= 0) ||
            so->min_prefill_chunk < 0 || !(so->cost_decay >= 0 && so->cost_decay <= 1)) {
            rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: sched options out of range (max_itl_ms %g, "
                          "max_step_ms %g, min_prefill_chunk %d, cost %g/%g/%g/%g ms, decay %g)", so->max_itl_ms,
                          so->max_step_ms, so->min_prefill_chunk, so->cost_fixed_ms, so->cost_token_ms,
                          so->cost_row_ms, so->cost_kkey_ms, so->cost_decay);
            goto fail;
        }
        double prior[3] = {so->cost_fixed_ms, so->cost_token_ms, so->cost_row_ms};
        e->itl_target_ms = so->max_itl_ms;
        e->step_target_ms = so->max_step_ms;
        e->itl_min_chunk = so->min_prefill_chunk > 0 ? so->min_prefill_chunk : 16;
        kiln_step_cost_init(&e->cost, prior, so->cost_kkey_ms, so->cost_decay, so->cost_learn >= 0);
        e->stats.sched_max_itl_ms = e->itl_target_ms;
        e->stats.sched_max_step_ms = e->step_target_ms;
    }
    kiln_backend_config bc = {
        .max_tokens = e->max_batch_tokens,
        .max_seqs = e->max_seqs,
        .max_blocks_per_seq = e->max_blocks_per_seq,
        .max_model_len = e->max_model_len,
        .kv_window = e->kv_window,
        .kv = e->kv_layout,
        .n_threads = o->n_threads,
        .strict = e->strict,
        .batch_invariant = o->batch_invariant > 0,
        .sample = e->device_sample,
        .max_logits_per_seq = e->spec_k > 0 ? e->spec_k + 1 : 0, /* verification rows */
        .sample_rows = e->spec_k > 0 && e->device_sample, /* drawn on the device (spec.c) */
        .masks = e->device_masks,
        .n_devices = o->n_devices,
        .tp_size = o->tensor_parallel_size,
        .cpu = o->cpu,
        .cuda = o->cuda,
    };
    memcpy(bc.devices, o->devices, sizeof bc.devices);
    if ((rc = e->ops->create(&e->backend, e->model, &bc, err))) goto fail;
    if ((rc = kiln_sampler_init(&e->sampler, mc->vocab_size, err))) goto fail;
    if (e->spec_k > 0 && o->draft_model_path && *o->draft_model_path) { /* the draft model (spec_draft.c) */
        if ((rc = kiln_draft_open(e, o->draft_model_path, err))) goto fail;
        if (!(e->spec_p = kiln_malloc((size_t)mc->vocab_size * sizeof(float)))) {
            rc = KILN_ERR(err, KILN_ERR_OOM, "engine: out of memory");
            goto fail;
        }
    }
    for (int k = 0; k < 2; k++) {
        if (!alloc_step(&e->steps[k], e->max_batch_tokens, e->max_seqs, e->max_blocks_per_seq, e->max_model_len,
                        e->device_masks ? (mc->vocab_size + 31) / 32 : 0)) {
            rc = KILN_ERR(err, KILN_ERR_OOM, "engine: out of memory for the step buffers");
            goto fail;
        }
        e->step_reqs[k] = kiln_calloc((size_t)e->max_seqs, sizeof(kiln_req *));
        if (!e->step_reqs[k]) { rc = KILN_ERR(err, KILN_ERR_OOM, "engine: out of memory"); goto fail; }
    }
    e->running = kiln_calloc((size_t)e->max_seqs, sizeof(kiln_req *));
    e->free_pen = kiln_calloc((size_t)e->max_seqs, sizeof(int32_t));
    if (!e->running || !e->free_pen) { rc = KILN_ERR(err, KILN_ERR_OOM, "engine: out of memory"); goto fail; }
    for (int i = 0; i < e->max_seqs; i++) e->free_pen[i] = e->max_seqs - 1 - i;
    e->n_free_pen = e->max_seqs;
    e->next_id = 1;
    e->stats.max_model_len = e->max_model_len;
    e->stats.vocab_size = mc->vocab_size;
    *out = e;
    return KILN_OK;
fail:
    kiln_engine_close(e);
    return rc;
}

static int drain(kiln_engine *e, kiln_error *err);

void kiln_engine_close(kiln_engine *e) {
    if (!e) return;
    if (e->pending >= 0) { /* a step still in flight: wait for it before the buffers go */
        kiln_error err2;
        (void)drain(e, &err2);
    }
    for (int i = 0; i < e->n_reqs; i++) kiln_req_free(e->reqs[i]);
    kiln_free(e->reqs);
    kiln_free(e->running);
    kiln_free(e->free_pen);
    kiln_free(e->waiting);
    kiln_free(e->suppress);
    for (int k = 0; k < 2; k++) {
        free_step(&e->steps[k]);
        kiln_free(e->step_reqs[k]);
    }
    kiln_sampler_free(&e->sampler);
    kiln_draft_close(e);
    kiln_free(e->spec_p);
    if (e->backend) e->ops->destroy(e->backend);
    kiln_kv_cache_destroy(e->kv);
    kiln_engine_free_grammars(e);
    kiln_free(e->gmask);
    kiln_tokenizer_free(e->tok);
    kiln_model_free(e->model);
    kiln_free(e);
}

static kiln_req *find_req(kiln_engine *e, uint64_t id, int *index) {
    for (int i = 0; i < e->n_reqs; i++)
        if (e->reqs[i]->id == id) {
            if (index) *index = i;
            return e->reqs[i];
        }
    return NULL;
}

static void drop_req(kiln_engine *e, int i) {
    kiln_req *r = e->reqs[i];
    e->reqs[i] = e->reqs[--e->n_reqs];
    kiln_req_free(r);
}

/* Requests whose final output was polled are released here, outside the step. */
static void release_reported(kiln_engine *e) {
    for (int i = 0; i < e->n_reqs;) /* not while a step in flight still names it */
        if (e->reqs[i]->reported_final && e->reqs[i]->n_sched == 0) drop_req(e, i); else i++;
}

int kiln_engine_add_request(kiln_engine *e, const kiln_request_params *p, uint64_t *req_id, kiln_error *err) {
    const kiln_config *mc = &e->model->cfg;
    const kiln_sampling *sp = &p->sampling;
    release_reported(e);
    if (!p->prompt_ids || p->n_prompt <= 0)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "the prompt is empty");
    for (int i = 0; i < p->n_prompt; i++)
        if (p->prompt_ids[i] < 0 || p->prompt_ids[i] >= mc->vocab_size)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "prompt token %d at position %d is outside the vocabulary (0..%d)",
                            p->prompt_ids[i], i, mc->vocab_size - 1);
    if (p->max_tokens == 0 || p->max_tokens < -1)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "max_tokens must be >= 1 (got %d)", p->max_tokens);
    if (p->min_tokens < 0)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "min_tokens must be >= 0 (got %d)", p->min_tokens);
    if (p->max_tokens > 0 && p->min_tokens > p->max_tokens)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "min_tokens (%d) must be <= max_tokens (%d)", p->min_tokens, p->max_tokens);
    if (!(sp->temperature >= 0.0f) || sp->temperature > 1e4f)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "temperature must be >= 0 (got %g)", (double)sp->temperature);
    if (!(sp->top_p > 0.0f && sp->top_p <= 1.0f))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "top_p must be in (0, 1] (got %g)", (double)sp->top_p);
    if (sp->top_k < 0 && sp->top_k != -1)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "top_k must be -1 (off) or >= 0 (got %d)", sp->top_k);
    if (!(sp->min_p >= 0.0f && sp->min_p <= 1.0f))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "min_p must be in [0, 1] (got %g)", (double)sp->min_p);
    if (!(sp->repetition_penalty > 0.0f && sp->repetition_penalty <= 100.0f))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "repetition_penalty must be in (0, 100] (got %g)", (double)sp->repetition_penalty);
    if (!(sp->presence_penalty >= -2.0f && sp->presence_penalty <= 2.0f))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "presence_penalty must be in [-2, 2] (got %g)", (double)sp->presence_penalty);
    if (!(sp->frequency_penalty >= -2.0f && sp->frequency_penalty <= 2.0f))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "frequency_penalty must be in [-2, 2] (got %g)", (double)sp->frequency_penalty);
    if (sp->n_logprobs < 0 || sp->n_logprobs > 20)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "logprobs must be in [0, 20] (got %d)", sp->n_logprobs);
    if (p->n_stop_ids < 0 || p->n_stop_ids > KILN_MAX_STOP_IDS)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "at most %d stop token ids (got %d)", KILN_MAX_STOP_IDS, p->n_stop_ids);
    if (sp->n_bias < 0 || sp->n_bias > KILN_MAX_LOGIT_BIAS)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "at most %d logit_bias entries (got %d)", KILN_MAX_LOGIT_BIAS, sp->n_bias);
    for (int i = 0; i < p->n_stop_ids; i++)
        if (p->stop_ids[i] < 0 || p->stop_ids[i] >= mc->vocab_size)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "stop token id %d is outside the vocabulary (0..%d)",
                            p->stop_ids[i], mc->vocab_size - 1);
    for (int i = 0; i < sp->n_bias; i++)
        if (sp->bias_ids[i] < 0 || sp->bias_ids[i] >= mc->vocab_size)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "logit_bias token id %d is outside the vocabulary", sp->bias_ids[i]);
    for (int i = 0; i < p->n_stop_strings; i++)
        if (!p->stop_strings[i] || !p->stop_strings[i][0])
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "stop strings must be non-empty");
    if (p->n_prompt >= e->max_model_len)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                        "this model's maximum context length is %d tokens; the prompt has %d tokens and no room is left to generate",
                        e->max_model_len, p->n_prompt);
    int room = e->max_model_len - p->n_prompt;
    if (p->max_tokens > room)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                        "this model's maximum context length is %d tokens; %d prompt tokens + %d max_tokens exceed it",
                        e->max_model_len, p->n_prompt, p->max_tokens);
    int max_new = p->max_tokens > 0 ? p->max_tokens : room;
    if (p->max_tokens < 0 && e->kv_window <= 0) {
        /* "up to the context limit": also up to what the whole KV pool can hold */
        int pool_tokens = kiln_kv_num_usable(e->kv) * e->block_size;
        if (p->n_prompt + max_new > pool_tokens) max_new = pool_tokens - p->n_prompt;
        if (max_new < 1) max_new = 1; /* refused just below: the prompt alone does not fit */
    }
    int total_blocks = (p->n_prompt + max_new + e->block_size - 1) / e->block_size;
    if (e->kv_window > 0 && total_blocks > window_blocks(e)) total_blocks = window_blocks(e); /* released as it goes */
    if (total_blocks > kiln_kv_num_usable(e->kv))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "the request needs up to %d KV blocks, the pool has %d (lower max_tokens or enlarge the KV pool)",
                        total_blocks, kiln_kv_num_usable(e->kv));

    kiln_req *r = kiln_calloc(1, sizeof *r);
    if (!r) return KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    r->cap_tokens = p->n_prompt + max_new;
    r->tokens = kiln_malloc((size_t)r->cap_tokens * sizeof(int32_t));
    r->blocks = kiln_calloc((size_t)e->max_blocks_per_seq, sizeof(int32_t));
    r->hashes = kiln_calloc((size_t)e->max_blocks_per_seq, sizeof(kiln_block_hash));
    r->spec = e->spec_k > 0 && !p->no_speculation;
    if (r->spec) r->draft = kiln_calloc(KILN_SPEC_MAX_TOKENS, sizeof(int32_t));
    if (r->spec && e->draft) r->d_blocks = kiln_calloc((size_t)e->max_blocks_per_seq, sizeof(int32_t));
    int ok = r->tokens && r->blocks && r->hashes && (!r->spec || r->draft) && (!r->spec || !e->draft || r->d_blocks);
    if (ok && p->n_stop_ids) {
        r->stop_ids = kiln_malloc((size_t)p->n_stop_ids * sizeof(int32_t));
        ok = r->stop_ids != NULL;
        if (ok) memcpy(r->stop_ids, p->stop_ids, (size_t)p->n_stop_ids * sizeof(int32_t));
        r->n_stop_ids = p->n_stop_ids;
    }
    if (ok && p->n_stop_strings) {
        r->stops = kiln_calloc((size_t)p->n_stop_strings, sizeof(char *));
        ok = r->stops != NULL;
        for (int i = 0; ok && i < p->n_stop_strings; i++) {
            r->stops[i] = kiln_strdup(p->stop_strings[i]);
            ok = r->stops[i] != NULL;
            r->n_stops = i + 1;
            int sl = (int)strlen(p->stop_strings[i]);
            if (sl > r->max_stop_len) r->max_stop_len = sl;
        }
        r->tail_cap = r->max_stop_len + 64;
        if (ok) ok = (r->tail = kiln_malloc((size_t)r->tail_cap)) != NULL;
    }
    r->sp = *sp;
    if (r->sp.top_k < 0) r->sp.top_k = 0;
    if (ok && sp->n_bias) {
        r->bias_ids = kiln_malloc((size_t)sp->n_bias * sizeof(int32_t));
        r->bias_values = kiln_malloc((size_t)sp->n_bias * sizeof(float));
        ok = r->bias_ids && r->bias_values;
        if (ok) {
            memcpy(r->bias_ids, sp->bias_ids, (size_t)sp->n_bias * sizeof(int32_t));
            memcpy(r->bias_values, sp->bias_values, (size_t)sp->n_bias * sizeof(float));
        }
    }
    r->sp.bias_ids = r->bias_ids;
    r->sp.bias_values = r->bias_values;
    if (ok && (sp->logprobs || sp->n_logprobs > 0)) {
        r->lp = kiln_malloc((size_t)max_new * sizeof(float));
        ok = r->lp != NULL;
        if (ok && sp->n_logprobs > 0) ok = (r->top = kiln_malloc((size_t)max_new * sp->n_logprobs * sizeof(kiln_token_logprob))) != NULL;
    }
    /* suppression list for min_tokens: EOS ids + stop ids (sized per the largest request) */
    int ns = e->model->cfg.n_eos + p->n_stop_ids;
    if (ok && ns > e->suppress_cap) {
        int32_t *sb = kiln_realloc(e->suppress, (size_t)ns * sizeof(int32_t));
        ok = sb != NULL;
        if (ok) { e->suppress = sb; e->suppress_cap = ns; }
    }
    if (ok && e->n_reqs == e->cap_reqs) {
        int cap = e->cap_reqs ? e->cap_reqs * 2 : 64;
        kiln_req **nr = kiln_realloc(e->reqs, (size_t)cap * sizeof(kiln_req *));
        kiln_req **nw = nr ? kiln_realloc(e->waiting, (size_t)cap * sizeof(kiln_req *)) : NULL;
        if (nr) e->reqs = nr;
        if (nw) { e->waiting = nw; e->cap_reqs = cap; }
        ok = nr && nw;
    }
    if (!ok) {
        kiln_req_free(r);
        return KILN_ERR(err, KILN_ERR_OOM, "out of memory for a request of %d tokens", p->n_prompt + max_new);
    }
    if (p->grammar) {
        int grc = kiln_req_grammar_init(e, r, p->grammar, err);
        if (grc) {
            kiln_req_free(r); /* the grammar stays the caller's */
            return grc;
        }
    }
    memcpy(r->tokens, p->prompt_ids, (size_t)p->n_prompt * sizeof(int32_t));
    r->n_tokens = r->n_prompt = p->n_prompt;
    r->max_new = max_new;
    r->min_tokens = p->min_tokens;
    r->ignore_eos = p->ignore_eos;
    r->stop_at = -1;
    r->pen_slot = -1;
    r->id = e->next_id++;
    r->seed = sp->has_seed ? sp->seed : (r->id * 0x9E3779B97F4A7C15ull) ^ 0x5DEECE66Dull;
    if (e->tok) {
        /* detokenizers primed with the prompt, so the leading-space rule sees what precedes
         * the output (a SentencePiece first token after BOS loses its space, mid-text not) */
        r->has_detok = 1;
        kiln_detok_init(&r->dstep, e->tok, 1);
        kiln_detok_init(&r->dpoll, e->tok, 1);
        for (int i = 0; i < p->n_prompt; i++) {
            const char *t;
            size_t l;
            kiln_detok_push(&r->dstep, p->prompt_ids[i], &t, &l, NULL);
            kiln_detok_push(&r->dpoll, p->prompt_ids[i], &t, &l, NULL);
        }
    }
    r->state = KILN_REQ_WAITING;
    e->reqs[e->n_reqs++] = r;
    e->waiting[e->n_waiting++] = r;
    e->stats.prompt_tokens_total += (uint64_t)p->n_prompt;
    *req_id = r->id;
    return KILN_OK;
}

int kiln_engine_abort(kiln_engine *e, uint64_t req_id, kiln_error *err) {
    kiln_req *r = find_req(e, req_id, NULL);
    if (!r) return KILN_ERR(err, KILN_ERR_NOT_FOUND, "no request %llu", (unsigned long long)req_id);
    if (r->state == KILN_REQ_FINISHED) return KILN_OK;
    kiln_sched_remove(e, r);
    r->state = KILN_REQ_FINISHED;
    r->finish = KILN_FINISH_ABORT;
    return KILN_OK;
}

/* Register the sequence's full blocks (computed tokens only) in the prefix cache. */
void kiln_req_register_blocks(kiln_engine *e, kiln_req *r) {
    int full = r->n_computed / e->block_size;
    for (int b = r->n_hashed; b < full; b++) {
        const kiln_block_hash *parent = b > 0 ? &r->hashes[b - 1] : NULL;
        kiln_kv_hash_block(e->kv, parent, r->tokens + (size_t)b * e->block_size, &r->hashes[b]);
        kiln_kv_register(e->kv, r->blocks[b], parent, &r->hashes[b], r->tokens + (size_t)b * e->block_size);
    }
    if (full > r->n_hashed) r->n_hashed = full;
}

/* steps[k] was encoded: its rows are scheduled (n_sched) and its draws are in flight. */
static void mark_encoded(kiln_engine *e, int k) {
    const kiln_step *s = &e->steps[k];
    int li = 0;
    for (int i = 0; i < s->n_seqs; i++) {
        kiln_req *r = e->step_reqs[k][i];
        r->n_sched += s->seq_q_start[i + 1] - s->seq_q_start[i];
        if (s->seq_logits[i]) {
            r->n_inflight++;
            r->inflight_row = li; /* (overlap only: one row a sequence then) */
            li += s->seq_logits[i];
        }
    }
}

static int encode(kiln_engine *e, int k, double *t_backend, kiln_error *err) {
    double t = kiln_now();
    e->step_t_begin[k] = e->t_call; /* the step's time starts with the call that built it */
    int rc = e->ops->encode_step(e->backend, &e->steps[k], err);
    *t_backend += kiln_now() - t;
    if (rc) {
        kiln_sched_undo_pen(e, k); /* its penalty rows were never loaded */
        return rc;
    }
    if (e->pending >= 0) e->stats.overlapped_steps++;
    if (e->step_np[k] > 0 && e->step_nd[k] > 0) e->stats.sched_mixed_steps++;
    e->stats.sched_itl_limited_steps += (uint64_t)e->step_cut[k];
    e->stats.sched_step_limited_steps += (uint64_t)e->step_cut_max[k];
    mark_encoded(e, k);
    return KILN_OK;
}

/* Wait for the oldest step in flight, steps[k] (the call's one wait, I1), and apply it: commit
 * the computed rows, register full blocks, append the drawn tokens (sampling them here when the
 * backend returned logits). Rows of sequences that finished or were aborted after steps[k] was
 * encoded are discarded. */
static int finish_process(kiln_engine *e, int k, double *t_backend, kiln_error *err) {
    const kiln_step *s = &e->steps[k];
    kiln_step_result res;
    memset(&res, 0, sizeof res);
    double tb = kiln_now();
    int rc = e->ops->finish_step(e->backend, &res, err);
    *t_backend += kiln_now() - tb;
    if (!rc && e->fault_extra_sync) e->backend->n_syncs++; /* a second wait, as a counting shim sees it */
    if (!rc && e->fault_break_batch && s->n_seqs > 1 && res.n_logits > 1 && res.logits) {
        /* +1e-3 on the largest logit of the second logits row: moves that sequence's
         * logprobs (and near-ties) while a solo run of it is untouched */
        float *row = (float *)res.logits + res.vocab;
        int am = 0;
        for (int j = 1; j < res.vocab; j++) if (row[j] > row[am]) am = j;
        row[am] += 1e-3f;
    }
    if (!rc) e->stats.steps++;
    int used = kiln_kv_num_usable(e->kv) - kiln_kv_num_free(e->kv);
    if (used > e->kv_peak) e->kv_peak = used;
    int li = 0;
    for (int i = 0; i < s->n_seqs; i++) {
        kiln_req *r = e->step_reqs[k][i];
        int n = s->seq_q_start[i + 1] - s->seq_q_start[i], has = s->seq_logits[i], row = has ? li : -1;
        li += has; /* k + 1 rows for a speculating sequence */
        r->n_sched -= n;
        if (has) r->n_inflight--; /* known from here on (or discarded) */
        if (rc || r->state != KILN_REQ_RUNNING) continue;
        if (r->n_computed < r->n_prompt)
            e->stats.prompt_tokens_computed += (uint64_t)((r->n_computed + n < r->n_prompt ? r->n_computed + n : r->n_prompt) - r->n_computed);
        if (has > 1) { /* speculative verification: commits, and rolls back, itself (spec.c) */
            if (res.tokens) kiln_spec_verify_drawn(e, r, &res, row);
            else kiln_spec_verify(e, r, res.logits + (size_t)row * res.vocab, res.vocab);
            continue;
        }
        r->n_computed += n;
        kiln_req_register_blocks(e, r); /* n_computed <= n_tokens: known tokens only */
        if (!has) continue;
        /* drawn on the device with the same semantics, or here from the host logits */
        int32_t tok = res.tokens ? kiln_req_take_drawn(r, &res, row)
                                 : kiln_req_sample(e, r, res.logits + (size_t)row * res.vocab);
        if (r->gm) kiln_req_grammar_accept(e, r, tok);
        kiln_req_on_token(e, r, tok);
        if (r->gm && e->jump_forward) kiln_req_jump_forward(e, r); /* forced tokens (constraint.c) */
    }
    if (!rc) { /* the step's time, for the ITL policy's cost model (scheduler.c) */
        double now = kiln_now(), t0 = e->step_t_begin[k] > e->t_done ? e->step_t_begin[k] : e->t_done;
        double ms = 1e3 * (now - t0);
        kiln_step_cost_observe(&e->cost, e->step_np[k], e->step_nd[k], e->step_kk[k], ms);
        KILN_DEBUG("step: %d prefill rows, %d decode rows, %.1f k keys: %.2f ms (predicted %.2f)", e->step_np[k],
                   e->step_nd[k], e->step_kk[k], ms, e->step_pred_ms[k]);
        if (e->step_np[k] > e->pf_seen) e->pf_seen = e->step_np[k];
        e->stats.sched_last_step_ms = ms;
        e->stats.sched_last_predicted_ms = e->step_pred_ms[k];
        e->t_done = now;
    }
    return rc;
}

int32_t kiln_req_take_drawn(kiln_req *r, const kiln_step_result *res, int row) {
    int n_out = r->n_tokens - r->n_prompt, nlp = r->sp.n_logprobs;
    if (r->lp) r->lp[n_out] = res->logprob[row];
    for (int j = 0; j < nlp; j++) {
        r->top[(size_t)n_out * nlp + j].id = res->top_ids[(size_t)row * KILN_STEP_MAX_TOP + j];
        r->top[(size_t)n_out * nlp + j].logprob = res->top_lp[(size_t)row * KILN_STEP_MAX_TOP + j];
    }
    return res->tokens[row];
}

int32_t kiln_req_sample(kiln_engine *e, kiln_req *r, const float *logits) {
    int n_out = r->n_tokens - r->n_prompt, nlp = r->sp.n_logprobs;
    int ns = kiln_req_suppressed(e, r, e->suppress);
    if (r->gm) {
        kiln_error gerr;
        if (kiln_req_grammar_mask(e, r, &gerr) == KILN_OK) e->sampler.allow = e->gmask;
        else KILN_WARN("request %llu: grammar mask: %s", (unsigned long long)r->id, gerr.msg);
    }
    int32_t tok = kiln_sample(&e->sampler, logits, &r->sp, r->tokens, r->n_prompt, r->tokens + r->n_prompt, n_out,
                              e->suppress, ns, r->seed, (uint64_t)n_out, r->lp ? &r->lp[n_out] : NULL,
                              nlp > 0 ? r->top + (size_t)n_out * nlp : NULL, nlp);
    e->sampler.allow = NULL;
    return tok;
}

/* Finish and apply the step in flight, if any (outside kiln_engine_step: close, prompt_logits). */
static int drain(kiln_engine *e, kiln_error *err) {
    if (e->pending < 0) return KILN_OK;
    double tb = 0;
    int p = e->pending;
    e->pending = -1;
    return finish_process(e, p, &tb, err);
}

static int engine_step(kiln_engine *e, int *n_active, kiln_error *err) {
    double t_start = kiln_now(), t_backend = 0;
    e->t_call = t_start;
    int rc = KILN_OK, need_drain = 0;
    if (e->pending < 0) {
        /* nothing in flight: build and encode a step (preemption allowed) */
        e->cur = 0;
        if ((rc = kiln_draft_propose(e, err))) goto out; /* a draft model's proposals (spec_draft.c) */
        if ((rc = kiln_sched_build_step(e, &need_drain, err))) goto out;
        if (e->steps[e->cur].n_seqs > 0) {
            if ((rc = encode(e, e->cur, &t_backend, err))) goto out;
            e->pending = e->cur;
            if (!e->overlap) { /* the plain step: its own wait */
                e->pending = -1;
                rc = finish_process(e, e->cur, &t_backend, err);
                goto out;
            }
        }
    }
    if (e->pending >= 0) {
        /* overlap: build and encode step n+1 from step n's draws (on the device), then wait for
         * step n and apply it; step n+1 stays in flight */
        int p = e->pending, next = -1;
        e->cur = 1 - p;
        if ((rc = kiln_sched_build_step(e, &need_drain, err))) goto out;
        if (!need_drain && e->steps[e->cur].n_seqs > 0) {
            if ((rc = encode(e, e->cur, &t_backend, err))) goto out;
            next = e->cur;
        }
        rc = finish_process(e, p, &t_backend, err);
        e->pending = next;
        if (rc) goto out;
        if (need_drain) {
            e->n_drains++;
            /* step n is applied and nothing is in flight: build as without overlap (preemption
             * allowed); the new step stays in flight for the next call */
            if ((rc = kiln_sched_build_step(e, &need_drain, err))) goto out;
            if (e->steps[e->cur].n_seqs > 0) {
                if ((rc = encode(e, e->cur, &t_backend, err))) goto out;
                e->pending = e->cur;
            }
        }
    }
out:
    e->stats.syncs = e->backend->n_syncs;
    if (n_active) {
        int n = 0;
        for (int i = 0; i < e->n_reqs; i++) n += e->reqs[i]->state != KILN_REQ_FINISHED;
        /* every request is done but a step is still in flight (its rows are discarded): one more
         * call drains it (it encodes nothing and makes the one wait) */
        if (n == 0 && e->pending >= 0) n = 1;
        *n_active = n;
    }
    e->stats.backend_seconds += t_backend;
    e->stats.host_seconds += kiln_now() - t_start - t_backend;
    return rc;
}

int kiln_engine_step(kiln_engine *e, int *n_active, kiln_error *err) {
    if (e->ops->range_push) e->ops->range_push("kiln_step");
    int rc = engine_step(e, n_active, err);
    if (e->ops->range_pop) e->ops->range_pop();
    return rc;
}

int kiln_engine_poll(kiln_engine *e, uint64_t req_id, kiln_output *out, kiln_error *err) {
    memset(out, 0, sizeof *out);
    kiln_req *r = find_req(e, req_id, NULL);
    if (!r) return KILN_ERR(err, KILN_ERR_NOT_FOUND, "no request %llu", (unsigned long long)req_id);
    int final = r->state == KILN_REQ_FINISHED;
    int n_out = r->n_tokens - r->n_prompt;
    out->new_ids = r->tokens + r->n_prompt + r->n_polled;
    out->n_new = n_out - r->n_polled;
    if (r->lp) out->logprobs = r->lp + r->n_polled;
    if (r->top) out->top = r->top + (size_t)r->n_polled * r->sp.n_logprobs;
    out->n_logprobs = r->sp.n_logprobs;
    size_t from = 0;
    long end = kiln_req_build_text(e, r, final, &from);
    if (end < 0) return KILN_ERR(err, KILN_ERR_OOM, "out of memory building request text");
    out->text_delta = r->text.p + from;
    out->text_len = (size_t)end - from;
    out->finish = final ? r->finish : KILN_FINISH_NONE;
    out->n_prompt_tokens = r->n_prompt;
    out->n_cached_tokens = r->n_cached_prompt;
    out->n_output_tokens = n_out;
    r->n_polled = n_out;
    if (final) r->reported_final = 1;
    return KILN_OK;
}

void kiln_engine_get_stats(const kiln_engine *e, kiln_engine_stats *s) {
    *s = e->stats;
    s->n_running = e->n_running;
    s->n_waiting = e->n_waiting;
    s->kv_blocks_total = kiln_kv_num_usable(e->kv);
    s->kv_blocks_cached = kiln_kv_num_cached_free(e->kv);
    s->kv_blocks_used = kiln_kv_num_usable(e->kv) - kiln_kv_num_free(e->kv);
    s->kv_blocks_peak = e->kv_peak > s->kv_blocks_used ? e->kv_peak : s->kv_blocks_used;
    s->syncs = e->backend ? e->backend->n_syncs : 0;
    s->sched_cost_fixed_ms = e->cost.theta[0];
    s->sched_cost_token_ms = e->cost.theta[1];
    s->sched_cost_row_ms = e->cost.theta[2];
    s->sched_cost_kkey_ms = e->cost.theta[3];
    s->sched_cost_samples = e->cost.n_obs;
    s->sched_cost_margin = kiln_step_cost_margin(&e->cost);
}

int kiln_engine_tokenize(kiln_engine *e, const char *text, size_t len, int add_special, int32_t **ids,
                         int *n_ids, kiln_error *err) {
    if (!e->tok) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "the model has no tokenizer (give one with --tokenizer)");
    return kiln_tokenizer_encode(e->tok, text, len, add_special ? KILN_TOK_ADD_BOS : 0, ids, n_ids, err);
}

int kiln_engine_detokenize(kiln_engine *e, const int32_t *ids, int n, int skip_special, char **text, size_t *len,
                           kiln_error *err) {
    if (!e->tok) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "the model has no tokenizer (give one with --tokenizer)");
    return kiln_tokenizer_decode(e->tok, ids, n, skip_special, text, len, err);
}

/* internal accessors for the CLI / tests */
const kiln_model *kiln_engine_model(const kiln_engine *e) { return e->model; }
const kiln_tokenizer *kiln_engine_tokenizer(const kiln_engine *e) { return e->tok; }

void kiln_engine_get_info(const kiln_engine *e, kiln_engine_info *info) {
    memset(info, 0, sizeof *info);
    info->backend = e->ops->name;
    info->strict = e->strict;
    info->kv_layout = e->kv_layout;
    info->weight_dtype = kiln_model_weight_dtype(e->model);
    kiln_model_fp8_describe(e->model, info->quantization, sizeof info->quantization);
    info->kv_layout_bytes = (size_t)kiln_kv_elems(&e->kv_layout) * (size_t)e->kv_layout.elem_bytes;
    if (e->ops->memory) e->ops->memory(e->backend, &info->backend_kv_bytes, &info->backend_scratch_bytes);
    info->max_batch_tokens = e->max_batch_tokens;
    info->max_seqs = e->max_seqs;
    info->max_model_len = e->max_model_len;
    info->block_size = e->block_size;
    info->prefix_cache = e->opt.enable_prefix_cache >= 0;
}

int kiln_engine_prompt_logits(kiln_engine *e, const int32_t *ids, int n, float *out, kiln_error *err) {
    const kiln_config *mc = &e->model->cfg;
    if (e->n_running > 0) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "prompt_logits: the engine is busy");
    int rc = drain(e, err); /* a step left in flight (its rows all discarded) */
    if (rc) return rc;
    if (n <= 0 || n > e->max_model_len)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "prompt_logits: %d tokens (context %d)", n, e->max_model_len);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= mc->vocab_size)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "token %d at position %d is outside the vocabulary", ids[i], i);
    int nb = (n + e->block_size - 1) / e->block_size;
    int32_t *blocks = kiln_calloc((size_t)nb, sizeof(int32_t));
    if (!blocks) return KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    kiln_step *s = &e->steps[0];
    int released = 0; /* leading blocks released out of the window */
    for (int i = 0; i < n && !rc; i++) {
        /* a block when the position enters it (with windows, the ones behind are released) */
        if (i % e->block_size == 0 && (rc = kiln_kv_alloc(e->kv, 1, &blocks[i / e->block_size], err))) break;
        s->n_tokens = 1;
        s->n_seqs = 1;
        s->token_ids[0] = ids[i];
        s->positions[0] = i;
        s->slot_mapping[0] = (int64_t)blocks[i / e->block_size] * e->block_size + i % e->block_size;
        s->seq_q_start[0] = 0;
        s->seq_q_start[1] = 1;
        s->seq_ctx_len[0] = i + 1;
        memcpy(s->block_table, blocks, (size_t)nb * sizeof(int32_t));
        s->seq_logits[0] = 1;
        s->device_sample = 0;
        s->n_pen = 0;
        s->n_prev = 0;
        kiln_step_result res;
        memset(&res, 0, sizeof res);
        if ((rc = e->ops->encode_step(e->backend, s, err)) || (rc = e->ops->finish_step(e->backend, &res, err))) break;
        memcpy(out + (size_t)i * mc->vocab_size, res.logits, (size_t)mc->vocab_size * sizeof(float));
        int used = kiln_kv_num_usable(e->kv) - kiln_kv_num_free(e->kv);
        if (used > e->kv_peak) e->kv_peak = used;
        /* sliding windows: the blocks the next position's window no longer covers (as scheduler.c) */
        int lo = i + 1 - e->kv_window + 1, nrel = e->kv_window > 0 && lo > 0 ? lo / e->block_size : 0;
        for (; released < nrel && released < nb; released++) {
            kiln_kv_release(e->kv, &blocks[released], 1);
            blocks[released] = 0;
        }
    }
    kiln_kv_release(e->kv, blocks, nb);
    kiln_free(blocks);
    return rc;
}
