/* kiln-layer: server (links only this layer and those below it) */
/* test_server_metrics.c: the Prometheus text of `kiln serve` (src/server/metrics.c): vLLM's
 * metric names, cumulative histogram buckets ending in +Inf with _sum/_count, label escaping,
 * and every sample line in the exposition format (name{labels} value). */
#include "test.h"
#include <string.h>
#include "server/metrics.h"

static double value_of(const char *text, const char *prefix) {
    const char *p = strstr(text, prefix);
    if (!p) return -1;
    p += strlen(prefix);
    return strtod(p, NULL);
}

int main(void) {
    kiln_metrics m;
    kiln_metrics_init(&m);
    kiln_engine_stats st = {0};
    st.n_running = 3;
    st.n_waiting = 2;
    st.kv_blocks_total = 100;
    st.kv_blocks_used = 25;
    st.prompt_tokens_total = 40;
    st.generation_tokens_total = 77;
    st.sched_max_itl_ms = 25;
    st.sched_cost_fixed_ms = 8;
    st.sched_cost_token_ms = 0.02;
    st.sched_cost_row_ms = 0.05;
    st.sched_cost_samples = 12;
    st.sched_prefill_budget = 600;
    st.sched_mixed_steps = 7;
    st.sched_itl_limited_steps = 4;
    st.sched_max_step_ms = 500;
    st.sched_cost_kkey_ms = 0.3;
    st.sched_step_limited_steps = 9;
    kiln_metrics_set_stats(&m, &st);
    kiln_metrics_request_done(&m, KILN_FINISH_STOP, 10, 5, 0.003, 0.9);
    kiln_metrics_request_done(&m, KILN_FINISH_LENGTH, 10, 5, 0.05, 2.0);
    kiln_metrics_request_done(&m, KILN_FINISH_ABORT, 10, 1, -1, 100.0);
    kiln_metrics_observe_itl(&m, 0.04, 2); /* two tokens of 0.02 s */
    snprintf(m.weight_dtype, sizeof m.weight_dtype, "f8_e4m3");
    snprintf(m.kv_dtype, sizeof m.kv_dtype, "fp8_e4m3");
    snprintf(m.quantization, sizeof m.quantization, "online fp8: \"x\"");
    m.block_size = 16;
    m.kv_blocks = 100;
    kiln_buf b = {0};
    KT_CHECK(kiln_metrics_render(&m, "my \"model\"\n", &b) == 0, "render");
    const char *t = b.p;
    const char *L = "{model_name=\"my \\\"model\\\"\\n\"";
    char key[256];
#define V(name, suffix) (snprintf(key, sizeof key, "%s%s%s ", name, L, suffix), value_of(t, key))
    KT_CHECK(V("vllm:num_requests_running", "}") == 3, "running");
    KT_CHECK(V("vllm:num_requests_waiting", "}") == 2, "waiting");
    KT_CHECK(fabs(V("vllm:kv_cache_usage_perc", "}") - 0.25) < 1e-9, "kv usage");
    KT_CHECK(V("vllm:prompt_tokens_total", "}") == 40, "prompt tokens");
    KT_CHECK(V("vllm:generation_tokens_total", "}") == 77, "generation tokens");
    KT_CHECK(V("vllm:request_success_total", ",finished_reason=\"stop\"}") == 1, "success stop");
    KT_CHECK(V("vllm:request_success_total", ",finished_reason=\"abort\"}") == 1, "success abort");
    KT_CHECK(V("vllm:time_to_first_token_seconds_bucket", ",le=\"0.001\"}") == 0, "ttft le 0.001");
    KT_CHECK(V("vllm:time_to_first_token_seconds_bucket", ",le=\"0.005\"}") == 1, "ttft le 0.005");
    KT_CHECK(V("vllm:time_to_first_token_seconds_bucket", ",le=\"0.06\"}") == 2, "ttft cumulative");
    KT_CHECK(V("vllm:time_to_first_token_seconds_bucket", ",le=\"+Inf\"}") == 2, "ttft +Inf");
    KT_CHECK(V("vllm:time_to_first_token_seconds_count", "}") == 2, "ttft count");
    KT_CHECK(fabs(V("vllm:time_to_first_token_seconds_sum", "}") - 0.053) < 1e-9, "ttft sum");
    KT_CHECK(V("vllm:inter_token_latency_seconds_bucket", ",le=\"0.025\"}") == 2, "itl buckets");
    /* vLLM's TPOT histograms: every gap (as ITL), and per request (e2e - ttft) / (n - 1) */
    KT_CHECK(V("vllm:time_per_output_token_seconds_count", "}") == 2, "tpot count");
    KT_CHECK(V("vllm:time_per_output_token_seconds_bucket", ",le=\"0.02\"}") == 2, "tpot buckets");
    KT_CHECK(V("vllm:request_time_per_output_token_seconds_count", "}") == 2, "request tpot: requests of 2+ tokens");
    KT_CHECK(V("vllm:request_time_per_output_token_seconds_bucket", ",le=\"0.3\"}") == 1, "request tpot 0.224");
    KT_CHECK(fabs(V("vllm:request_time_per_output_token_seconds_sum", "}") - (0.897 / 4 + 1.95 / 4)) < 1e-9,
             "request tpot sum");
    /* the ITL policy's state */
    KT_CHECK(fabs(V("kiln:sched_max_itl_seconds", "}") - 0.025) < 1e-12, "itl target");
    KT_CHECK(fabs(V("kiln:sched_step_cost_seconds", ",term=\"fixed\"}") - 0.008) < 1e-12, "cost fixed");
    KT_CHECK(fabs(V("kiln:sched_step_cost_seconds", ",term=\"prefill_token\"}") - 2e-5) < 1e-12, "cost token");
    KT_CHECK(fabs(V("kiln:sched_step_cost_seconds", ",term=\"decode_row\"}") - 5e-5) < 1e-12, "cost row");
    KT_CHECK(V("kiln:sched_step_cost_samples_total", "}") == 12, "cost samples");
    KT_CHECK(V("kiln:sched_prefill_budget_tokens", "}") == 600, "prefill budget");
    KT_CHECK(V("kiln:sched_mixed_steps_total", "}") == 7, "mixed steps");
    KT_CHECK(V("kiln:sched_itl_limited_steps_total", "}") == 4, "limited steps");
    KT_CHECK(fabs(V("kiln:sched_max_step_seconds", "}") - 0.5) < 1e-12, "step target");
    KT_CHECK(fabs(V("kiln:sched_step_cost_seconds", ",term=\"attention_kkey\"}") - 3e-4) < 1e-12, "cost attention");
    KT_CHECK(V("kiln:sched_step_limited_steps_total", "}") == 9, "step-limited steps");
    KT_CHECK(V("vllm:e2e_request_latency_seconds_bucket", ",le=\"1\"}") == 1, "e2e le 1");
    KT_CHECK(V("vllm:e2e_request_latency_seconds_bucket", ",le=\"7680\"}") == 3, "e2e le 7680");
    KT_CHECK(V("vllm:e2e_request_latency_seconds_count", "}") == 3, "e2e count");
    KT_CHECK(strstr(t, "# TYPE vllm:e2e_request_latency_seconds histogram\n") != NULL, "histogram TYPE");
    KT_CHECK(strstr(t, "# TYPE vllm:generation_tokens_total counter\n") != NULL, "counter TYPE");
    /* issue 17: the weight and KV dtypes */
    KT_CHECK(strstr(t, ",block_size=\"16\",cache_dtype=\"fp8_e4m3\",num_gpu_blocks=\"100\"} 1\n") != NULL,
             "vllm:cache_config_info names the KV dtype");
    KT_CHECK(strstr(t, ",weight_dtype=\"f8_e4m3\",quantization=\"online fp8: \\\"x\\\"\"} 1\n") != NULL,
             "kiln:model_config_info names the weight dtype (label escaped)");
    /* every line: a comment or `name{labels} value` */
    int lines = 0, bad = 0;
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        if (!nl) { bad++; break; }
        if (*p != '#') {
            const char *sp = nl;
            while (sp > p && sp[-1] != ' ') sp--;
            char *end;
            strtod(sp, &end);
            if (end != nl || sp == p || !(p[0] == 'v' || p[0] == 'k')) bad++;
        }
        lines++;
        p = nl + 1;
    }
    KT_CHECK(lines > 50 && bad == 0, "%d lines, %d malformed", lines, bad);
    kiln_buf_free(&b);
    kiln_metrics_destroy(&m);
    return kt_done();
}
