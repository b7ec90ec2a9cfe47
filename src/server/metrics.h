/* metrics.h: Prometheus metrics of `kiln serve`, with vLLM's metric names.
 *
 * The engine loop thread records per-request timings (observe_*) and a snapshot of the engine's
 * stats after every step; /metrics renders them from any connection thread. One mutex guards
 * everything; the engine itself is never touched from here.
 */
#ifndef KILN_SERVER_METRICS_H
#define KILN_SERVER_METRICS_H
#include <pthread.h>
#include <stdint.h>
#include "kiln.h"
#include "util/buf.h"

#define KILN_HIST_MAX_BUCKETS 24

typedef struct kiln_hist {
    const double *bounds; /* upper bounds, ascending; +Inf implied */
    int n_bounds;
    uint64_t counts[KILN_HIST_MAX_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    uint64_t count;
    double sum;
} kiln_hist;

void kiln_hist_init(kiln_hist *h, const double *bounds, int n_bounds);
void kiln_hist_observe(kiln_hist *h, double v);

typedef struct kiln_metrics {
    pthread_mutex_t mu;
    kiln_engine_stats stats; /* last snapshot from the engine thread */
    kiln_hist ttft, itl, e2e;
    kiln_hist tpot;          /* vllm:time_per_output_token_seconds: every gap between tokens, as
                              * the ITL histogram (vLLM's older name of the same observations) */
    kiln_hist req_tpot;      /* vllm:request_time_per_output_token_seconds: per request,
                              * (e2e - TTFT) / (output tokens - 1) */
    uint64_t success[4];     /* by kiln_finish: [STOP], [LENGTH], [ABORT] */
    uint64_t prompt_tokens, generation_tokens; /* of requests the server handed to the engine */
    uint64_t http_requests, http_errors;
    /* set once at open: what the weights and the KV cache are stored in (vllm:cache_config_info,
     * kiln:model_config_info) */
    char weight_dtype[32], kv_dtype[32], quantization[200];
    int block_size, kv_blocks;
} kiln_metrics;

void kiln_metrics_init(kiln_metrics *m);
void kiln_metrics_destroy(kiln_metrics *m);
void kiln_metrics_set_stats(kiln_metrics *m, const kiln_engine_stats *s);
/* a request finished: its timings (seconds; ttft < 0 when no token came) */
void kiln_metrics_request_done(kiln_metrics *m, kiln_finish f, int n_prompt, int n_output, double ttft_s, double e2e_s);
void kiln_metrics_observe_itl(kiln_metrics *m, double dt, int n);
void kiln_metrics_count_http(kiln_metrics *m, int status);
/* Prometheus text exposition format 0.0.4 */
int kiln_metrics_render(kiln_metrics *m, const char *model_name, kiln_buf *out);

#endif
