/* kiln-layer: engine */
/* test_faults.c: faults at model load and engine open, and KV exhaustion under load (issue 21).
 *   1. allocation failure: kiln_alloc_fail_after(k) then kiln_engine_open, k = 0, 1, 2, ...
 *      until an open succeeds (SQLite's fault-injection loop). Every failing open returns
 *      KILN_ERR_OOM with a message, never crashes, also where the failure lands inside jansson
 *      (config.json, params.json, tokenizer.json, safetensors headers: util/json.h routes its
 *      allocations through kiln_malloc; checked to be reached); leaks are found by
 *      LeakSanitizer in the ASan stage of .ci/run. Opens with many allocations (the GGUF
 *      vocabulary) walk every k up to KALL, then a stride that keeps about KSTEPS points.
 *   2. truncated and corrupted files of each format (llama2.c .bin and its tokenizer, HF
 *      safetensors, GGUF): the open fails with FORMAT / IO / UNSUPPORTED naming the file, or
 *      (only for random byte flips, which may land in a value) succeeds; never a crash.
 *   3. a model larger than memory (dummy weights in a huge config.json): KILN_ERR_OOM at once,
 *      before any weight is touched (not an OOM kill).
 *   4. KV exhaustion under load: many requests, some joining mid-way, on a pool of a few
 *      blocks: all finish (preempted and recomputed), none lost, greedy outputs equal to the
 *      solo runs, every block freed at the end.
 * Fixtures: ../shared/models (stories260K, tinystories-656K, mistral-tiny-random) and the default
 * GGUF ($KILN_DEFAULT_GGUF or ~/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf); a missing one is
 * reported as skipped on stderr. */
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include "engine/engine.h"
#include "test.h"
#include "util/alloc.h"

#define KALL 400   /* every k below this */
#define KSTEPS 120 /* about this many more points above it */

static char g_tmp[256];

static void base_opts(kiln_engine_options *o, const char *model, const char *tok) {
    kiln_engine_options_default(o);
    o->model_path = model;
    o->tokenizer_path = tok;
    o->skip_tokenizer = 0;
    o->backend = "cpu";
    o->n_threads = 1; /* allocation order deterministic: one k is one site */
    o->max_seqs = 2;
    o->kv_memory_mb = 4;
    o->max_model_len = 256;
}

static int ok_code(int rc) {
    return rc == KILN_ERR_OOM || rc == KILN_ERR_FORMAT || rc == KILN_ERR_IO || rc == KILN_ERR_UNSUPPORTED ||
           rc == KILN_ERR_NOT_FOUND;
}

/* 1. allocation failure at every allocation site of model load and engine open */
static void test_alloc_faults(const char *label, const char *model, const char *tok, int skip_tok,
                              int expect_json) {
    kiln_engine_options o;
    base_opts(&o, model, tok);
    o.skip_tokenizer = skip_tok;
    kiln_engine *e = NULL;
    kiln_error err = {0};
    uint64_t a0 = kiln_alloc_count();
    int rc = kiln_engine_open(&e, &o, &err);
    uint64_t n_alloc = kiln_alloc_count() - a0;
    KT_CHECK(rc == 0, "%s: plain open failed: %s", label, err.msg);
    kiln_engine_close(e);
    if (rc) return;
    int64_t stride = n_alloc > KALL ? (int64_t)((n_alloc - KALL) / KSTEPS) + 1 : 1;
    int oom = 0, other = 0, bad = 0, tried = 0, opened = 0, json = 0;
    for (int64_t k = 0; k <= (int64_t)n_alloc + 1; k += k < KALL ? 1 : stride) {
        e = NULL;
        memset(&err, 0, sizeof err);
        kiln_alloc_fail_after(k);
        rc = kiln_engine_open(&e, &o, &err);
        kiln_alloc_fail_after(-1);
        tried++;
        if (rc == 0) {
            kiln_engine_close(e);
            opened = 1;
            break;
        }
        if (rc == KILN_ERR_OOM) oom++;
        else other++;
        if (rc == KILN_ERR_OOM && strstr(err.msg, "out of memory parsing JSON")) json++;
        /* every allocation failure, jansson's included (util/json.h), is KILN_ERR_OOM */
        if (rc != KILN_ERR_OOM || !err.msg[0] || e != NULL) {
            bad++;
            fprintf(stderr, "%s: k=%lld: rc %s, msg '%s'\n", label, (long long)k, kiln_status_name(rc), err.msg);
        }
    }
    printf("alloc faults %s: %llu allocations in an open, %d points tried (every k < %d, then stride %lld): "
           "%d OOM (%d in JSON parsing), %d other, opened=%d\n",
           label, (unsigned long long)n_alloc, tried, KALL, (long long)stride, oom, json, other, opened);
    KT_CHECK(bad == 0, "%s: %d failing opens without a clear error", label, bad);
    KT_CHECK(oom > 0, "%s: no open failed with KILN_ERR_OOM", label);
    /* the JSON files (config.json, params.json, tokenizer.json, tekken.json, safetensors
     * headers) are parsed with jansson, which allocates through kiln_malloc: failures land there */
    KT_CHECK(!expect_json || json > 0, "%s: no injected failure reached jansson", label);
    /* the last point (k >= n_alloc) must open: a stride can step past n_alloc */
    if (!opened) {
        kiln_alloc_fail_after((int64_t)n_alloc);
        e = NULL;
        rc = kiln_engine_open(&e, &o, &err);
        kiln_alloc_fail_after(-1);
        KT_CHECK(rc == 0, "%s: open with exactly %llu allocations allowed failed: %s", label,
                 (unsigned long long)n_alloc, err.msg);
        kiln_engine_close(e);
    }
}

/* ---- 2. truncated and corrupted files ---------------------------------------------------- */

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(sz > 0 ? (size_t)sz : 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) { free(b); b = NULL; }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static int write_all(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void copy_file(const char *src, const char *dst) {
    size_t n;
    unsigned char *b = read_all(src, &n);
    if (!b || write_all(dst, b, n)) fprintf(stderr, "copy %s -> %s failed\n", src, dst);
    free(b);
}

/* one case: the damaged folder/file is already in place; open it and judge the result.
 * must_fail: a truncation (always detectable); otherwise a random flip that may be benign. */
static int g_refused, g_accepted;
static void judge(const char *label, const char *what, const kiln_engine_options *o, const char *needle,
                  int must_fail) {
    kiln_engine *e = NULL;
    kiln_error err = {0};
    int rc = kiln_engine_open(&e, o, &err);
    if (rc == 0) {
        g_accepted++;
        KT_CHECK(!must_fail, "%s %s: opened a damaged file", label, what);
        kiln_engine_close(e);
        return;
    }
    g_refused++;
    KT_CHECK(ok_code(rc) || rc == KILN_ERR_INVALID_ARG, "%s %s: code %s (%s)", label, what, kiln_status_name(rc), err.msg);
    KT_CHECK(strstr(err.msg, needle) != NULL, "%s %s: message does not name %s: '%s'", label, what, needle, err.msg);
}

/* fx: a file of the model; dir_files: the other files of its folder to copy beside it (NULL
 * for a single-file model). The damaged copy is opened as folder (dir_files) or file. */
static void test_damaged(const char *label, const char *fx, const char *const *dir_files, const char *src_dir,
                         const char *tok_src, int skip_tok, size_t header_len) {
    size_t n;
    unsigned char *orig = read_all(fx, &n);
    if (!orig) { KT_CHECK(0, "%s: cannot read %s", label, fx); return; }
    char dir[512], file[700], tok[700];
    snprintf(dir, sizeof dir, "%s/%s", g_tmp, label);
    mkdir(dir, 0700);
    const char *base = strrchr(fx, '/') ? strrchr(fx, '/') + 1 : fx;
    snprintf(file, sizeof file, "%s/%s", dir, base);
    for (int i = 0; dir_files && dir_files[i]; i++) {
        char s[700], d[700];
        snprintf(s, sizeof s, "%s/%s", src_dir, dir_files[i]);
        snprintf(d, sizeof d, "%s/%s", dir, dir_files[i]);
        copy_file(s, d);
    }
    tok[0] = 0;
    if (tok_src) {
        snprintf(tok, sizeof tok, "%s/tok.bin", dir);
        copy_file(tok_src, tok);
    }
    kiln_engine_options o;
    base_opts(&o, dir_files ? dir : file, tok_src ? tok : NULL);
    o.skip_tokenizer = skip_tok;
    g_refused = g_accepted = 0;
    /* truncations: inside the header, just after it, in the middle of the tensor data, the last byte */
    size_t cuts[] = {0, 4, header_len / 2, header_len, header_len + 7, header_len + (n - header_len) / 2, n - 1};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        if (cuts[c] >= n) continue;
        write_all(file, orig, cuts[c]);
        char what[64];
        snprintf(what, sizeof what, "truncated at %zu of %zu", cuts[c], n);
        judge(label, what, &o, dir_files ? dir : file, 1);
    }
    /* random bytes flipped in the header: refused cleanly, or (a flip inside a value) opened */
    unsigned char *b = malloc(n);
    unsigned long long s = 0x5eed + n;
    size_t span = header_len < n ? header_len : n;
    int n_flips = n > ((size_t)16 << 20) ? 10 : 40; /* fewer copies of a large file */
    for (int t = 0; t < n_flips; t++) {
        memcpy(b, orig, n);
        int flips = 1 + (int)(kt_rand_u64(&s) % 4);
        for (int f = 0; f < flips; f++) b[kt_rand_u64(&s) % span] ^= (unsigned char)(1 + kt_rand_u64(&s) % 255);
        write_all(file, b, n);
        judge(label, "with header bytes flipped", &o, dir_files ? dir : file, 0);
    }
    printf("damaged %s: %d refused cleanly, %d flipped copies opened (a flip inside a value)\n", label, g_refused,
           g_accepted);
    free(b);
    free(orig);
}

/* the header length of each format, so the cuts land in the header and in the data */
static size_t safetensors_header_len(const char *path) {
    size_t n;
    unsigned char *b = read_all(path, &n);
    uint64_t h = 0;
    if (b && n >= 8) memcpy(&h, b, 8);
    free(b);
    return (size_t)h + 8;
}

/* 3. a model larger than memory: dummy weights of a huge config */
static void test_larger_than_memory(void) {
    char dir[512], cfg[700];
    snprintf(dir, sizeof dir, "%s/huge", g_tmp);
    mkdir(dir, 0700);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    /* about 2.2 TB of bf16 weights */
    const char *json = "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 16384,"
                       " \"intermediate_size\": 53248, \"num_hidden_layers\": 400, \"num_attention_heads\": 128,"
                       " \"num_key_value_heads\": 8, \"head_dim\": 128, \"vocab_size\": 128256,"
                       " \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-5, \"rope_theta\": 500000.0,"
                       " \"torch_dtype\": \"bfloat16\", \"tie_word_embeddings\": false}";
    write_all(cfg, (const unsigned char *)json, strlen(json));
    kiln_engine_options o;
    base_opts(&o, cfg, NULL);
    o.skip_tokenizer = 1;
    o.load_dummy = 1;
    kiln_engine *e = NULL;
    kiln_error err = {0};
    int rc = kiln_engine_open(&e, &o, &err);
    printf("larger than memory: %s: %s\n", kiln_status_name(rc), err.msg);
    KT_CHECK(rc == KILN_ERR_OOM, "a model larger than memory: %s (%s)", kiln_status_name(rc), err.msg);
    KT_CHECK(strstr(err.msg, "config.json") != NULL, "the message does not name the config: %s", err.msg);
    if (rc == 0) kiln_engine_close(e);
}

/* ---- 4. KV exhaustion under load ------------------------------------------------------- */

#define NREQ 16
#define MAXO 64
typedef struct res {
    int32_t ids[MAXO];
    int n;
    kiln_finish fin;
} res;

static kiln_engine *open_kv(const char *model, int kv_blocks) {
    kiln_engine_options o;
    base_opts(&o, model, NULL);
    o.skip_tokenizer = 1;
    o.max_seqs = 8;
    o.kv_blocks = kv_blocks;
    o.kv_memory_mb = 32;
    o.enable_prefix_cache = -1;
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &o, &err)) fprintf(stderr, "open %s: %s\n", model, err.msg);
    return e;
}

/* add request i at step at[i]; step until all finish; -1 on an API error */
static int run_all(kiln_engine *e, const kiln_request_params *ps, const int *at, int n, res *r) {
    uint64_t ids[NREQ];
    int done = 0, step = 0;
    kiln_error err = {0};
    memset(r, 0, sizeof(res) * (size_t)n);
    while (done < n && step < 20000) {
        for (int i = 0; i < n; i++)
            if (at[i] == step && kiln_engine_add_request(e, &ps[i], &ids[i], &err)) {
                fprintf(stderr, "add %d: %s\n", i, err.msg);
                return -1;
            }
        int active;
        if (kiln_engine_step(e, &active, &err)) { fprintf(stderr, "step: %s\n", err.msg); return -1; }
        step++;
        for (int i = 0; i < n; i++) {
            if (at[i] >= step || r[i].fin) continue;
            kiln_output out;
            if (kiln_engine_poll(e, ids[i], &out, &err)) { fprintf(stderr, "poll %d: %s\n", i, err.msg); return -1; }
            for (int k = 0; k < out.n_new && r[i].n < MAXO; k++) r[i].ids[r[i].n++] = out.new_ids[k];
            if (out.finish) { r[i].fin = out.finish; done++; }
        }
    }
    int active = 1;
    while (active && step++ < 20010) kiln_engine_step(e, &active, &err); /* a step left in flight */
    return done;
}

static void test_kv_exhaustion(const char *model, int vocab) {
    static int32_t prompts[NREQ][80];
    kiln_request_params ps[NREQ];
    int at[NREQ], zero[NREQ] = {0};
    static res solo[NREQ], load[NREQ];
    unsigned long long s = 2121;
    for (int i = 0; i < NREQ; i++) {
        int len = 4 + (int)(kt_rand_u64(&s) % 60);
        prompts[i][0] = 1;
        for (int k = 1; k < len; k++) prompts[i][k] = 3 + (int)(kt_rand_u64(&s) % (unsigned)(vocab - 3));
        kiln_request_params_default(&ps[i]);
        ps[i].prompt_ids = prompts[i];
        ps[i].n_prompt = len;
        ps[i].max_tokens = 8 + (int)(kt_rand_u64(&s) % (MAXO - 8));
        ps[i].ignore_eos = 1;
        ps[i].sampling.temperature = 0;
        at[i] = i < NREQ / 2 ? 0 : (int)(kt_rand_u64(&s) % 40); /* half join under load */
    }
    kiln_engine *e = open_kv(model, 0);
    if (!e) { KT_CHECK(0, "kv: open failed"); return; }
    for (int i = 0; i < NREQ; i++) {
        KT_CHECK(run_all(e, &ps[i], zero, 1, &solo[i]) == 1, "kv: solo run %d failed", i);
    }
    kiln_engine_close(e);
    /* 9 blocks of 16 tokens (144): one request needs at most 8 blocks, 8 running need ~40 */
    e = open_kv(model, 9);
    if (!e) { KT_CHECK(0, "kv: open with a tiny pool failed"); return; }
    int done = run_all(e, ps, at, NREQ, load);
    kiln_engine_stats st;
    kiln_engine_get_stats(e, &st);
    KT_CHECK(done == NREQ, "kv exhaustion: %d of %d requests finished", done, NREQ);
    int same = 0;
    for (int i = 0; i < NREQ; i++) {
        int eq = load[i].n == solo[i].n && load[i].fin == KILN_FINISH_LENGTH &&
                 memcmp(load[i].ids, solo[i].ids, (size_t)load[i].n * 4) == 0;
        same += eq;
        KT_CHECK(eq, "kv exhaustion: request %d (%d tokens, finish %d) differs from its solo run (%d tokens)", i,
                 load[i].n, load[i].fin, solo[i].n);
    }
    KT_CHECK(st.preemptions > 0, "kv exhaustion: the pool of %d blocks caused no preemption", st.kv_blocks_total);
    KT_CHECK(st.kv_blocks_used == 0, "kv exhaustion: %d blocks still held at the end", st.kv_blocks_used);
    printf("kv exhaustion: %d requests on %d blocks, %llu preemptions, %d/%d equal to solo, %d blocks held at end\n",
           NREQ, st.kv_blocks_total, (unsigned long long)st.preemptions, same, NREQ, st.kv_blocks_used);
    kiln_engine_close(e);
}

static void rm_rf(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/kiln_test_faults_XXXXXX");
    if (!mkdtemp(g_tmp)) { fprintf(stderr, "mkdtemp: %s\n", strerror(errno)); return 1; }
    if (!kt_exists(kt_shared("models"))) KT_SKIP("%s missing: no model fixtures", kt_shared("models"));
    const char *only = getenv("KILN_FAULTS_ONLY"); /* a debugging aid: alloc, damaged, huge or kv */
#define RUN(part) (!only || strcmp(only, part) == 0)

    char st_bin[600], st_tok[600], ts[600], ts_st[700], mt[600], mt_st[700], gguf[1024];
    snprintf(st_bin, sizeof st_bin, "%s", kt_shared("models/stories260K/stories260K.bin"));
    snprintf(st_tok, sizeof st_tok, "%s", kt_shared("models/stories260K/tok512.bin"));
    snprintf(ts, sizeof ts, "%s", kt_shared("models/tinystories-656K"));
    snprintf(ts_st, sizeof ts_st, "%s/model.safetensors", ts);
    snprintf(mt, sizeof mt, "%s", kt_shared("models/mistral-tiny-random"));
    snprintf(mt_st, sizeof mt_st, "%s/model.safetensors", mt);
    const char *g = getenv("KILN_DEFAULT_GGUF");
    if (g && *g) snprintf(gguf, sizeof gguf, "%s", g);
    else snprintf(gguf, sizeof gguf, "%s/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("HOME") ? getenv("HOME") : "");
    int have_st = kt_exists(st_bin) && kt_exists(st_tok), have_ts = kt_exists(ts_st), have_mt = kt_exists(mt_st),
        have_gguf = kt_exists(gguf);
    if (!have_st) fprintf(stderr, "SKIP part: %s or %s missing\n", st_bin, st_tok);
    if (!have_ts) fprintf(stderr, "SKIP part: %s missing\n", ts_st);
    if (!have_mt) fprintf(stderr, "SKIP part: %s missing\n", mt_st);
    if (!have_gguf) fprintf(stderr, "SKIP part: the default GGUF %s is missing (scripts/get_default_model.sh)\n", gguf);

    if (RUN("alloc")) {
        if (have_st) test_alloc_faults("stories260K", st_bin, st_tok, 0, 0);
        if (have_ts) test_alloc_faults("tinystories-656K", ts, NULL, 0, 1);
        if (have_mt) test_alloc_faults("mistral-tiny-random", mt, NULL, 1, 1);
        if (have_gguf) test_alloc_faults("gguf", gguf, NULL, 0, 0);
        /* issue 19's families: biases / q/k norms, experts (views), multimodal skipping, windows */
        const char *fam[] = {"qwen2", "qwen3", "mixtral", "mixtral.gguf", "mistral3", "mistral3-native", "mistral-swa",
                             "llama3-rope.gguf"};
        for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++) {
            char p[256];
            snprintf(p, sizeof p, "tests/fixtures/families/%s", fam[i]);
            if (kt_exists(p)) test_alloc_faults(fam[i], p, NULL, 1, !strstr(fam[i], ".gguf"));
        }
    }
    if (RUN("damaged")) {
        /* llama2.c: a 28-byte header (7 int32), then the weights; its tokenizer file too */
        if (have_st) test_damaged("llama2c-bin", st_bin, NULL, NULL, st_tok, 0, 28);
        if (have_st) {
            char tokdir_model[700];
            snprintf(tokdir_model, sizeof tokdir_model, "%s", st_bin);
            /* the tokenizer damaged, the model intact: a tokenizer-only folder case */
            size_t n;
            unsigned char *t = read_all(st_tok, &n);
            char dir[512], mf[700], tf[700];
            snprintf(dir, sizeof dir, "%s/llama2c-tok", g_tmp);
            mkdir(dir, 0700);
            snprintf(mf, sizeof mf, "%s/stories260K.bin", dir);
            snprintf(tf, sizeof tf, "%s/tok512.bin", dir);
            copy_file(tokdir_model, mf);
            kiln_engine_options o;
            base_opts(&o, mf, tf);
            g_refused = g_accepted = 0;
            size_t cuts[] = {0, 2, 8, n / 2, n - 1};
            for (size_t c = 0; t && c < 5; c++) {
                write_all(tf, t, cuts[c]);
                char what[64];
                snprintf(what, sizeof what, "tokenizer truncated at %zu of %zu", cuts[c], n);
                judge("llama2c-tok", what, &o, "tok512.bin", 1);
            }
            printf("damaged llama2c-tok: %d refused cleanly\n", g_refused);
            free(t);
        }
        static const char *const ts_files[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
                                               "special_tokens_map.json", "generation_config.json", NULL};
        static const char *const mt_files[] = {"config.json", "generation_config.json", NULL};
        if (have_ts) test_damaged("safetensors-tinystories", ts_st, ts_files, ts, NULL, 0, safetensors_header_len(ts_st));
        if (have_mt) test_damaged("safetensors-mistral", mt_st, mt_files, mt, NULL, 1, safetensors_header_len(mt_st));
        /* GGUF: the header with its metadata (the vocabulary) is the first ~2 MB of the file */
        if (have_gguf) test_damaged("gguf", gguf, NULL, NULL, NULL, 0, 1 << 20);
    }
    if (RUN("huge")) test_larger_than_memory();
    if (RUN("kv") && have_st) test_kv_exhaustion(st_bin, 512);
    rm_rf(g_tmp);
    return kt_done();
}
