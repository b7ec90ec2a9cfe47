/* cmd_validate.c: `kiln validate`: the benchmark plus the invariant and coherence checks,
 * written as the Markdown report of shared/reference/engine-validation-report.md (same
 * sections), a JSON twin (schema "kiln.validate.v1", the bench JSON embedded) and a PNG chart
 * of decode tok/s against batch size (gnuplot; its absence is reported, not fatal).
 *
 *   kiln validate [model/engine options as kiln bench] [--out report.md]
 *
 * Every PASS comes from a check that ran and could fail; N/A carries its reason:
 *   I3 strict      strict mode (KILN_STRICT=1) is set for the run; the engine must report it in effect, and
 *                  every step must succeed (a fallback is a KILN_ERR_STRICT failure).
 *   I1 sync        per-step delta of the engine's sync counter == 1 on every step (bench runs
 *                  and coherence runs), and total syncs == total steps.
 *   I2 KV pool     the backend's memory() KV bytes == the engine's layout size
 *                  (layers x blocks x 2 x kv_heads x block_size x head_dim x element bytes).
 *   I7 no alloc    kiln_alloc_count() does not move across any kiln_engine_step call.
 *   I4 no cliff    decode tok/s never drops as the batch grows (N/A with one batch size).
 *   coherence      greedy outputs (ids and raw logprobs, bit-identical on the CPU):
 *                  one prompt replicated at batch 1/4/8; distinct prompts batched vs solo;
 *                  a mixed-length batch vs solo; text coherence against the model's published
 *                  greedy golden (golden_greedy_*.json beside the model) when there is one.
 * Exit code: 0 when the verdict is PASS, 1 when FAIL, 2 on a usage error.
 */
#include <glob.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/bench.h"
#include "cli/cli.h"
#include "util/alloc.h"
#include "util/error.h"

#define ST_PASS "PASS"
#define ST_FAIL "FAIL"
#define ST_NA "N/A"

typedef struct check {
    const char *name, *status;
    char notes[768];
} check;

typedef struct inv_acc { uint64_t steps, syncs, allocs; int sync_min, sync_max; } inv_acc;

static void acc_rec(inv_acc *a, const kiln_bench_rec *r) {
    a->steps += r->steps;
    a->syncs += r->syncs;
    a->allocs += r->allocs;
    if (r->steps && r->sync_min < a->sync_min) a->sync_min = r->sync_min;
    if (r->sync_max > a->sync_max) a->sync_max = r->sync_max;
}

/* Sequences i and j of two output sets are equal: ids and logprob bits. */
static int same_out(const int32_t *ia, const float *la, const int32_t *ib, const float *lb, int n) {
    return !memcmp(ia, ib, (size_t)n * sizeof(int32_t)) && !memcmp(la, lb, (size_t)n * sizeof(float));
}

typedef struct coh_row { int batch, n_identical; const char *identical, *coherent, *status; } coh_row;

typedef struct golden { int32_t prompt[64]; int n_prompt; int32_t gen[256]; int n_gen; char file[1024]; } golden;

/* golden_greedy_*.json beside the model: {prompt_ids: [...], generated_ids: [...]} */
static int find_golden(const char *model_path, golden *g) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", model_path);
    char pat[1100];
    snprintf(pat, sizeof pat, "%s/golden_greedy_*.json", dirname(dir));
    glob_t gl;
    int found = 0;
    if (glob(pat, 0, NULL, &gl) == 0 && gl.gl_pathc > 0) {
        json_error_t je;
        json_t *j = json_load_file(gl.gl_pathv[0], 0, &je);
        json_t *p = j ? json_object_get(j, "prompt_ids") : NULL, *o = j ? json_object_get(j, "generated_ids") : NULL;
        if (json_is_array(p) && json_is_array(o) && json_array_size(p) > 0 && json_array_size(p) <= 64) {
            g->n_prompt = (int)json_array_size(p);
            for (int i = 0; i < g->n_prompt; i++) g->prompt[i] = (int32_t)json_integer_value(json_array_get(p, (size_t)i));
            g->n_gen = 0;
            for (size_t i = 0; i < json_array_size(o) && g->n_gen < 256; i++) g->gen[g->n_gen++] = (int32_t)json_integer_value(json_array_get(o, i));
            snprintf(g->file, sizeof g->file, "%s", gl.gl_pathv[0]);
            found = 1;
        }
        json_decref(j);
    }
    globfree(&gl);
    return found;
}

static void derive(char *out, size_t cap, const char *md, const char *ext) {
    snprintf(out, cap, "%s", md);
    size_t n = strlen(out);
    if (n > 3 && !strcmp(out + n - 3, ".md")) out[n - 3] = 0;
    strncat(out, ext, cap - strlen(out) - 1);
}

/* PNG chart of decode tok/s per batch size; returns 1 if written, else a note in `note`. */
static int chart(const kiln_bench_result *r, const char *png, char *note, size_t cap) {
    if (strchr(png, '\'')) { snprintf(note, cap, "chart not drawn: the output path contains a quote"); return 0; }
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        snprintf(note, cap, "chart not drawn: gnuplot is not installed (Debian package gnuplot-nox)");
        return 0;
    }
    FILE *p = popen("gnuplot 2>/dev/null", "w");
    if (!p) { snprintf(note, cap, "chart not drawn: gnuplot could not be started"); return 0; }
    fprintf(p, "set terminal png size 800,500\nset output '%s'\nset title 'kiln %s decode throughput (prompt %d, %d steps)'\n"
               "set xlabel 'batch size'\nset ylabel 'decode tok/s'\nset logscale x 2\nset grid\nset key left top\n"
               "plot '-' using 1:2:3:4 with yerrorlines title 'decode tok/s (median, min-max)', '-' using 1:2 with lines dt 2 title 'linear from batch %d'\n",
            png, r->info.backend, r->opt.prompt_len, r->opt.decode_steps, r->pts[0].batch);
    for (int i = 0; i < r->n_pts; i++)
        fprintf(p, "%d %g %g %g\n", r->pts[i].batch, r->pts[i].decode_tps.med, r->pts[i].decode_tps.min, r->pts[i].decode_tps.max);
    fprintf(p, "e\n");
    for (int i = 0; i < r->n_pts; i++)
        fprintf(p, "%d %g\n", r->pts[i].batch, r->pts[0].decode_tps.med * r->pts[i].batch / r->pts[0].batch);
    fprintf(p, "e\n");
    int rc = pclose(p);
    FILE *f = fopen(png, "rb");
    long sz = 0;
    if (f) { fseek(f, 0, SEEK_END); sz = ftell(f); fclose(f); }
    if (rc != 0 || sz <= 0) { snprintf(note, cap, "chart not drawn: gnuplot failed (exit %d)", rc); return 0; }
    snprintf(note, cap, "%s", png);
    return 1;
}

static void usage(void) {
    fprintf(stderr, "usage: kiln validate --model PATH | --load-format dummy --model CONFIG.json [--backend cpu|cuda]\n"
                    "         [--batch 1,2,4,8,16] [--prompt-len 512] [--decode-steps 64] [--warmup 1] [--repeat 3]\n"
                    "         [--threads N] [--out report.md]   (writes report.md, report.json, report.png)\n");
}

int kiln_cmd_validate(int argc, char **argv) {
    kiln_engine_options eo;
    kiln_bench_opts bo;
    const char *out_md = "validation-report.md";
    int user_mbt;
    int pr = kiln_bench_parse_args(argc, argv, "validate", "--out", &out_md, &eo, &bo, &user_mbt, usage);
    if (pr) return pr > 0 ? 0 : 2;
    char out_json[1100], out_png[1100];
    derive(out_json, sizeof out_json, out_md, ".json");
    derive(out_png, sizeof out_png, out_md, ".png");
    kiln_bench_engine_options(&eo, &bo, user_mbt, 8);
    eo.strict = 1; /* I3: strict mode for the whole run (what KILN_STRICT=1 sets) */
    kiln_bench_result *res = kiln_calloc(1, sizeof *res);
    if (!res) return 1;
    res->model_path = eo.model_path;
    res->load_dummy = eo.load_dummy;
    if (bo.progress) fprintf(stderr, "kiln validate: measuring memory bandwidth and FMA rate\n");
    kiln_bench_probe_machine(&res->mach, eo.backend, eo.n_threads);
    kiln_error err = {0};
    kiln_engine *e = NULL;
    if (kiln_engine_open(&e, &eo, &err)) {
        kiln_cli_print_error("validate", &err);
        fprintf(stderr, "kiln validate: verdict FAIL (the engine did not open under KILN_STRICT=1)\n");
        kiln_free(res);
        return 1;
    }
    if (kiln_bench_fit(e, &bo, "validate")) { kiln_engine_close(e); kiln_free(res); return 2; }
    int rc = kiln_bench_run(e, &bo, res, &err);
    /* ---- coherence ---- */
    const kiln_config *mc = &kiln_engine_model(e)->cfg;
    int L = bo.prompt_len, G = bo.decode_steps < 32 ? bo.decode_steps : 32;
    inv_acc acc = {res->steps, res->syncs, res->allocs, res->sync_min, res->sync_max};
    if (!res->steps) acc.sync_min = 1 << 30;
    int32_t *pbuf = kiln_malloc((size_t)8 * L * sizeof(int32_t));
    int32_t *ids = kiln_malloc((size_t)8 * G * sizeof(int32_t)), *sids = kiln_malloc((size_t)G * sizeof(int32_t));
    float *lps = kiln_malloc((size_t)8 * G * sizeof(float)), *slps = kiln_malloc((size_t)G * sizeof(float));
    int32_t *base_ids = kiln_malloc((size_t)G * sizeof(int32_t));
    float *base_lp = kiln_malloc((size_t)G * sizeof(float));
    if (!rc && (!pbuf || !ids || !sids || !lps || !slps || !base_ids || !base_lp)) rc = KILN_ERR(&err, KILN_ERR_OOM, "validate: out of memory");
    coh_row coh[3];
    int n_coh = 0;
    check corr[3];
    golden *gold = kiln_calloc(1, sizeof *gold);
    const char *coherent = ST_NA;
    char coherent_note[1400];
    if (eo.load_dummy) snprintf(coherent_note, sizeof coherent_note, "text coherence is N/A on dummy (random) weights");
    else snprintf(coherent_note, sizeof coherent_note, "no published greedy golden beside the model: text coherence not judged");
    /* golden text check (batch 1) */
    if (!rc && gold && !eo.load_dummy && find_golden(eo.model_path, gold)) {
        int n = 0;
        while (n < gold->n_gen && n < 64 && gold->gen[n] != (mc->bos_id >= 0 ? mc->bos_id : -1)) n++;
        kiln_engine_info in;
        kiln_engine_get_info(e, &in);
        if (n > in.max_model_len - gold->n_prompt - 1) n = in.max_model_len - gold->n_prompt - 1;
        int32_t *gp = gold->prompt;
        kiln_bench_rec rec;
        int32_t *go = kiln_malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
        if (n > 0 && go && !(rc = kiln_bench_requests(e, 1, &gp, &gold->n_prompt, n, go, NULL, &rec, &err))) {
            acc_rec(&acc, &rec);
            int k = 0;
            while (k < n && go[k] == gold->gen[k]) k++;
            coherent = k == n ? "Yes" : "No";
            snprintf(coherent_note, sizeof coherent_note, "greedy output vs the published golden %s: %d/%d tokens equal", gold->file, k, n);
        }
        kiln_free(go);
    }
    /* 1. one prompt replicated across batch 1, 4, 8 */
    const int cb[3] = {1, 4, 8};
    for (int c = 0; !rc && c < 3; c++) {
        int B = cb[c];
        int32_t *pp[8];
        int lens[8];
        kiln_bench_random_ids(pbuf, L, mc->vocab_size, bo.seed * 31u + 7u);
        for (int i = 0; i < B; i++) { pp[i] = pbuf; lens[i] = L; }
        kiln_bench_rec rec;
        if ((rc = kiln_bench_requests(e, B, pp, lens, G, ids, lps, &rec, &err))) break;
        acc_rec(&acc, &rec);
        coh_row *row = &coh[n_coh++];
        row->batch = B;
        row->coherent = coherent;
        if (B == 1) {
            memcpy(base_ids, ids, (size_t)G * sizeof(int32_t));
            memcpy(base_lp, lps, (size_t)G * sizeof(float));
            row->identical = ST_NA;
            row->n_identical = 1;
            row->status = !strcmp(coherent, "Yes") ? ST_PASS : !strcmp(coherent, "No") ? ST_FAIL : ST_NA;
            continue;
        }
        int k = 0;
        for (int i = 0; i < B; i++) k += same_out(ids + (size_t)i * G, lps + (size_t)i * G, base_ids, base_lp, G);
        row->n_identical = k;
        row->identical = k == B ? "Yes" : "No";
        row->status = k == B && strcmp(coherent, "No") ? ST_PASS : ST_FAIL;
    }
    /* 2. distinct prompts in one batch vs solo; 3. mixed lengths vs solo */
    for (int c = 0; !rc && c < 2; c++) {
        int B = 4;
        int32_t *pp[4];
        int lens[4];
        int mixed[4] = {L, L / 2 + 3 < L ? L / 2 + 3 : L, L / 4 + 1, L < 5 ? L : 5};
        for (int i = 0; i < B; i++) {
            pp[i] = pbuf + (size_t)i * L;
            lens[i] = c == 0 ? L : mixed[i];
            kiln_bench_random_ids(pp[i], lens[i], mc->vocab_size, bo.seed * 977u + 100u * (uint64_t)c + (uint64_t)i);
        }
        kiln_bench_rec rec;
        if ((rc = kiln_bench_requests(e, B, pp, lens, G, ids, lps, &rec, &err))) break;
        acc_rec(&acc, &rec);
        int k = 0;
        for (int i = 0; i < B && !rc; i++) {
            if ((rc = kiln_bench_requests(e, 1, &pp[i], &lens[i], G, sids, slps, &rec, &err))) break;
            acc_rec(&acc, &rec);
            k += same_out(ids + (size_t)i * G, lps + (size_t)i * G, sids, slps, G);
        }
        check *ch = &corr[c];
        ch->name = c == 0 ? "Distinct prompts batched == solo runs" : "Mixed-length batch == solo runs";
        ch->status = k == B ? ST_PASS : ST_FAIL;
        if (c == 0) snprintf(ch->notes, sizeof ch->notes, "%d/%d sequences bit-identical (ids + logprobs, %d tokens) to their solo run; %d distinct random prompts of %d tokens", k, B, G, B, L);
        else snprintf(ch->notes, sizeof ch->notes, "%d/%d sequences bit-identical (ids + logprobs, %d tokens) to their solo run; prompt lengths %d, %d, %d, %d", k, B, G, lens[0], lens[1], lens[2], lens[3]);
    }
    if (rc) {
        kiln_cli_print_error("validate", &err);
        fprintf(stderr, "kiln validate: verdict FAIL (%s)\n", err.code == KILN_ERR_STRICT ? "strict mode violation" : "the run failed");
        kiln_engine_close(e);
        kiln_free(pbuf); kiln_free(ids); kiln_free(sids); kiln_free(lps); kiln_free(slps); kiln_free(base_ids); kiln_free(base_lp);
        kiln_free(gold); kiln_free(res);
        return 1;
    }
    if (acc.sync_min > acc.sync_max) acc.sync_min = acc.sync_max;
    kiln_engine_info in;
    kiln_engine_get_info(e, &in);
    res->peak_rss = kiln_bench_peak_rss();

    /* ---- invariants ---- */
    check inv[5];
    inv[0].name = "Strict mode, no fallback in the hot path (I3)";
    inv[0].status = in.strict ? ST_PASS : ST_FAIL;
    snprintf(inv[0].notes, sizeof inv[0].notes, "KILN_STRICT=1 set for the run; engine reports strict %s; %llu steps ran without a strict-mode error",
             in.strict ? "on" : "OFF", (unsigned long long)acc.steps);
    inv[1].name = "Step-boundary-only sync (I1)";
    inv[1].status = acc.steps > 0 && acc.sync_min == 1 && acc.sync_max == 1 && acc.syncs == acc.steps ? ST_PASS : ST_FAIL;
    snprintf(inv[1].notes, sizeof inv[1].notes, "engine stats: %llu syncs over %llu steps; per-step syncs min %d, max %d (must be exactly 1 on every step)",
             (unsigned long long)acc.syncs, (unsigned long long)acc.steps, acc.sync_min, acc.sync_max);
    inv[2].name = "KV cache single source of truth (I2)";
    inv[2].status = in.backend_kv_bytes == in.kv_layout_bytes && in.kv_layout_bytes > 0 ? ST_PASS : ST_FAIL;
    snprintf(inv[2].notes, sizeof inv[2].notes,
             "backend memory() KV = %zu bytes; engine pool layout %d layers x %d blocks x 2 x %d kv_heads x %d slots x %d head_dim x %s = %zu bytes",
             in.backend_kv_bytes, in.kv_layout.n_layers, in.kv_layout.n_blocks, in.kv_layout.n_kv_heads, in.kv_layout.block_size,
             in.kv_layout.head_dim, in.kv_layout.elem_bytes == 2 ? "bf16" : "f32", in.kv_layout_bytes);
    inv[3].name = "No allocation in the step loop (I7)";
    inv[3].status = acc.steps > 0 && acc.allocs == 0 ? ST_PASS : ST_FAIL;
    snprintf(inv[3].notes, sizeof inv[3].notes, "kiln_alloc_count() moved by %llu across %llu kiln_engine_step calls", (unsigned long long)acc.allocs,
             (unsigned long long)acc.steps);
    inv[4].name = "No batch scaling cliff (I4)";
    int n_cliff = 0, last_lin = res->pts[0].batch;
    for (int i = 0; i < res->n_pts; i++) {
        const char *s = kiln_bench_scaling_status(res, i);
        n_cliff += !strcmp(s, "CLIFF");
        if (!strcmp(s, "LINEAR")) last_lin = res->pts[i].batch;
    }
    inv[4].status = res->n_pts < 2 ? ST_NA : n_cliff ? ST_FAIL : ST_PASS;
    if (res->n_pts < 2) snprintf(inv[4].notes, sizeof inv[4].notes, "one batch size measured: nothing to compare");
    else snprintf(inv[4].notes, sizeof inv[4].notes, "%d cliff(s) over batches %d..%d; linear (step latency <= 1.10x) up to batch %d",
                  n_cliff, res->pts[0].batch, res->pts[res->n_pts - 1].batch, last_lin);
    int inv_fail = 0, coh_fail = 0;
    for (int i = 0; i < 5; i++) inv_fail += !strcmp(inv[i].status, ST_FAIL);
    for (int i = 0; i < n_coh; i++) coh_fail += !strcmp(coh[i].status, ST_FAIL);
    for (int i = 0; i < 2; i++) coh_fail += !strcmp(corr[i].status, ST_FAIL);
    const char *verdict = inv_fail || coh_fail ? ST_FAIL : ST_PASS;

    char chart_note[1200];
    int have_chart = chart(res, out_png, chart_note, sizeof chart_note);

    /* ---- Markdown ---- */
    FILE *f = fopen(out_md, "w");
    if (!f) { fprintf(stderr, "kiln validate: cannot write %s\n", out_md); rc = 1; }
    json_t *bj = kiln_bench_to_json(res);
    const char *date = json_string_value(json_object_get(bj, "date"));
    if (f) {
        fprintf(f, "# Engine Validation Report\n\n**Date**: %s  \n", date);
        kiln_bench_print_header(f, res);
        fprintf(f, "\n---\n\n## Executive Summary\n\n");
        fprintf(f, "kiln %s on the %s backend %s validation: %d of 5 invariant checks failed, %d correctness check(s) failed. "
                   "Decode at batch %d runs at %.1f%% of the memory-bandwidth floor.\n",
                KILN_VERSION, in.backend, !strcmp(verdict, ST_PASS) ? "passes" : "FAILS", inv_fail, coh_fail, res->pts[0].batch,
                res->pts[0].step_ms.med > 0 ? 100 * res->pts[0].decode_floor_ms / res->pts[0].step_ms.med : 0.0);
        fprintf(f, "\n---\n\n## 1. Performance Results\n\n");
        kiln_bench_print_tables(f, res, "###");
        if (have_chart) {
            char tmp[1100];
            snprintf(tmp, sizeof tmp, "%s", out_png);
            fprintf(f, "\n![decode tok/s against batch size](%s)\n", basename(tmp));
        } else {
            fprintf(f, "\nChart: %s.\n", chart_note);
        }
        fprintf(f, "\n**Assessment**: linear (decode step latency <= 1.10x batch %d's) up to batch %d; %d scaling cliff(s).\n",
                res->pts[0].batch, last_lin, n_cliff);
        fprintf(f, "\n---\n\n## 2. Invariant Verification\n\n| Invariant | Status | Notes |\n|-----------|--------|-------|\n");
        for (int i = 0; i < 5; i++) fprintf(f, "| %s | %s | %s |\n", inv[i].name, inv[i].status, inv[i].notes);
        fprintf(f, "\nThe benchmark and every coherence run ran with `KILN_STRICT=1`; the counters cover all of their steps. "
                   "The KV check compares what the backend reports holding with the engine's paged-pool layout: any second KV "
                   "copy or differently sized pool makes them differ.\n");
        fprintf(f, "\n---\n\n## 3. Correctness Verification\n\n### Coherence Test Results\n\n");
        fprintf(f, "| Batch | Identical Outputs | Coherent | Status |\n|-------|------------------|----------|--------|\n");
        for (int i = 0; i < n_coh; i++) {
            if (coh[i].batch == 1) fprintf(f, "| 1 | N/A | %s | %s |\n", coh[i].coherent, coh[i].status);
            else fprintf(f, "| %d | %s (%d/%d) | %s | %s |\n", coh[i].batch, coh[i].identical, coh[i].n_identical, coh[i].batch,
                         coh[i].coherent, coh[i].status);
        }
        fprintf(f, "\n**Test**: one random prompt of %d token ids (seed %llu) replicated across the batch positions, %d greedy tokens; "
                   "identical = ids and raw logprobs bit-identical to the batch-1 run.  \n**Coherent**: %s.\n",
                L, (unsigned long long)bo.seed, G, coherent_note);
        fprintf(f, "\n### Batch Independence\n\n| Check | Status | Notes |\n|-------|--------|-------|\n");
        for (int i = 0; i < 2; i++) fprintf(f, "| %s | %s | %s |\n", corr[i].name, corr[i].status, corr[i].notes);
        fprintf(f, "\n---\n\n## 4. Configuration\n\n| Setting | Value | Notes |\n|---------|-------|-------|\n");
        fprintf(f, "| Scratch pool bytes | %zu | backend memory(), sized at load from max batch tokens x model shape |\n", in.backend_scratch_bytes);
        fprintf(f, "| Max batch tokens | %d | %s |\n", in.max_batch_tokens, user_mbt ? "given by the user" : "raised to max batch x prompt length (one-step prefill; at most 16384)");
        fprintf(f, "| KV blocks | %d | physical, the null block included |\n", in.kv_layout.n_blocks);
        fprintf(f, "| Block size | %d | tokens per KV block |\n", in.block_size);
        fprintf(f, "| KV pool bytes | %zu | f32 |\n", in.backend_kv_bytes);
        fprintf(f, "| Max sequences | %d | >= the largest batch |\n", in.max_seqs);
        fprintf(f, "| Max model length | %d | prompt + decode steps |\n", in.max_model_len);
        fprintf(f, "| Prefix cache | %s | off so that repeats recompute their prompts |\n", in.prefix_cache ? "on" : "off");
        fprintf(f, "| Graph buckets | %s | %s |\n", !strcmp(in.backend, "cpu") ? "N/A" : "not reported",
                !strcmp(in.backend, "cpu") ? "no CUDA graphs on the cpu backend" : "the backend does not report them yet");
        fprintf(f, "| Threads | %d | |\n", res->mach.threads);
        fprintf(f, "\n---\n\n## 5. Known Limitations\n\n");
        fprintf(f, "1. **Floors**: bandwidth and FMA floors come from micro-benchmarks in this process (%.1f GB/s, %.1f GFLOP/s %s); "
                   "they are upper bounds of this machine, not of the kernels.\n", res->mach.mem_bw_gbs, res->mach.fma_gflops, res->mach.fma_isa);
        fprintf(f, "2. **Prompts**: random token ids (fixed seed); coherence of text is judged only against a published golden.\n");
        fprintf(f, "3. **Shared machine**: timings are medians of %d repeats; other load on the host widens the spread.\n", bo.repeat);
        fprintf(f, "\n---\n\n## 6. Conclusion\n\n### Validation Status: %s\n\n| Category | Result |\n|----------|--------|\n", verdict);
        fprintf(f, "| Performance | MEASURED - batch %d decode %.1f tok/s, %.1f%% of the bandwidth floor |\n", res->pts[0].batch,
                res->pts[0].decode_tps.med, res->pts[0].step_ms.med > 0 ? 100 * res->pts[0].decode_floor_ms / res->pts[0].step_ms.med : 0.0);
        fprintf(f, "| Scaling | %s - %d cliff(s), linear up to batch %d |\n", inv[4].status, n_cliff, last_lin);
        fprintf(f, "| Invariants | %s - %d of 5 failed |\n", inv_fail ? ST_FAIL : ST_PASS, inv_fail);
        fprintf(f, "| Correctness | %s - %d check(s) failed |\n", coh_fail ? ST_FAIL : ST_PASS, coh_fail);
        fprintf(f, "\n**Verdict**: %s\n\n---\n\n*Generated by kiln validate %s, %s*\n", verdict, KILN_VERSION, date);
        fclose(f);
    }
    /* ---- JSON twin ---- */
    json_t *j = json_object();
    json_object_set_new(j, "schema", json_string("kiln.validate.v1"));
    json_object_set_new(j, "bench", bj);
    json_t *ja = json_array();
    for (int i = 0; i < 5; i++) json_array_append_new(ja, json_pack("{s:s, s:s, s:s}", "name", inv[i].name, "status", inv[i].status, "notes", inv[i].notes));
    json_object_set_new(j, "invariants", ja);
    json_object_set_new(j, "invariant_counters",
                        json_pack("{s:I, s:I, s:i, s:i, s:I}", "steps", (json_int_t)acc.steps, "syncs", (json_int_t)acc.syncs, "syncs_per_step_min",
                                  acc.sync_min, "syncs_per_step_max", acc.sync_max, "allocs_in_step_loop", (json_int_t)acc.allocs));
    ja = json_array();
    for (int i = 0; i < n_coh; i++)
        json_array_append_new(ja, json_pack("{s:i, s:s, s:i, s:s, s:s}", "batch", coh[i].batch, "identical", coh[i].identical, "identical_count",
                                            coh[i].n_identical, "coherent", coh[i].coherent, "status", coh[i].status));
    json_object_set_new(j, "coherence", ja);
    json_object_set_new(j, "coherence_note", json_string(coherent_note));
    ja = json_array();
    for (int i = 0; i < 2; i++) json_array_append_new(ja, json_pack("{s:s, s:s, s:s}", "name", corr[i].name, "status", corr[i].status, "notes", corr[i].notes));
    json_object_set_new(j, "correctness", ja);
    json_object_set_new(j, "configuration",
                        json_pack("{s:I, s:i, s:i, s:i, s:I, s:i, s:i, s:b, s:s}", "scratch_pool_bytes", (json_int_t)in.backend_scratch_bytes,
                                  "max_batch_tokens", in.max_batch_tokens, "kv_blocks", in.kv_layout.n_blocks, "block_size", in.block_size,
                                  "kv_pool_bytes", (json_int_t)in.backend_kv_bytes, "max_seqs", in.max_seqs, "max_model_len", in.max_model_len,
                                  "prefix_cache", in.prefix_cache, "graph_buckets", !strcmp(in.backend, "cpu") ? "N/A" : "not reported"));
    json_object_set_new(j, "categories",
                        json_pack("{s:s, s:s, s:s, s:s}", "performance", "MEASURED", "scaling", inv[4].status, "invariants",
                                  inv_fail ? ST_FAIL : ST_PASS, "correctness", coh_fail ? ST_FAIL : ST_PASS));
    json_object_set_new(j, "chart", have_chart ? json_string(out_png) : json_null());
    json_object_set_new(j, "chart_note", json_string(chart_note));
    json_object_set_new(j, "verdict", json_string(verdict));
    if (json_dump_file(j, out_json, JSON_INDENT(2) | JSON_REAL_PRECISION(8))) { fprintf(stderr, "kiln validate: cannot write %s\n", out_json); rc = 1; }
    json_decref(j);
    fprintf(stderr, "kiln validate: verdict %s; wrote %s, %s%s%s\n", verdict, out_md, out_json, have_chart ? ", " : "", have_chart ? out_png : "");
    kiln_engine_close(e);
    kiln_free(pbuf); kiln_free(ids); kiln_free(sids); kiln_free(lps); kiln_free(slps); kiln_free(base_ids); kiln_free(base_lp);
    kiln_free(gold); kiln_free(res);
    return rc ? 1 : !strcmp(verdict, ST_PASS) ? 0 : 1;
}
