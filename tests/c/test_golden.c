/* kiln-layer: engine (links only this layer and those below it) */
/* test_golden.c: the CPU backend end to end against oracles nobody here wrote.
 *   - stories260K: greedy from BOS, 256 steps == the sample its author published (ids + text)
 *   - tinystories-656K: prompt ids from our tokenizer == HF's; logits within 1e-3 of HF's;
 *     greedy ids == HF's
 *   - mistral-tiny-random (bf16) and -f16: logits against HF's (see the tolerance note below)
 *   - a Mistral-native copy of mistral-tiny-random (made by tests/tools/hf_to_mistral_native.py)
 *     gives the logits of the HF folder
 *   - every cpu.isa (KILN_CPU_ISA) path gives the scalar path's logits within 1e-5 relative
 */
#include <jansson.h>
#include <stdint.h>
#include "backend/cpu/kernels.h"
#include "engine/engine.h"
#include "test.h"
#include "util/alloc.h"

static const char *g_isa; /* cpu.isa of the engines open_engine makes (NULL: the best) */

static kiln_engine *open_engine(const char *model, const char *tok, kiln_error *err) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.cpu.isa = g_isa;
    o.model_path = model;
    o.tokenizer_path = tok;
    o.max_seqs = 8;
    o.kv_memory_mb = 64;
    kiln_engine *e = NULL;
    if (kiln_engine_open(&e, &o, err)) return NULL;
    return e;
}

/* greedy generation of up to n tokens; returns count */
static int greedy(kiln_engine *e, const int32_t *prompt, int np, int n, int32_t *out, char *text, size_t cap) {
    kiln_request_params p;
    kiln_request_params_default(&p);
    p.prompt_ids = prompt;
    p.n_prompt = np;
    p.max_tokens = n;
    p.sampling.temperature = 0;
    uint64_t id;
    kiln_error err = {0};
    if (kiln_engine_add_request(e, &p, &id, &err)) { fprintf(stderr, "add: %s\n", err.msg); return -1; }
    int k = 0;
    size_t tl = 0;
    for (;;) {
        int active;
        if (kiln_engine_step(e, &active, &err)) { fprintf(stderr, "step: %s\n", err.msg); return -1; }
        kiln_output o;
        kiln_engine_poll(e, id, &o, &err);
        for (int i = 0; i < o.n_new && k < n; i++) out[k++] = o.new_ids[i];
        if (text && tl + o.text_len < cap) { memcpy(text + tl, o.text_delta, o.text_len); tl += o.text_len; text[tl] = 0; }
        if (o.finish) break;
    }
    return k;
}

static int json_ids(json_t *a, int32_t *out, int cap) {
    int n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) if (n < cap) out[n++] = (int32_t)json_integer_value(v);
    return n;
}

static float *read_f32(const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *b = kiln_malloc(n * sizeof(float));
    size_t r = fread(b, sizeof(float), n, f);
    fclose(f);
    if (r != n) { kiln_free(b); return NULL; }
    return b;
}

static void test_stories260k(void) {
    const char *model = kt_shared("models/stories260K/stories260K.bin");
    const char *tok = kt_shared("models/stories260K/tok512.bin");
    const char *gold = kt_shared("models/stories260K/golden_greedy_stories260K.json");
    if (!kt_exists(model) || !kt_exists(gold)) { fprintf(stderr, "SKIP stories260K: fixture missing\n"); return; }
    json_t *g = json_load_file(gold, 0, NULL);
    int32_t want[512], got[512];
    int nw = json_ids(json_object_get(g, "generated_ids"), want, 512);
    const char *want_text = json_string_value(json_object_get(g, "text"));
    kiln_error err = {0};
    kiln_engine *e = open_engine(model, tok, &err);
    KT_CHECK(e != NULL, "open: %s", err.msg);
    if (e) {
        int32_t bos = 1;
        static char text[65536];
        int n = greedy(e, &bos, 1, 256, got, text, sizeof text);
        /* the golden run stops when BOS is produced (llama2.c run.c); kiln stops at that EOS too,
         * with the EOS id included in the output ids */
        int same = n >= nw;
        for (int i = 0; i < nw && same; i++) same = got[i] == want[i];
        KT_CHECK(same, "stories260K greedy ids differ from the published sample (got %d, want %d)", n, nw);
        KT_CHECK(strcmp(text, want_text) == 0, "stories260K text differs:\n%s", text);
        kiln_engine_close(e);
    }
    json_decref(g);
}

static void test_tinystories(void) {
    const char *dir = kt_shared("models/tinystories-656K");
    const char *refp = kt_shared("models/tinystories-656K/reference/tinystories_reference.json");
    if (!kt_exists(refp)) { fprintf(stderr, "SKIP tinystories: fixture missing\n"); return; }
    json_t *ref = json_load_file(refp, 0, NULL);
    kiln_error err = {0};
    kiln_engine *e = open_engine(dir, NULL, &err);
    KT_CHECK(e != NULL, "open tinystories: %s", err.msg);
    if (!e) { json_decref(ref); return; }
    size_t ci;
    json_t *c;
    json_array_foreach(json_object_get(ref, "cases"), ci, c) {
        int32_t prompt[512], gids[1024], out[1024];
        int np = json_ids(json_object_get(c, "prompt_ids"), prompt, 512);
        int ng = json_ids(json_object_get(c, "greedy_ids"), gids, 1024);
        const char *text = json_string_value(json_object_get(c, "text"));
        int32_t *ids = NULL;
        int n = 0;
        int rc = kiln_engine_tokenize(e, text, strlen(text), 1, &ids, &n, &err);
        int same = rc == 0 && n == np;
        for (int i = 0; same && i < n; i++) same = ids[i] == prompt[i];
        KT_CHECK(same, "tinystories case %zu: our prompt ids differ from HF's (%s)", ci, rc ? err.msg : "ids");
        kiln_free(ids);
        int V = kiln_engine_model(e)->cfg.vocab_size;
        char lp[1200];
        snprintf(lp, sizeof lp, "%s/reference/%s", dir, json_string_value(json_object_get(c, "logits_file")));
        float *want = read_f32(lp, (size_t)np * V), *got = kiln_malloc((size_t)np * V * sizeof(float));
        KT_CHECK(want != NULL, "cannot read %s", lp);
        if (want && kiln_engine_prompt_logits(e, prompt, np, got, &err) == 0) {
            double maxd = 0;
            for (size_t i = 0; i < (size_t)np * V; i++) {
                double d = fabs((double)got[i] - want[i]);
                if (!(d <= maxd)) maxd = isnan(d) ? INFINITY : d;
            }
            KT_CHECK(maxd <= 1e-3, "tinystories case %zu: max |logit - HF| = %g > 1e-3", ci, maxd);
            printf("tinystories case %zu: %d tokens, max |logit - HF| = %.3g\n", ci, np, maxd);
        }
        kiln_free(want);
        kiln_free(got);
        int k = greedy(e, prompt, np, ng - np, out, NULL, 0);
        same = k > 0;
        for (int i = 0; same && i < ng - np && i < k; i++) same = out[i] == gids[np + i];
        /* HF stops at EOS too: the lengths agree when both stop there */
        KT_CHECK(same && (k == ng - np), "tinystories case %zu: greedy ids differ from HF's (%d vs %d tokens)", ci, k, ng - np);
    }
    kiln_engine_close(e);
    json_decref(ref);
}

/* logits of every reference case of a mistral-tiny folder; returns the worst relative L2 */
static double mistral_case_errors(const char *dir, const char *refdir, int check_argmax) {
    char rp[1200];
    snprintf(rp, sizeof rp, "%s/reference.json", refdir);
    json_t *ref = json_load_file(rp, 0, NULL);
    if (!ref) return -1;
    kiln_error err = {0};
    kiln_engine *e = open_engine(dir, NULL, &err);
    KT_CHECK(e != NULL, "open %s: %s", dir, err.msg);
    double worst = 0;
    size_t ci;
    json_t *c;
    if (e) json_array_foreach(json_object_get(ref, "cases"), ci, c) {
        int32_t prompt[512];
        int np = json_ids(json_object_get(c, "prompt_ids"), prompt, 512);
        int V = kiln_engine_model(e)->cfg.vocab_size;
        snprintf(rp, sizeof rp, "%s/%s", refdir, json_string_value(json_object_get(c, "logits_file")));
        float *want = read_f32(rp, (size_t)np * V), *got = kiln_malloc((size_t)np * V * sizeof(float));
        if (want && kiln_engine_prompt_logits(e, prompt, np, got, &err) == 0) {
            double rel = kt_rel_l2(got, want, (size_t)np * V);
            if (rel > worst) worst = rel;
            printf("%s case %zu: %d tokens, relative L2 vs HF %.3g\n", dir, ci, np, rel);
            if (check_argmax)
                for (int r = 0; r < np; r++) {
                    int a = 0, b = 0;
                    for (int i = 1; i < V; i++) {
                        if (got[(size_t)r * V + i] > got[(size_t)r * V + a]) a = i;
                        if (want[(size_t)r * V + i] > want[(size_t)r * V + b]) b = i;
                    }
                    /* equal unless HF's own top-2 margin is a near-tie (< 1e-2) */
                    float m1 = -INFINITY, m2 = -INFINITY;
                    for (int i = 0; i < V; i++) {
                        float x = want[(size_t)r * V + i];
                        if (x > m1) { m2 = m1; m1 = x; } else if (x > m2) m2 = x;
                    }
                    KT_CHECK(a == b || m1 - m2 < 1e-2f, "%s case %zu row %d: argmax %d vs HF %d (margin %g)", dir, ci, r, a, b,
                             (double)(m1 - m2));
                }
        } else {
            KT_CHECK(0, "%s case %zu: no logits (%s)", dir, ci, err.msg);
        }
        kiln_free(want);
        kiln_free(got);
    }
    kiln_engine_close(e);
    json_decref(ref);
    return worst;
}

static void test_mistral_tiny(void) {
    const char *names[2] = {"models/mistral-tiny-random", "models/mistral-tiny-random-f16"};
    for (int k = 0; k < 2; k++) {
        const char *dir = kt_shared(names[k]);
        if (!kt_exists(kt_shared("models/mistral-tiny-random/reference.json"))) { fprintf(stderr, "SKIP %s\n", names[k]); continue; }
        double worst = mistral_case_errors(dir, dir, 1);
        /* The HF oracle differs from exact (float64) arithmetic by up to 9e-3 (bf16) and 9e-4 (f16)
         * relative L2 at 130 tokens, growing with position; kiln agrees with a float64 forward pass
         * to < 1e-6 (tests/py/test_reference_f64.py). The bound here is therefore the oracle's own
         * error, not 1e-4 (docs/perf-notes.md, "mistral-tiny oracle"). */
        KT_CHECK(worst >= 0 && worst <= (k == 0 ? 1e-2 : 1.5e-3), "%s: worst relative L2 vs HF %g", names[k], worst);
    }
}

static void test_mistral_native(void) {
    const char *src = kt_shared("models/mistral-tiny-random");
    if (!kt_exists(kt_shared("models/mistral-tiny-random/model.safetensors"))) { fprintf(stderr, "SKIP native\n"); return; }
    char tmpl[] = "/tmp/kiln-native-XXXXXX";
    char *dir = mkdtemp(tmpl);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "python3 tests/tools/hf_to_mistral_native.py %s %s >/dev/null", src, dir);
    if (system(cmd) != 0) { KT_CHECK(0, "conversion failed: %s", cmd); return; }
    kiln_error err = {0};
    kiln_engine *a = open_engine(src, NULL, &err), *b = open_engine(dir, NULL, &err);
    KT_CHECK(a && b, "open: %s", err.msg);
    if (a && b) {
        KT_CHECK(kiln_engine_model(b)->format == KILN_FORMAT_MISTRAL, "the copy did not load as Mistral-native");
        int32_t prompt[40];
        for (int i = 0; i < 40; i++) prompt[i] = (i * 37 + 1) % 2048;
        int V = 2048;
        float *la = kiln_malloc(40 * V * sizeof(float)), *lb = kiln_malloc(40 * V * sizeof(float));
        kiln_engine_prompt_logits(a, prompt, 40, la, &err);
        kiln_engine_prompt_logits(b, prompt, 40, lb, &err);
        double rel = kt_rel_l2(lb, la, 40 * (size_t)V);
        printf("mistral-native copy vs HF folder: relative L2 %.3g\n", rel);
        KT_CHECK(rel <= 1e-6, "native vs HF logits differ: %g", rel);
        kiln_free(la);
        kiln_free(lb);
    }
    kiln_engine_close(a);
    kiln_engine_close(b);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
}

static void test_isa_paths(void) {
    const char *dir = kt_shared("models/mistral-tiny-random");
    if (!kt_exists(kt_shared("models/mistral-tiny-random/model.safetensors"))) return;
    int32_t prompt[24];
    for (int i = 0; i < 24; i++) prompt[i] = (i * 91 + 5) % 2048;
    size_t n = 24 * 2048;
    float *ref = kiln_malloc(n * sizeof(float)), *got = kiln_malloc(n * sizeof(float));
    kiln_error err = {0};
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        if (!kiln_isa_supported((kiln_isa)isa)) { printf("ISA %s not on this CPU: not tested\n", kiln_isa_name(isa)); continue; }
        g_isa = kiln_isa_name((kiln_isa)isa);
        kiln_engine *e = open_engine(dir, NULL, &err);
        KT_CHECK(e != NULL, "open with %s: %s", kiln_isa_name(isa), err.msg);
        if (!e) continue;
        kiln_engine_prompt_logits(e, prompt, 24, isa == 0 ? ref : got, &err);
        if (isa > 0) {
            double rel = kt_rel_l2(got, ref, n);
            printf("ISA %s vs scalar: relative L2 %.3g\n", kiln_isa_name(isa), rel);
            KT_CHECK(rel <= 1e-5, "ISA %s differs from scalar: %g", kiln_isa_name(isa), rel);
        }
        kiln_engine_close(e);
    }
    g_isa = NULL;
    kiln_free(ref);
    kiln_free(got);
}

int main(void) {
    if (!kt_exists(kt_shared("models"))) KT_SKIP("../shared/models not found (set KILN_SHARED)");
    test_stories260k();
    test_tinystories();
    test_mistral_tiny();
    test_mistral_native();
    test_isa_paths();
    return kt_done();
}
