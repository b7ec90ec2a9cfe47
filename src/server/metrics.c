/* metrics.c: Prometheus text rendering of the server's counters, gauges and histograms.
 *
 * Names and bucket bounds follow vLLM (vllm:num_requests_running, vllm:kv_cache_usage_perc,
 * vllm:time_to_first_token_seconds, ...), each with the label model_name="<served name>", so
 * dashboards built for vLLM work unchanged. Token counters come from the engine's own stats
 * (prompt tokens of requests added, generation tokens sampled).
 */
#include "server/metrics.h"
#include <stdio.h>
#include <string.h>

static const double TTFT_B[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double ITL_B[] = {0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                               0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double E2E_B[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                               30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
#define NB(a) ((int)(sizeof(a) / sizeof *(a)))

void kiln_hist_init(kiln_hist *h, const double *bounds, int n_bounds) {
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n_bounds = n_bounds > KILN_HIST_MAX_BUCKETS ? KILN_HIST_MAX_BUCKETS : n_bounds;
}

void kiln_hist_observe(kiln_hist *h, double v) {
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

void kiln_metrics_init(kiln_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    kiln_hist_init(&m->ttft, TTFT_B, NB(TTFT_B));
    kiln_hist_init(&m->itl, ITL_B, NB(ITL_B));
    kiln_hist_init(&m->e2e, E2E_B, NB(E2E_B));
    kiln_hist_init(&m->tpot, ITL_B, NB(ITL_B));
    kiln_hist_init(&m->req_tpot, ITL_B, NB(ITL_B));
}

void kiln_metrics_destroy(kiln_metrics *m) { pthread_mutex_destroy(&m->mu); }

void kiln_metrics_set_stats(kiln_metrics *m, const kiln_engine_stats *s) {
    pthread_mutex_lock(&m->mu);
    m->stats = *s;
    pthread_mutex_unlock(&m->mu);
}

void kiln_metrics_request_done(kiln_metrics *m, kiln_finish f, int n_prompt, int n_output, double ttft_s, double e2e_s) {
    pthread_mutex_lock(&m->mu);
    if (f >= KILN_FINISH_STOP && f <= KILN_FINISH_ABORT) m->success[f]++;
    m->prompt_tokens += (uint64_t)(n_prompt > 0 ? n_prompt : 0);
    m->generation_tokens += (uint64_t)(n_output > 0 ? n_output : 0);
    if (ttft_s >= 0) kiln_hist_observe(&m->ttft, ttft_s);
    if (e2e_s >= 0) kiln_hist_observe(&m->e2e, e2e_s);
    if (ttft_s >= 0 && e2e_s >= ttft_s && n_output > 1) kiln_hist_observe(&m->req_tpot, (e2e_s - ttft_s) / (n_output - 1));
    pthread_mutex_unlock(&m->mu);
}

void kiln_metrics_observe_itl(kiln_metrics *m, double dt, int n) {
    if (n <= 0) return;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < n; i++) {
        kiln_hist_observe(&m->itl, dt / n);
        kiln_hist_observe(&m->tpot, dt / n);
    }
    pthread_mutex_unlock(&m->mu);
}

void kiln_metrics_count_http(kiln_metrics *m, int status) {
    pthread_mutex_lock(&m->mu);
    m->http_requests++;
    if (status >= 400) m->http_errors++;
    pthread_mutex_unlock(&m->mu);
}

/* label value escaping: backslash, double quote and newline */
static void esc_label(const char *s, char *out, size_t n) {
    size_t k = 0;
    for (; *s && k + 3 < n; s++) {
        if (*s == '\\' || *s == '"') { out[k++] = '\\'; out[k++] = *s; }
        else if (*s == '\n') { out[k++] = '\\'; out[k++] = 'n'; }
        else out[k++] = *s;
    }
    out[k] = 0;
}

static void head(kiln_buf *b, const char *name, const char *type, const char *help) {
    kiln_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist(kiln_buf *b, const char *name, const char *help, const char *lab, const kiln_hist *h) {
    head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        kiln_buf_addf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, lab, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    kiln_buf_addf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, lab, (unsigned long long)cum);
    kiln_buf_addf(b, "%s_sum{%s} %.9g\n", name, lab, h->sum);
    kiln_buf_addf(b, "%s_count{%s} %llu\n", name, lab, (unsigned long long)h->count);
}

int kiln_metrics_render(kiln_metrics *m, const char *model_name, kiln_buf *b) {
    char esc[512], lab[600];
    esc_label(model_name ? model_name : "", esc, sizeof esc);
    snprintf(lab, sizeof lab, "model_name=\"%s\"", esc);
    pthread_mutex_lock(&m->mu);
    const kiln_engine_stats *s = &m->stats;
    double usage = s->kv_blocks_total > 0 ? (double)s->kv_blocks_used / (double)s->kv_blocks_total : 0.0;
    head(b, "vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig");
    kiln_buf_addf(b, "vllm:cache_config_info{%s,block_size=\"%d\",cache_dtype=\"%s\",num_gpu_blocks=\"%d\"} 1\n", lab,
                  m->block_size, m->kv_dtype[0] ? m->kv_dtype : "auto", m->kv_blocks);
    {
        char q[256];
        esc_label(m->quantization, q, sizeof q);
        head(b, "kiln:model_config_info", "gauge", "Storage of the model's weights (dtype of the layers' matrices, FP8 scheme).");
        kiln_buf_addf(b, "kiln:model_config_info{%s,weight_dtype=\"%s\",quantization=\"%s\"} 1\n", lab,
                      m->weight_dtype[0] ? m->weight_dtype : "?", q);
    }
    head(b, "vllm:num_requests_running", "gauge", "Number of requests in model execution batches.");
    kiln_buf_addf(b, "vllm:num_requests_running{%s} %d\n", lab, s->n_running);
    head(b, "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.");
    kiln_buf_addf(b, "vllm:num_requests_waiting{%s} %d\n", lab, s->n_waiting);
    head(b, "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.");
    kiln_buf_addf(b, "vllm:kv_cache_usage_perc{%s} %.6g\n", lab, usage);
    head(b, "vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.");
    kiln_buf_addf(b, "vllm:prompt_tokens_total{%s} %llu\n", lab, (unsigned long long)s->prompt_tokens_total);
    head(b, "vllm:generation_tokens_total", "counter", "Number of generation tokens processed.");
    kiln_buf_addf(b, "vllm:generation_tokens_total{%s} %llu\n", lab, (unsigned long long)s->generation_tokens_total);
    head(b, "vllm:num_preemptions_total", "counter", "Cumulative number of preemptions from the engine.");
    kiln_buf_addf(b, "vllm:num_preemptions_total{%s} %llu\n", lab, (unsigned long long)s->preemptions);
    head(b, "vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.");
    kiln_buf_addf(b, "vllm:prefix_cache_hits_total{%s} %llu\n", lab, (unsigned long long)s->prefix_cache_hits);
    /* speculative decoding, vLLM's spec_decode counters (zero while the engine does not speculate) */
    head(b, "vllm:spec_decode_num_drafts_total", "counter", "Number of spec decoding drafts.");
    kiln_buf_addf(b, "vllm:spec_decode_num_drafts_total{%s} %llu\n", lab, (unsigned long long)s->spec_drafts);
    head(b, "vllm:spec_decode_num_draft_tokens_total", "counter", "Number of draft tokens.");
    kiln_buf_addf(b, "vllm:spec_decode_num_draft_tokens_total{%s} %llu\n", lab, (unsigned long long)s->spec_draft_tokens);
    head(b, "vllm:spec_decode_num_accepted_tokens_total", "counter", "Number of accepted tokens.");
    kiln_buf_addf(b, "vllm:spec_decode_num_accepted_tokens_total{%s} %llu\n", lab,
                  (unsigned long long)s->spec_accepted_tokens);
    head(b, "vllm:spec_decode_num_accepted_tokens_per_pos_total", "counter", "Accepted tokens per draft position.");
    for (int j = 0; j < KILN_SPEC_MAX_TOKENS && (j == 0 || s->spec_accepted_per_pos[j - 1] > 0); j++)
        kiln_buf_addf(b, "vllm:spec_decode_num_accepted_tokens_per_pos_total{%s,position=\"%d\"} %llu\n", lab, j,
                      (unsigned long long)s->spec_accepted_per_pos[j]);
    head(b, "vllm:request_success_total", "counter", "Count of successfully processed requests.");
    static const char *const reasons[] = {NULL, "stop", "length", "abort"};
    for (int f = KILN_FINISH_STOP; f <= KILN_FINISH_ABORT; f++)
        kiln_buf_addf(b, "vllm:request_success_total{%s,finished_reason=\"%s\"} %llu\n", lab, reasons[f],
                          (unsigned long long)m->success[f]);
    hist(b, "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", lab, &m->ttft);
    hist(b, "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", lab, &m->itl);
    hist(b, "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", lab, &m->e2e);
    hist(b, "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", lab, &m->tpot);
    hist(b, "vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.",
         lab, &m->req_tpot);
    /* the chunked-prefill ITL policy (kiln_sched_options, docs/scheduling.md) */
    head(b, "kiln:sched_max_itl_seconds", "gauge", "Target step time of steps with decode rows (0: the ITL policy is off).");
    kiln_buf_addf(b, "kiln:sched_max_itl_seconds{%s} %.9g\n", lab, 1e-3 * s->sched_max_itl_ms);
    head(b, "kiln:sched_max_step_seconds", "gauge", "Target time of every step (0: the step budget is off).");
    kiln_buf_addf(b, "kiln:sched_max_step_seconds{%s} %.9g\n", lab, 1e-3 * s->sched_max_step_ms);
    head(b, "kiln:sched_step_cost_seconds", "gauge",
         "Step-cost model fitted from step timings: fixed per step, per prefill row, per decode row, per 1024 keys "
         "attended.");
    kiln_buf_addf(b, "kiln:sched_step_cost_seconds{%s,term=\"fixed\"} %.9g\n", lab, 1e-3 * s->sched_cost_fixed_ms);
    kiln_buf_addf(b, "kiln:sched_step_cost_seconds{%s,term=\"prefill_token\"} %.9g\n", lab, 1e-3 * s->sched_cost_token_ms);
    kiln_buf_addf(b, "kiln:sched_step_cost_seconds{%s,term=\"decode_row\"} %.9g\n", lab, 1e-3 * s->sched_cost_row_ms);
    kiln_buf_addf(b, "kiln:sched_step_cost_seconds{%s,term=\"attention_kkey\"} %.9g\n", lab, 1e-3 * s->sched_cost_kkey_ms);
    head(b, "kiln:sched_step_cost_margin_ratio", "gauge",
         "Fraction of its target the prefill budget keeps free for the step-cost model's forecast error.");
    kiln_buf_addf(b, "kiln:sched_step_cost_margin_ratio{%s} %.9g\n", lab, s->sched_cost_margin);
    head(b, "kiln:sched_step_cost_samples_total", "counter", "Step timings the step-cost model has taken.");
    kiln_buf_addf(b, "kiln:sched_step_cost_samples_total{%s} %llu\n", lab, (unsigned long long)s->sched_cost_samples);
    head(b, "kiln:sched_prefill_budget_tokens", "gauge", "Prefill rows allowed in the last step with decode rows.");
    kiln_buf_addf(b, "kiln:sched_prefill_budget_tokens{%s} %d\n", lab, s->sched_prefill_budget);
    head(b, "kiln:sched_mixed_steps_total", "counter", "Steps carrying both prefill and decode rows.");
    kiln_buf_addf(b, "kiln:sched_mixed_steps_total{%s} %llu\n", lab, (unsigned long long)s->sched_mixed_steps);
    head(b, "kiln:sched_itl_limited_steps_total", "counter", "Steps with decode rows whose prefill the ITL target cut.");
    kiln_buf_addf(b, "kiln:sched_itl_limited_steps_total{%s} %llu\n", lab, (unsigned long long)s->sched_itl_limited_steps);
    head(b, "kiln:sched_step_limited_steps_total", "counter", "Steps whose prefill the step budget (max step time) cut.");
    kiln_buf_addf(b, "kiln:sched_step_limited_steps_total{%s} %llu\n", lab, (unsigned long long)s->sched_step_limited_steps);
    head(b, "kiln:sched_last_step_seconds", "gauge", "The last step's measured time (between tokens).");
    kiln_buf_addf(b, "kiln:sched_last_step_seconds{%s} %.9g\n", lab, 1e-3 * s->sched_last_step_ms);
    head(b, "kiln:sched_last_step_predicted_seconds", "gauge", "The step-cost model's prediction for the last step.");
    kiln_buf_addf(b, "kiln:sched_last_step_predicted_seconds{%s} %.9g\n", lab, 1e-3 * s->sched_last_predicted_ms);
    head(b, "kiln:engine_steps_total", "counter", "Engine steps run.");
    kiln_buf_addf(b, "kiln:engine_steps_total{%s} %llu\n", lab, (unsigned long long)s->steps);
    head(b, "kiln:engine_syncs_total", "counter", "Backend waits (equals steps when invariant I1 holds).");
    kiln_buf_addf(b, "kiln:engine_syncs_total{%s} %llu\n", lab, (unsigned long long)s->syncs);
    head(b, "kiln:kv_blocks_total", "gauge", "Usable KV blocks.");
    kiln_buf_addf(b, "kiln:kv_blocks_total{%s} %d\n", lab, s->kv_blocks_total);
    head(b, "kiln:kv_blocks_used", "gauge", "KV blocks referenced by running sequences.");
    kiln_buf_addf(b, "kiln:kv_blocks_used{%s} %d\n", lab, s->kv_blocks_used);
    head(b, "kiln:http_requests_total", "counter", "HTTP requests answered.");
    kiln_buf_addf(b, "kiln:http_requests_total{%s} %llu\n", lab, (unsigned long long)m->http_requests);
    head(b, "kiln:http_errors_total", "counter", "HTTP requests answered with a status >= 400.");
    kiln_buf_addf(b, "kiln:http_errors_total{%s} %llu\n", lab, (unsigned long long)m->http_errors);
    pthread_mutex_unlock(&m->mu);
    return b->p ? 0 : -1;
}
