/* spec_draft.c: the draft-model proposer (docs/speculative.md).
 *
 * A second model with the target's vocabulary runs on a second instance of the same backend,
 * with its own paged KV pool and block manager (no prefix cache: its blocks live and die with
 * the request), inside the same engine. Before a step is scheduled (engine.c), every running
 * sequence that decodes and speculates gets up to K proposals from k draft passes, batched over
 * those sequences:
 *   pass 0: the tokens the draft has not seen yet (r->d_computed .. n_tokens: the whole prompt
 *           the first time, chunked within max_batch_tokens; afterwards the tokens committed by
 *           the last verification) -> logits of the last row -> proposal d_0;
 *   pass j: one row, input d_{j-1} at position n_tokens + j - 1 -> d_j.
 * A proposal is drawn from the draft's processed distribution q_j (the request's temperature,
 * top-k, top-p, min-p; spec.draft_temperature may replace the temperature; no penalties, bias or
 * grammar: the target applies those, and a proposal it cannot produce is simply rejected), with
 * the request's seed on its own counter stream, so a seeded request stays reproducible. q_j is
 * kept ([max_seqs][K][vocab]) for the rejection rule of the verification (spec.c).
 * The draft's KV after the passes holds the committed tokens (d_computed = n_tokens) and the
 * proposals' rows; after verification with a accepted, d_computed = n_tokens_old + min(a, k-1)
 * (the rows whose input was an accepted proposal are right), the rest is recomputed next time.
 * Each pass is a backend wait of the draft backend (engine stats: the target's waits stay one
 * per step; the draft's are counted apart in the draft backend).
 */
#include <math.h>
#include <string.h>
#include "engine/engine_internal.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/log.h"

struct kiln_draft {
    kiln_model *model;
    kiln_backend *backend;
    kiln_kv_cache *kv;
    kiln_kv_layout layout;
    kiln_step step;
    kiln_req **rows_req;  /* [max_seqs] sequence of each step entry */
    kiln_sampler sampler;
    int max_len;          /* positions the draft can hold (its context and the engine's) */
    int vocab;
};

static uint64_t draft_seed(uint64_t seed) { return seed ^ 0xD1B54A32D192ED03ull; }

void kiln_draft_close(kiln_engine *e) {
    kiln_draft *d = e->draft;
    if (!d) return;
    kiln_free(d->step.token_ids);
    kiln_free(d->step.positions);
    kiln_free(d->step.slot_mapping);
    kiln_free(d->step.seq_q_start);
    kiln_free(d->step.seq_ctx_len);
    kiln_free(d->step.block_table);
    kiln_free(d->step.seq_logits);
    kiln_free(d->step.sampling);
    kiln_free(d->step.prev_row);
    kiln_free(d->rows_req);
    kiln_sampler_free(&d->sampler);
    if (d->backend) e->ops->destroy(d->backend);
    kiln_kv_cache_destroy(d->kv);
    kiln_model_free(d->model);
    kiln_free(e->spec_q);
    e->spec_q = NULL;
    kiln_free(d);
    e->draft = NULL;
}

/* the draft's vocabulary against the target's: sizes, and every token's bytes when both have
 * a tokenizer (two models may share a size and not a vocabulary) */
static int check_vocab(kiln_engine *e, const char *path, kiln_error *err) {
    const kiln_config *tc = &e->model->cfg, *dc = &e->draft->model->cfg;
    if (dc->vocab_size != tc->vocab_size)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "engine: the draft model %s has a vocabulary of %d tokens, the target "
                        "%d: speculative decoding needs the same vocabulary", path, dc->vocab_size, tc->vocab_size);
    const char *tp = e->draft->model->tokenizer_path;
    if (!e->tok || !tp || !*tp) return KILN_OK;
    kiln_tokenizer *dt = NULL;
    kiln_error terr;
    if (kiln_tokenizer_load(&dt, tp, &terr) != KILN_OK) return KILN_OK; /* none to compare */
    int rc = KILN_OK;
    for (int32_t id = 0; id < tc->vocab_size && !rc; id++) {
        size_t la = 0, lb = 0;
        const char *a = kiln_tok_piece(e->tok, id, &la), *b = kiln_tok_piece(dt, id, &lb);
        if ((a == NULL) != (b == NULL) || la != lb || (a && memcmp(a, b, la) != 0))
            rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "engine: the draft model %s has another vocabulary than the target "
                          "(token %d differs): speculative decoding needs the same vocabulary", path, id);
    }
    kiln_tokenizer_free(dt);
    return rc;
}

int kiln_draft_open(kiln_engine *e, const char *path, kiln_error *err) {
    kiln_draft *d = kiln_calloc(1, sizeof *d);
    if (!d) return KILN_ERR(err, KILN_ERR_OOM, "engine: out of memory");
    e->draft = d;
    int rc;
    if ((rc = kiln_model_load(&d->model, path, err))) return rc;
    if ((rc = check_vocab(e, path, err))) return rc;
    if ((rc = kiln_backend_check_model(e->ops, d->model, err))) return rc;
    const kiln_config *mc = &d->model->cfg;
    for (int l = 0; l < mc->n_layers; l++)
        if (d->model->layers[l].window > 0)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "engine: the draft model %s has attention windows; a draft model "
                            "with windows is not supported", path);
    d->vocab = mc->vocab_size;
    d->max_len = mc->max_seq_len < e->max_model_len ? mc->max_seq_len : e->max_model_len;
    int bs = e->block_size, mb = e->max_blocks_per_seq;
    d->layout = (kiln_kv_layout){.n_layers = mc->n_layers, .n_kv_heads = mc->n_kv_heads, .head_dim = mc->head_dim,
                                 .block_size = bs, .dtype = e->ops->kv_dtype, .scale = KILN_KV_SCALE_NONE,
                                 .elem_bytes = kiln_kv_dtype_bytes(e->ops->kv_dtype)};
    /* as many blocks as the target's pool plus the proposals' of every sequence: the draft never
     * runs out before the target does */
    d->layout.n_blocks = e->kv_layout.n_blocks + e->max_seqs * ((KILN_SPEC_MAX_TOKENS + bs - 1) / bs + 1);
    if ((rc = kiln_kv_cache_create(&d->kv, d->layout.n_blocks, bs, 0, err))) return rc;
    kiln_backend_config bc = {
        .max_tokens = e->max_batch_tokens,
        .max_seqs = e->max_seqs,
        .max_blocks_per_seq = mb,
        .max_model_len = e->max_model_len,
        .kv = d->layout,
        .n_threads = e->opt.n_threads,
        .strict = e->strict,
        .batch_invariant = e->opt.batch_invariant > 0,
        .cpu = e->opt.cpu,
        .cuda = e->opt.cuda,
    };
    bc.cpu.backend_sampling = 0;
    if ((rc = e->ops->create(&d->backend, d->model, &bc, err))) return rc;
    if ((rc = kiln_sampler_init(&d->sampler, d->vocab, err))) return rc;
    kiln_step *s = &d->step;
    int T = e->max_batch_tokens, S = e->max_seqs;
    s->max_tokens = T;
    s->max_seqs = S;
    s->max_blocks_per_seq = mb;
    s->token_ids = kiln_calloc((size_t)T, sizeof(int32_t));
    s->positions = kiln_calloc((size_t)T, sizeof(int32_t));
    s->slot_mapping = kiln_calloc((size_t)T, sizeof(int64_t));
    s->seq_q_start = kiln_calloc((size_t)S + 1, sizeof(int32_t));
    s->seq_ctx_len = kiln_calloc((size_t)S, sizeof(int32_t));
    s->block_table = kiln_calloc((size_t)S * mb, sizeof(int32_t));
    s->seq_logits = kiln_calloc((size_t)S, sizeof(int32_t));
    s->sampling = kiln_calloc((size_t)S, sizeof(kiln_step_sampling));
    s->prev_row = kiln_malloc((size_t)T * sizeof(int32_t));
    d->rows_req = kiln_calloc((size_t)S, sizeof(kiln_req *));
    e->spec_q = kiln_malloc((size_t)S * e->spec_k * d->vocab * sizeof(float));
    if (!s->token_ids || !s->positions || !s->slot_mapping || !s->seq_q_start || !s->seq_ctx_len || !s->block_table ||
        !s->seq_logits || !s->sampling || !s->prev_row || !d->rows_req || !e->spec_q)
        return KILN_ERR(err, KILN_ERR_OOM, "engine: out of memory for the draft model's step");
    for (int t = 0; t < T; t++) s->prev_row[t] = -1;
    return KILN_OK;
}

void kiln_draft_release(kiln_engine *e, kiln_req *r) {
    if (!e->draft || !r->d_blocks) return;
    kiln_kv_release(e->draft->kv, r->d_blocks, r->d_n_blocks);
    memset(r->d_blocks, 0, (size_t)r->d_n_blocks * sizeof(int32_t));
    r->d_n_blocks = 0;
    r->d_computed = 0;
}

static int d_ensure(kiln_draft *d, kiln_req *r, int n_tokens, int bs) {
    int need = (n_tokens + bs - 1) / bs - r->d_n_blocks;
    if (need <= 0) return 1;
    if (kiln_kv_alloc(d->kv, need, r->d_blocks + r->d_n_blocks, NULL) != KILN_OK) return 0;
    r->d_n_blocks += need;
    return 1;
}

/* q (the processed distribution of the draw just made) from the sampler's work row: after a
 * sampled draw it holds the temperature-scaled logits of the kept set, -inf elsewhere */
static void work_to_probs(const float *w, int V, float *q) {
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) if (w[i] > mx) mx = w[i];
    double sum = 0;
    for (int i = 0; i < V; i++) sum += w[i] == -INFINITY ? 0.0 : exp((double)w[i] - mx);
    for (int i = 0; i < V; i++) q[i] = w[i] == -INFINITY || !(sum > 0) ? 0.0f : (float)(exp((double)w[i] - mx) / sum);
}

/* One draft pass over the sequences in list[0..n): each gets rows from its position pos[i]
 * (input tokens in[i] .. ), rows[i] of them, logits at the last one; draws proposal j. */
static int draft_pass(kiln_engine *e, kiln_req **list, int n, const int *rows, int j, kiln_error *err) {
    kiln_draft *d = e->draft;
    kiln_step *s = &d->step;
    int bs = e->block_size, t = 0;
    s->n_seqs = 0;
    s->n_prev = 0;
    s->n_pen = 0;
    s->device_sample = 0;
    s->seq_q_start[0] = 0;
    for (int i = 0; i < n; i++) {
        kiln_req *r = list[i];
        int base = j == 0 ? r->d_computed : r->n_tokens + j - 1;
        for (int k = 0; k < rows[i]; k++) {
            int pos = base + k;
            s->token_ids[t] = pos < r->n_tokens ? r->tokens[pos] : r->draft[pos - r->n_tokens];
            s->positions[t] = pos;
            s->slot_mapping[t] = (int64_t)r->d_blocks[pos / bs] * bs + pos % bs;
            t++;
        }
        int si = s->n_seqs++;
        s->seq_q_start[si + 1] = t;
        s->seq_ctx_len[si] = base + rows[i];
        int32_t *bt = s->block_table + (size_t)si * s->max_blocks_per_seq;
        memcpy(bt, r->d_blocks, (size_t)r->d_n_blocks * sizeof(int32_t));
        for (int b = r->d_n_blocks; b < s->max_blocks_per_seq; b++) bt[b] = 0;
        s->seq_logits[si] = 1;
        memset(&s->sampling[si], 0, sizeof s->sampling[si]);
        s->sampling[si].pen_slot = -1;
        d->rows_req[si] = r;
    }
    s->n_tokens = t;
    kiln_step_result res;
    memset(&res, 0, sizeof res);
    int rc = e->ops->encode_step(d->backend, s, err);
    if (!rc) rc = e->ops->finish_step(d->backend, &res, err);
    if (rc) return rc;
    for (int i = 0; i < n; i++) {
        kiln_req *r = list[i];
        kiln_sampling sp = r->sp; /* the request's truncation, without penalties / bias */
        sp.repetition_penalty = 1.0f;
        sp.presence_penalty = sp.frequency_penalty = 0.0f;
        sp.n_bias = 0;
        sp.logprobs = sp.n_logprobs = 0;
        if (sp.temperature > 0 && e->spec_draft_temp > 0) sp.temperature = e->spec_draft_temp;
        const float *lg = res.logits + (size_t)i * d->vocab;
        int n_out = r->n_tokens - r->n_prompt;
        r->draft[j] = kiln_sample_tables(&d->sampler, lg, &sp, NULL, NULL, NULL, 0, draft_seed(r->seed),
                                         (uint64_t)(n_out + j), NULL, NULL, 0);
        if (r->sp.temperature > 0) work_to_probs(d->sampler.work, d->vocab, e->spec_q + ((size_t)r->q_slot * e->spec_k + j) * d->vocab);
    }
    return KILN_OK;
}

int kiln_draft_propose(kiln_engine *e, kiln_error *err) {
    kiln_draft *d = e->draft;
    if (!d) return KILN_OK;
    int n = 0, budget = e->max_batch_tokens;
    kiln_req *cand[1024];
    int rows[1024], kk[1024];
    int cap = e->max_seqs < 1024 ? e->max_seqs : 1024;
    for (int i = 0; i < e->n_running && n < cap; i++) {
        kiln_req *r = e->running[i];
        r->n_draft = 0;
        if (!r->spec || r->n_computed != r->n_tokens - 1 || r->n_sched) continue;
        int k = e->spec_k, left = r->max_new - (r->n_tokens - r->n_prompt) - 1;
        if (left < k) k = left;
        if (e->max_model_len - r->n_tokens - 1 < k) k = e->max_model_len - r->n_tokens - 1;
        if (d->max_len - r->n_tokens + 1 < k) k = d->max_len - r->n_tokens + 1; /* draft positions up to n_tokens+k-2 */
        if (k <= 0 || r->d_computed > r->n_tokens) continue;
        int need = r->n_tokens - r->d_computed;
        if (need > budget) { /* a long catch-up: a chunk now, proposals in a later step */
            if (budget <= 0) continue;
            need = budget;
            k = 0;
        }
        if (!d_ensure(d, r, r->d_computed + need + (k > 1 ? k - 1 : 0), e->block_size)) continue;
        budget -= need;
        r->q_slot = n;
        cand[n] = r;
        rows[n] = need;
        kk[n] = k;
        n++;
    }
    if (n == 0) return KILN_OK;
    /* pass 0 (catch-up + the first proposal); a sequence whose catch-up is cut (kk 0) gets none */
    int rc = draft_pass(e, cand, n, rows, 0, err);
    if (rc) return rc;
    int m = 0;
    for (int i = 0; i < n; i++) {
        kiln_req *r = cand[i];
        r->d_computed += rows[i];
        if (kk[i] > 0 && r->d_computed == r->n_tokens) {
            r->n_draft = 1;
            cand[m] = r;
            kk[m] = kk[i];
            rows[m] = 1;
            m++;
        }
    }
    for (int j = 1; m > 0; j++) {
        int mm = 0;
        for (int i = 0; i < m; i++)
            if (kk[i] > j) { cand[mm] = cand[i]; kk[mm] = kk[i]; rows[mm] = 1; mm++; }
        m = mm;
        if (m == 0) break;
        if ((rc = draft_pass(e, cand, m, rows, j, err))) return rc;
        for (int i = 0; i < m; i++) cand[i]->n_draft = j + 1;
    }
    return KILN_OK;
}

/* after verification: the draft rows whose input was an accepted proposal stay (see the top) */
void kiln_draft_commit(kiln_engine *e, kiln_req *r, int n_old, int k, int accepted) {
    if (!e->draft) return;
    int keep = accepted < k - 1 ? accepted : k - 1;
    if (keep < 0) keep = 0;
    r->d_computed = n_old + keep;
}

/* raw logprob of tok (the model's distribution) */
float kiln_spec_raw_logprob(const float *logits, int V, int32_t tok) {
    double mx = -INFINITY;
    for (int i = 0; i < V; i++) if (logits[i] > mx) mx = logits[i];
    double s = 0;
    for (int i = 0; i < V; i++) s += exp((double)logits[i] - mx);
    return (float)((double)logits[tok] - mx - log(s));
}

/* The rejection rule against a draft distribution q (spec.c calls it for sampled requests with
 * draft-model proposals): the sampler's work row holds the target's processed logits of the draw
 * just made (p). Accept d with probability min(1, p(d) / q(d)) (uniform u_acc), else draw from
 * norm(max(0, p - q)) by walking the ids in ascending order with uniform u_res (as the sampler
 * walks p). Returns the token; *accepted = 1 when it is d. */
int32_t kiln_spec_reject_sample(kiln_engine *e, const float *q, int32_t d, double u_acc, double u_res, int32_t fallback,
                                int *accepted) {
    const float *w = e->sampler.work;
    int V = e->sampler.vocab;
    float *p = e->spec_p;
    work_to_probs(w, V, p);
    *accepted = 0;
    if (q[d] > 0 && u_acc * (double)q[d] < (double)p[d]) {
        *accepted = 1;
        return d;
    }
    double sum = 0;
    for (int i = 0; i < V; i++) {
        double x = (double)p[i] - (double)q[i];
        if (x > 0) sum += x;
    }
    if (!(sum > 0)) return fallback; /* p <= q everywhere: only d could be rejected by rounding */
    double u = u_res * sum, acc = 0;
    int32_t last = fallback;
    for (int i = 0; i < V; i++) {
        double x = (double)p[i] - (double)q[i];
        if (!(x > 0)) continue;
        acc += x;
        last = i;
        if (u < acc) return i;
    }
    return last;
}
