/* engine_internal.h: the engine's state (shared by engine.c, scheduler.c and output.c).
 *
 * Request lifecycle: add_request -> WAITING -> (scheduled) RUNNING -> FINISHED; a preempted
 * request goes back to the front of the waiting queue with its KV freed and is recomputed
 * (prompt + outputs so far) when rescheduled. Everything a request needs during steps is
 * allocated when it is added; a step allocates nothing (I7). Text is built in poll(), outside
 * the step loop; the step keeps only a bounded tail of output bytes to match stop strings.
 */
#ifndef KILN_ENGINE_INTERNAL_H
#define KILN_ENGINE_INTERNAL_H
#include <pthread.h>
#include "backend/backend.h"
#include "engine/kv_cache.h"
#include "engine/step_cost.h"
#include "grammar/grammar.h"
#include "sample/sampler.h"
#include "step/step.h"
#include "kiln.h"
#include "model/model.h"
#include "tokenizer/detok.h"
#include "util/buf.h"
#include "tokenizer/tokenizer.h"

typedef enum { KILN_REQ_WAITING = 0, KILN_REQ_RUNNING, KILN_REQ_FINISHED } kiln_req_state;

typedef struct kiln_req {
    uint64_t id;
    kiln_req_state state;
    int32_t *tokens;     /* [cap_tokens] prompt then outputs */
    int n_tokens, n_prompt, cap_tokens;
    int n_computed;      /* tokens whose K/V are in the pool */
    int32_t *blocks;     /* [max_blocks_per_seq] physical ids */
    int n_blocks;
    int n_released;      /* leading blocks released out of the attention window (blocks[b] = 0) */
    kiln_block_hash *hashes; /* [max_blocks_per_seq] chained hashes of full blocks */
    int n_hashed;        /* full blocks hashed (and registered) so far */
    int n_cached_prompt; /* prompt tokens served by the prefix cache at first schedule */
    int scheduled_once;
    int pen_slot;        /* device penalty table row while running (-1: none / not loaded) */
    /* overlapped scheduling (engine.c design note): rows of this sequence in encoded steps not
     * processed yet, tokens drawn by such steps and not known yet (0 or 1 when a step is built),
     * and the logits row of the last encoded step that draws one (its prev_row in the next) */
    int n_sched, n_inflight, inflight_row;
    /* parameters (copied) */
    int max_new, min_tokens, ignore_eos;
    int32_t *stop_ids; int n_stop_ids;
    char **stops; int n_stops; int max_stop_len;
    kiln_sampling sp;
    int32_t *bias_ids; float *bias_values;
    kiln_grammar *grammar;     /* constrained decoding (owned), or NULL */
    kiln_gmatch *gm;           /* its matcher: the state after the output so far */
    uint64_t seed;
    /* speculative decoding (spec.c): proposed tokens of the step being built / verified */
    int spec;                  /* this request speculates (engine on, not opted out) */
    int32_t *draft;            /* [KILN_SPEC_MAX_TOKENS] proposed tokens, positions n_tokens.. */
    int n_draft;               /* in the step in flight (0: a plain row) */
    int32_t *d_blocks;         /* [max_blocks_per_seq] the draft model's KV blocks (spec_draft.c) */
    int d_n_blocks, d_computed;/* and the tokens whose draft KV is right */
    int q_slot;                /* row of e->spec_q holding its proposals' draft distributions */
    /* outputs */
    float *lp;                 /* [max_new] raw logprob of each output token (if asked) */
    kiln_token_logprob *top;   /* [max_new][n_logprobs] */
    kiln_finish finish;
    int n_polled;              /* output tokens reported by poll */
    /* stop-string tail: the last output bytes, bounded (step-time) */
    char *tail; int tail_len, tail_cap;
    int64_t tail_base;         /* absolute output byte offset of tail[0] */
    int64_t stop_at;           /* output text offset where a stop string begins, -1 = none */
    kiln_detok dstep;          /* step-time detokenizer (feeds the stop-string tail) */
    kiln_detok dpoll;          /* poll-time detokenizer (builds the text); same stream */
    int has_detok;
    /* text (poll-time) */
    kiln_buf text;             /* output text built so far (valid UTF-8) */
    size_t text_sent;          /* bytes of text handed out */
    int text_tokens;           /* output tokens converted into text */
    int text_flushed;
    int reported_final;
} kiln_req;

struct kiln_engine {
    kiln_engine_options opt;
    kiln_model *model;
    kiln_tokenizer *tok;
    const kiln_backend_ops *ops;
    kiln_backend *backend;
    kiln_kv_cache *kv;
    kiln_kv_layout kv_layout;
    kiln_sampler sampler;
    kiln_step steps[2];                           /* double-buffered: one built while one is in flight */
    kiln_req **step_reqs[2];                      /* [2][max_seqs] each step's sequences */
    int cur;                                      /* the step being built (steps[cur]) */
    int pending;                                  /* the encoded step not finished yet, -1: none */
    int overlap;                                  /* overlapped scheduling on (ops.overlap && device_sample) */
    uint64_t n_drains;                            /* calls that drained first (preemption needed; tests) */
    int max_model_len, max_blocks_per_seq, block_size, max_seqs, max_batch_tokens;
    int kv_window;       /* > 0 when every layer has an attention window (the largest): blocks that
                          * left it are released (scheduler.c) */
    int strict;
    size_t scratch_row_bytes; /* scratch bytes per step row (KILN_SCRATCH_POOL_MB) */
    /* requests */
    kiln_req **reqs; int n_reqs, cap_reqs;        /* all live requests */
    kiln_req **running; int n_running;            /* [max_seqs] scheduling order */
    kiln_req **waiting; int n_waiting, cap_waiting;
    int device_sample;                            /* the backend draws the tokens (ops.samples) */
    int device_masks;                             /* and applies grammar masks (ops.masks, a tokenizer) */
    int jump_forward;                             /* options.jump_forward */
    int warned_grammar_overlap;                   /* strict: the no-overlap note was logged */
    int32_t *free_pen; int n_free_pen;            /* [max_seqs] free device penalty table rows */
    int step_n_bias, step_n_supp;                 /* entries used in the step's bias / supp lists */
    int32_t *suppress;                            /* [KILN_MAX_EOS + max stop ids] */
    int suppress_cap;
    uint64_t next_id;
    int kv_peak;                                  /* stats.kv_blocks_peak */
    kiln_engine_stats stats;
    kiln_token_trie trie;                         /* non-special vocabulary pieces (constrained decoding) */
    int has_trie;
    kiln_gscratch *gscratch;                      /* the mask walk's scratch */
    kiln_grammar *gcache[16];                     /* compiled grammars by (kind, text), shared */
    pthread_mutex_t gmu;                          /* guards gcache (compile runs on any thread) */
    int gmu_init;
    uint32_t *gmask;                              /* [(vocab + 31) / 32] the row's grammar mask */
    /* speculative decoding (spec.c): 0 = off, else proposals of up to spec_k tokens */
    int spec_k, spec_ngram_min, spec_ngram_max;
    float spec_draft_temp;                        /* spec.draft_temperature (0: the request's) */
    struct kiln_draft *draft;                     /* the draft model, or NULL (spec_draft.c) */
    float *spec_q;                                /* [max_seqs][spec_k][vocab] draft distributions */
    float *spec_p;                                /* [vocab] the target's, at verification */
    /* the chunked-prefill ITL policy (scheduler.c, step_cost.h): target step time (0 = off),
     * the smallest prefill chunk of a mixed step, the cost model, and per step buffer the rows
     * it was built with (prefill, decode), the start of the call that built it and the model's
     * prediction; t_done is when the last step was applied (a step's time runs from the later
     * of that and its build call's start to its own application: the interval between tokens) */
    double itl_target_ms;
    double step_target_ms;  /* sched.max_step_ms: every step (0 = off) */
    int itl_min_chunk;
    int pf_seen;            /* the most prefill rows of one step observed (the probe, kiln.h) */
    kiln_step_cost cost;
    int step_np[2], step_nd[2], step_cut[2]; /* step_cut: the target cut its prefill */
    int step_cut_max[2];    /* max_step_ms cut its prefill */
    double step_kk[2];      /* attention's keys of the step / KILN_COST_KKEY (step_cost.h) */
    double step_t_begin[2], step_pred_ms[2], t_done, t_call;
    int fault_extra_sync;  /* opt.faults.extra_sync: every step waits twice (I1 broken) */
    int fault_break_batch; /* opt.faults.break_batch: host logits of a batch perturbed (I5 broken) */
};

/* scheduler.c */
/* Build steps[e->cur]. With a step in flight (e->pending >= 0) its draws feed the new step's
 * rows (prev_row) and nothing is preempted: when a preemption would be needed, the partial step
 * is undone and *need_drain = 1 (the caller finishes the pending step first, then builds again). */
int kiln_sched_build_step(kiln_engine *e, int *need_drain, kiln_error *err);
/* give back the penalty rows assigned while building steps[k] (a step that is not encoded) */
void kiln_sched_undo_pen(kiln_engine *e, int k);
void kiln_sched_preempt(kiln_engine *e, kiln_req *r);
/* take r out of the running or waiting list and free its KV blocks */
void kiln_sched_remove(kiln_engine *e, kiln_req *r);
void kiln_req_release_kv(kiln_engine *e, kiln_req *r);
/* 1 when r's sampling has repetition, presence or frequency penalties (scheduler.c) */
int kiln_req_has_penalties(const kiln_req *r);
/* ids r may not draw yet (min_tokens: EOS + stop ids) into out; returns the count */
int kiln_req_suppressed(const kiln_engine *e, const kiln_req *r, int32_t *out);
/* constraint.c */
int kiln_engine_grammar_init(kiln_engine *e, kiln_error *err);
/* close: the trie, the scratch and the grammar cache */
void kiln_engine_free_grammars(kiln_engine *e);
/* add_request: r's matcher over g (r owns g from here on); refused when the backend samples
 * without masks */
int kiln_req_grammar_init(kiln_engine *e, kiln_req *r, kiln_grammar *g, kiln_error *err);
/* the mask of r's next draw into e->gmask (EOS / stop ids allowed when the text is complete) */
int kiln_req_grammar_mask(kiln_engine *e, kiln_req *r, kiln_error *err);
/* the same into out [(vocab + 31) / 32] (a step's mask row for the backend's sampler) */
int kiln_req_grammar_mask_into(kiln_engine *e, kiln_req *r, uint32_t *out, kiln_error *err);
/* jump-forward: append the tokens of the bytes r's grammar forces next (all but the last);
 * returns how many (0 without options.jump_forward's conditions) */
int kiln_req_jump_forward(kiln_engine *e, kiln_req *r);
/* advance r's matcher over tok (ids that end the request are not text) */
void kiln_req_grammar_accept(kiln_engine *e, kiln_req *r, int32_t tok);
/* spec.c / spec_ngram.c: speculative decoding */
/* Validate the options and set e->spec_*; refuses what the backend cannot verify (by name). */
int kiln_spec_init(kiln_engine *e, const kiln_engine_options *o, kiln_error *err);
/* Up to k tokens that follow the latest earlier occurrence of the longest suffix of tokens[0..n)
 * of nmax..nmin tokens, into out; returns how many (0: no match). */
int kiln_spec_ngram_propose(const int32_t *tokens, int n, int nmin, int nmax, int k, int32_t *out);
/* The scheduler's proposal for r, a decoding sequence with budget rows left this step: fills
 * r->draft, returns r->n_draft (0: a plain decode row). */
int kiln_spec_propose(kiln_engine *e, kiln_req *r, int budget);
/* Verify r's proposal against its k + 1 logits rows (sample each, accept while the draw equals
 * the proposal), append the emitted tokens, roll the KV back to the committed tokens. */
void kiln_spec_verify(kiln_engine *e, kiln_req *r, const float *logits, int vocab);
/* The same with the k + 1 rows drawn by the backend's sampler (res rows row .. row + k, each at
 * its own output position): commit while the draw equals the proposal, roll back. */
void kiln_spec_verify_drawn(kiln_engine *e, kiln_req *r, const kiln_step_result *res, int row);
/* 1 when r's verification rows may be drawn on the device: no penalties (one device table row
 * would count every row's draw), no grammar, no draft-model rejection rule (temperature > 0 with
 * a draft), min_tokens reached (no row suppressed). Otherwise r decodes plainly in an engine that
 * samples on the device. */
int kiln_spec_device_ok(const kiln_engine *e, const kiln_req *r);
/* r's next token as the backend drew it in logits row `row` of res, with its logprob and top-n */
int32_t kiln_req_take_drawn(kiln_req *r, const kiln_step_result *res, int row);
/* one draw of r's next token from a logits row (the host sampler; grammar mask, suppression) */
int32_t kiln_req_sample(kiln_engine *e, kiln_req *r, const float *logits);
/* spec_draft.c: the draft model (NULL e->draft: every call is a no-op) */
typedef struct kiln_draft kiln_draft;
int kiln_draft_open(kiln_engine *e, const char *path, kiln_error *err);
void kiln_draft_close(kiln_engine *e);
/* proposals of every running decoding sequence that speculates (before the step is built) */
int kiln_draft_propose(kiln_engine *e, kiln_error *err);
/* free r's draft KV (preemption, finish, abort) */
void kiln_draft_release(kiln_engine *e, kiln_req *r);
/* after verifying k proposals of which `accepted` were taken, from n_old committed tokens */
void kiln_draft_commit(kiln_engine *e, kiln_req *r, int n_old, int k, int accepted);
float kiln_spec_raw_logprob(const float *logits, int V, int32_t tok);
int32_t kiln_spec_reject_sample(kiln_engine *e, const float *q, int32_t d, double u_acc, double u_res, int32_t fallback,
                                int *accepted);
/* register r's full computed blocks in the prefix cache (engine.c) */
void kiln_req_register_blocks(kiln_engine *e, kiln_req *r);
/* output.c */
void kiln_req_on_token(kiln_engine *e, kiln_req *r, int32_t tok);
long kiln_req_build_text(kiln_engine *e, kiln_req *r, int final, size_t *from);
void kiln_req_free(kiln_req *r);

#endif
