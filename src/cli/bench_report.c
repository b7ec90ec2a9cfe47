/* bench_report.c: the benchmark's JSON (schema "kiln.bench.v1", jansson) and Markdown tables.
 *
 * JSON: {schema, kiln_version, date, machine{cpu, cores, card, threads, mem_bandwidth_gbs,
 * peak_fma_gflops, fma_isa}, backend, threads, model{path, load_format, arch, dim, hidden_dim,
 * n_layers, n_heads, n_kv_heads, head_dim, vocab_size, dtype, params, weight_bytes},
 * config{prompt_len, decode_steps, warmup, repeat, seed, max_batch_tokens, max_seqs, kv_blocks,
 * block_size, prefix_cache, scratch_bytes, kv_bytes, graph_buckets}, memory{peak_rss_bytes,
 * backend_kv_bytes, backend_scratch_bytes}, results[{batch, prefill_tok_s, decode_tok_s,
 * step_latency_ms, ttft_ms, host_ms_per_step, backend_ms_per_step: {median, min, max} each,
 * decode_floor_ms, decode_floor_fraction, prefill_floor_ms, prefill_floor_fraction, steps,
 * syncs, syncs_per_step_min, syncs_per_step_max, allocs_in_step_loop}], scaling[{batch,
 * vs_batch1, efficiency_pct, status}]}. Fractions: floor time / measured time (1 = at the floor).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "cli/bench.h"
#include "format/dtype.h"

static json_t *stat_json(const kiln_bench_stat *s) {
    return json_pack("{s:f, s:f, s:f}", "median", s->med, "min", s->min, "max", s->max);
}

static void today(char *buf, size_t cap) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%d", &tm);
}

json_t *kiln_bench_to_json(const kiln_bench_result *r) {
    char date[32];
    today(date, sizeof date);
    const kiln_bench_machine *m = &r->mach;
    json_t *j = json_object();
    json_object_set_new(j, "schema", json_string("kiln.bench.v1"));
    json_object_set_new(j, "kiln_version", json_string(KILN_VERSION));
    json_object_set_new(j, "date", json_string(date));
    json_object_set_new(j, "machine",
                        json_pack("{s:s, s:i, s:s?, s:i, s:f, s:f, s:s}", "cpu", m->cpu, "cores", m->cores, "card",
                                  m->card[0] ? m->card : NULL, "threads", m->threads, "mem_bandwidth_gbs", m->mem_bw_gbs,
                                  "peak_fma_gflops", m->fma_gflops, "fma_isa", m->fma_isa));
    json_object_set_new(json_object_get(j, "machine"), "peak_int8_gops", json_real(m->int8_gops));
    json_object_set_new(json_object_get(j, "machine"), "int8_isa", json_string(m->int8_isa));
    json_object_set_new(json_object_get(j, "machine"), "peak_amx_int8_gops", json_real(m->amx_gops));
    json_object_set_new(j, "backend", json_string(r->info.backend ? r->info.backend : "?"));
    json_object_set_new(j, "threads", json_integer(m->threads));
    json_t *mj = json_object();
    json_object_set_new(mj, "path", json_string(r->model_path ? r->model_path : ""));
    json_object_set_new(mj, "load_format", json_string(r->load_dummy ? "dummy" : "auto"));
    json_object_set_new(mj, "arch", json_string(r->arch));
    json_object_set_new(mj, "dim", json_integer(r->shape[0]));
    json_object_set_new(mj, "hidden_dim", json_integer(r->shape[1]));
    json_object_set_new(mj, "n_layers", json_integer(r->shape[2]));
    json_object_set_new(mj, "n_heads", json_integer(r->shape[3]));
    json_object_set_new(mj, "n_kv_heads", json_integer(r->shape[4]));
    json_object_set_new(mj, "head_dim", json_integer(r->shape[5]));
    json_object_set_new(mj, "vocab_size", json_integer(r->shape[6]));
    json_object_set_new(mj, "dtype", json_string(r->dtype));
    json_object_set_new(mj, "quantization", json_string(r->info.quantization));
    json_object_set_new(mj, "kv_cache_dtype", json_string(kiln_kv_dtype_name(r->info.kv_layout.dtype)));
    json_object_set_new(mj, "params", json_integer(r->params));
    json_object_set_new(mj, "weight_bytes", json_integer((json_int_t)r->weight_bytes));
    json_object_set_new(j, "model", mj);
    const kiln_engine_info *in = &r->info;
    json_t *cj = json_object();
    json_object_set_new(cj, "prompt_len", json_integer(r->opt.prompt_len));
    json_object_set_new(cj, "decode_steps", json_integer(r->opt.decode_steps));
    json_object_set_new(cj, "warmup", json_integer(r->opt.warmup));
    json_object_set_new(cj, "repeat", json_integer(r->opt.repeat));
    json_object_set_new(cj, "seed", json_integer((json_int_t)r->opt.seed));
    json_object_set_new(cj, "max_batch_tokens", json_integer(in->max_batch_tokens));
    json_object_set_new(cj, "max_seqs", json_integer(in->max_seqs));
    json_object_set_new(cj, "max_model_len", json_integer(in->max_model_len));
    json_object_set_new(cj, "kv_blocks", json_integer(in->kv_layout.n_blocks));
    json_object_set_new(cj, "block_size", json_integer(in->block_size));
    json_object_set_new(cj, "prefix_cache", json_boolean(in->prefix_cache));
    json_object_set_new(cj, "scratch_bytes", json_integer((json_int_t)in->backend_scratch_bytes));
    json_object_set_new(cj, "kv_bytes", json_integer((json_int_t)in->backend_kv_bytes));
    json_object_set_new(cj, "graph_buckets",
                        json_string(in->backend && !strcmp(in->backend, "cpu") ? "N/A on cpu" : "not reported"));
    if (r->opt.json_schema) /* constrained decoding (issue 18): the schema and the mask work */
        json_object_set_new(cj, "json_schema", json_pack("{s:s, s:I, s:I, s:I}", "path",
                                                         r->opt.json_schema_path ? r->opt.json_schema_path : "",
                                                         "masks_computed", (json_int_t)r->masks_computed,
                                                         "masks_cached", (json_int_t)r->masks_cached,
                                                         "grammar_drains", (json_int_t)r->grammar_drains));
    json_object_set_new(j, "config", cj);
    json_object_set_new(j, "memory", json_pack("{s:I, s:I, s:I}", "peak_rss_bytes", (json_int_t)r->peak_rss,
                                               "backend_kv_bytes", (json_int_t)in->backend_kv_bytes,
                                               "backend_scratch_bytes", (json_int_t)in->backend_scratch_bytes));
    json_t *res = json_array(), *sc = json_array();
    for (int i = 0; i < r->n_pts; i++) {
        const kiln_bench_point *p = &r->pts[i];
        json_t *o = json_object();
        json_object_set_new(o, "batch", json_integer(p->batch));
        json_object_set_new(o, "prefill_tok_s", stat_json(&p->prefill_tps));
        json_object_set_new(o, "decode_tok_s", stat_json(&p->decode_tps));
        json_object_set_new(o, "step_latency_ms", stat_json(&p->step_ms));
        json_object_set_new(o, "ttft_ms", stat_json(&p->ttft_ms));
        json_object_set_new(o, "host_ms_per_step", stat_json(&p->host_ms));
        json_object_set_new(o, "backend_ms_per_step", stat_json(&p->backend_ms));
        json_object_set_new(o, "decode_floor_ms", json_real(p->decode_floor_ms));
        json_object_set_new(o, "decode_floor_fraction", json_real(p->step_ms.med > 0 ? p->decode_floor_ms / p->step_ms.med : 0));
        json_object_set_new(o, "prefill_floor_ms", json_real(p->prefill_floor_ms));
        json_object_set_new(o, "decode_int8_fraction", json_real(p->step_ms.med > 0 ? p->decode_int8_ms / p->step_ms.med : 0));
        json_object_set_new(o, "prefill_int8_fraction", json_real(p->ttft_ms.med > 0 ? p->prefill_int8_ms / p->ttft_ms.med : 0));
        json_object_set_new(o, "prefill_floor_fraction", json_real(p->ttft_ms.med > 0 ? p->prefill_floor_ms / p->ttft_ms.med : 0));
        json_object_set_new(o, "steps", json_integer((json_int_t)p->steps));
        json_object_set_new(o, "syncs", json_integer((json_int_t)p->syncs));
        json_object_set_new(o, "syncs_per_step_min", json_integer(p->sync_min));
        json_object_set_new(o, "syncs_per_step_max", json_integer(p->sync_max));
        json_object_set_new(o, "allocs_in_step_loop", json_integer((json_int_t)p->allocs));
        json_array_append_new(res, o);
        double vs = r->pts[0].decode_tps.med > 0 ? p->decode_tps.med / r->pts[0].decode_tps.med : 0;
        double eff = 100.0 * vs * r->pts[0].batch / p->batch;
        json_array_append_new(sc, json_pack("{s:i, s:f, s:f, s:s}", "batch", p->batch, "vs_batch1", vs, "efficiency_pct", eff,
                                            "status", kiln_bench_scaling_status(r, i)));
    }
    json_object_set_new(j, "results", res);
    json_object_set_new(j, "scaling", sc);
    return j;
}

static void human_bytes(char *buf, size_t cap, double b) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int k = 0;
    while (b >= 1024 && k < 4) { b /= 1024; k++; }
    snprintf(buf, cap, k ? "%.1f %s" : "%.0f %s", b, u[k]);
}

void kiln_bench_print_header(FILE *f, const kiln_bench_result *r) {
    char wb[32], rss[32];
    human_bytes(wb, sizeof wb, (double)r->weight_bytes);
    human_bytes(rss, sizeof rss, (double)r->peak_rss);
    fprintf(f, "**kiln**: %s  \n", KILN_VERSION);
    fprintf(f, "**Model**: %s%s (%s, dim %d, hidden %d, %d layers, %d heads / %d KV heads, head_dim %d, vocab %d, "
               "%s, %.3gM parameters, %s)  \n",
            r->model_path, r->load_dummy ? " [dummy weights]" : "", r->arch, r->shape[0], r->shape[1], r->shape[2],
            r->shape[3], r->shape[4], r->shape[5], r->shape[6], r->dtype, (double)r->params / 1e6, wb);
    fprintf(f, "**Weights / KV cache**: %s%s%s%s / %s  \n", r->dtype, r->info.quantization[0] ? " (" : "",
            r->info.quantization, r->info.quantization[0] ? ")" : "", kiln_kv_dtype_name(r->info.kv_layout.dtype));
#ifndef KILN_GIT_COMMIT
#define KILN_GIT_COMMIT "unknown"
#endif
    fprintf(f, "**Commit**: %s (at configure time)  \n", KILN_GIT_COMMIT);
    fprintf(f, "**Hardware**: %s, %d cores%s%s; backend %s, %d threads  \n", r->mach.cpu, r->mach.cores,
            r->mach.card[0] ? "; card " : "", r->mach.card, r->info.backend, r->mach.threads);
    if (r->mach.gpu_floors)
        fprintf(f, "**Floors (measured in this run)**: GPU copy bandwidth %.2f TB/s (read + write), bf16 GEMM %.0f TFLOP/s (cuBLASLt 8192^3)  \n",
                r->mach.mem_bw_gbs / 1e3, r->mach.fma_gflops / 1e3);
    else
        fprintf(f, "**Floors (measured in this run)**: host memory read %.1f GB/s (%d threads), peak f32 FMA %.1f GFLOP/s (%s), "
                   "peak int8 dot %.1f GOP/s (%s)  \n",
                r->mach.mem_bw_gbs, r->mach.threads, r->mach.fma_gflops, r->mach.fma_isa, r->mach.int8_gops,
                r->mach.int8_isa[0] ? r->mach.int8_isa : "none");
    if (r->mach.amx_gops > 0)
        fprintf(f, "**AMX**: int8 tiles %.1f GOP/s (%d threads); W x A8 products of 16+ rows run on them (KILN_CPU_ACT=q8; "
                   "KILN_CPU_AMX=0 turns them off); %% of int8 peak below is of the %s rate  \n",
                r->mach.amx_gops, r->mach.threads, r->mach.int8_isa);
    if (r->opt.json_schema)
        fprintf(f, "**Constrained**: every request by the JSON schema %s (greedy, EOS ignored); grammar masks %llu walked, "
                   "%llu from cache, %llu drained overlap steps  \n",
                r->opt.json_schema_path ? r->opt.json_schema_path : "(given)", (unsigned long long)r->masks_computed,
                (unsigned long long)r->masks_cached, (unsigned long long)r->grammar_drains);
    fprintf(f, "**Prompt Length**: %d tokens  \n**Decode Steps**: %d  \n**Repeats**: %d (+%d warmup), medians with min-max spread  \n",
            r->opt.prompt_len, r->opt.decode_steps, r->opt.repeat, r->opt.warmup);
    char kv[32], sc[32];
    human_bytes(kv, sizeof kv, (double)r->info.backend_kv_bytes);
    human_bytes(sc, sizeof sc, (double)r->info.backend_scratch_bytes);
    fprintf(f, "**Memory**: peak RSS %s (VmHWM), backend KV pool %s, scratch %s\n", rss, kv, sc);
}

void kiln_bench_print_tables(FILE *f, const kiln_bench_result *r, const char *h) {
    fprintf(f, "%s Throughput (prompt_len=%d, decode_steps=%d)\n\n", h, r->opt.prompt_len, r->opt.decode_steps);
    fprintf(f, "| Batch | Prefill tok/s | Decode tok/s | Decode Latency | TTFT | Host/step | Spread (decode tok/s min-max) |\n");
    fprintf(f, "|-------|--------------|--------------|----------------|------|-----------|------------------------------|\n");
    for (int i = 0; i < r->n_pts; i++) {
        const kiln_bench_point *p = &r->pts[i];
        fprintf(f, "| %d | %.1f | %.1f | %.2f ms | %.1f ms | %.3f ms | %.1f-%.1f |\n", p->batch, p->prefill_tps.med,
                p->decode_tps.med, p->step_ms.med, p->ttft_ms.med, p->host_ms.med, p->decode_tps.min, p->decode_tps.max);
    }
    fprintf(f, "\n%s Batch Scaling Analysis\n\n", h);
    fprintf(f, "| Batch | vs Batch %d | Efficiency | Status |\n|-------|-----------|------------|--------|\n", r->pts[0].batch);
    for (int i = 0; i < r->n_pts; i++) {
        const kiln_bench_point *p = &r->pts[i];
        double vs = r->pts[0].decode_tps.med > 0 ? p->decode_tps.med / r->pts[0].decode_tps.med : 0;
        fprintf(f, "| %d | %.2fx | %.1f%% | %s |\n", p->batch, vs, 100.0 * vs * r->pts[0].batch / p->batch,
                kiln_bench_scaling_status(r, i));
    }
    fprintf(f, "\nLINEAR: decode step latency <= 1.10x batch %d's; SUBLINEAR beyond; CLIFF: decode tok/s drops as the batch grows.\n",
            r->pts[0].batch);
    fprintf(f, "\n%s Fraction of the floor\n\n", h);
    fprintf(f, "| Batch | Decode floor | Decode %% of floor | Prefill floor | Prefill %% of floor |\n");
    fprintf(f, "|-------|--------------|-------------------|---------------|--------------------|\n");
    for (int i = 0; i < r->n_pts; i++) {
        const kiln_bench_point *p = &r->pts[i];
        fprintf(f, "| %d | %.3f ms | %.1f%% | %.2f ms | %.1f%% |\n", p->batch, p->decode_floor_ms,
                p->step_ms.med > 0 ? 100.0 * p->decode_floor_ms / p->step_ms.med : 0, p->prefill_floor_ms,
                p->ttft_ms.med > 0 ? 100.0 * p->prefill_floor_ms / p->ttft_ms.med : 0);
    }
    if (r->mach.int8_gops > 0) {
        fprintf(f, "\n| Batch | Decode %% of int8 peak | Prefill %% of int8 peak |\n|-------|----------------------|-----------------------|\n");
        for (int i = 0; i < r->n_pts; i++) {
            const kiln_bench_point *p = &r->pts[i];
            fprintf(f, "| %d | %.1f%% | %.1f%% |\n", p->batch,
                    p->step_ms.med > 0 ? 100.0 * p->decode_int8_ms / p->step_ms.med : 0,
                    p->ttft_ms.med > 0 ? 100.0 * p->prefill_int8_ms / p->ttft_ms.med : 0);
        }
        fprintf(f, "\n%% of int8 peak: the FLOPs (2 per weight per token, + attention for prefill) at the measured int8 "
                   "dot-product rate / the measured time (the ceiling of W x A8, KILN_CPU_ACT=q8).\n");
    }
    fprintf(f, "\nDecode floor: (weights read once per step, %zu bytes, + the batch's KV (in the pool's element type) at the mean context) / the measured "
               "memory bandwidth. Prefill floor: FLOPs (2 per weight per token + causal attention) / the measured peak FMA "
               "rate. %% of floor = floor time / measured time.%s\n",
            r->decode_weight_bytes,
            r->n_experts > 0 ? " MoE: a step reads the experts its tokens pick (E (1 - (1 - k/E)^B) expected, uniform "
                               "routing) and a token's FLOPs count its k experts." : "");
}
