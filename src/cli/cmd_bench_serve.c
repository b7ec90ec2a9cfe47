/* cmd_bench_serve.c: `kiln bench serve`, a load generator for any OpenAI-compatible server
 * (like `vllm bench serve`), over libcurl.
 *
 *   kiln bench serve [--url http://127.0.0.1:8000] [--concurrency N] [--rate R] [--requests N]
 *                    [--input-len DIST] [--output-len DIST] [--model NAME] [--prompt ids|words]
 *                    [--vocab N] [--seed S] [--api-key KEY] [--json FILE]
 * DIST is N (fixed), A:B (uniform integers in [A, B]) or C+-D (uniform in [C - D, C + D], e.g.
 * 1000+-500 as vLLM's --random-input-len 1000 --random-range-ratio 0.5). Each request is a POST
 * /v1/completions with stream=true, stream_options.include_usage, ignore_eos=true,
 * temperature 0 and max_tokens from --output-len; the prompt is a list of random token ids in
 * [3, vocab) (--prompt ids) or random words. Arrivals: Poisson at --rate req/s (default: all
 * at once), at most --concurrency in flight (one worker thread each; default: 64 with all at
 * once, every request (up to 1024) with a finite rate, so the arrival process is not throttled,
 * as vLLM's default of no max_concurrency).
 * Per request: TTFT = first SSE chunk with choices; ITL = gaps between such chunks; TPOT =
 * (latency - TTFT) / (output tokens - 1), output tokens from the usage chunk (else chunks).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli/cli.h"
#include "util/alloc.h"
#include "util/timeutil.h"
#ifdef KILN_HAVE_CURL
#include "cli/curl_lazy.h"
#include <jansson.h>

static const kiln_curl_api *kc; /* libcurl, loaded when the command starts */

typedef struct dist { int lo, hi; } dist;

typedef struct req_res {
    int ok, in_len, max_out;
    double start, ttft, latency;     /* seconds */
    int n_chunks, n_out, n_prompt;   /* n_out/n_prompt from usage (-1 if absent) */
    double *itl; int n_itl, cap_itl; /* gaps between chunks */
    double last;
    char err[160];
    char *body;
    /* SSE parse state */
    char *buf; size_t len, cap;
    int done;
} req_res;

typedef struct bs_ctx {
    const char *url, *api_key;
    int n, conc;
    double *arrival;
    req_res *res;
    atomic_int next;
    double t0;
} bs_ctx;

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = (*s += 0x9E3779B97F4A7C15ull);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }
static int dist_draw(const dist *d, uint64_t *s) { return d->lo + (d->hi > d->lo ? (int)(rng_next(s) % (uint64_t)(d->hi - d->lo + 1)) : 0); }

static int parse_dist(const char *s, dist *d) {
    long a, b;
    const char *pm = strstr(s, "+-");
    if (pm) { /* C+-D: uniform in [C - D, C + D] (vLLM's --random-input-len C --random-range-ratio D/C) */
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(pm - s), s);
        if (kiln_cli_parse_int(tmp, 1, 1 << 20, &a) || kiln_cli_parse_int(pm + 2, 0, 1 << 20, &b) || b >= a) return -1;
        d->lo = (int)(a - b);
        d->hi = (int)(a + b);
        return 0;
    }
    const char *c = strchr(s, ':');
    if (!c) {
        if (kiln_cli_parse_int(s, 1, 1 << 20, &a)) return -1;
        d->lo = d->hi = (int)a;
        return 0;
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.*s", (int)(c - s), s);
    if (kiln_cli_parse_int(tmp, 1, 1 << 20, &a) || kiln_cli_parse_int(c + 1, 1, 1 << 20, &b) || b < a) return -1;
    d->lo = (int)a;
    d->hi = (int)b;
    return 0;
}

static void on_event(req_res *r, const char *data) {
    if (!strcmp(data, "[DONE]")) { r->done = 1; return; }
    json_error_t je;
    json_t *j = json_loads(data, 0, &je);
    if (!j) { snprintf(r->err, sizeof r->err, "bad SSE JSON: %.100s", data); return; }
    json_t *e = json_object_get(j, "error");
    if (e) {
        json_t *m = json_object_get(e, "message");
        snprintf(r->err, sizeof r->err, "server error: %.120s", json_is_string(m) ? json_string_value(m) : "?");
    }
    json_t *ch = json_object_get(j, "choices");
    if (json_is_array(ch) && json_array_size(ch) > 0) {
        double now = kiln_now();
        if (r->n_chunks == 0) r->ttft = now - r->start;
        else if (r->n_itl < r->cap_itl) r->itl[r->n_itl++] = now - r->last;
        r->last = now;
        r->n_chunks++;
    }
    json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) {
        json_t *c = json_object_get(u, "completion_tokens"), *p = json_object_get(u, "prompt_tokens");
        if (json_is_integer(c)) r->n_out = (int)json_integer_value(c);
        if (json_is_integer(p)) r->n_prompt = (int)json_integer_value(p);
    }
    json_decref(j);
}

static size_t on_data(char *p, size_t sz, size_t nm, void *ud) {
    req_res *r = ud;
    size_t n = sz * nm;
    if (r->len + n + 1 > r->cap) {
        size_t cap = (r->len + n + 1) * 2;
        char *b = kiln_realloc(r->buf, cap);
        if (!b) return 0;
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    r->buf[r->len] = 0;
    /* events end with a blank line; handle "data: ..." lines of complete events */
    char *s = r->buf, *end;
    while ((end = strstr(s, "\n\n")) != NULL) {
        *end = 0;
        for (char *line = s; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = 0;
            if (line[strlen(line) - 1] == '\r') line[strlen(line) - 1] = 0;
            if (!strncmp(line, "data:", 5)) on_event(r, line[5] == ' ' ? line + 6 : line + 5);
            line = nl ? nl + 1 : NULL;
        }
        s = end + 2;
    }
    size_t rest = r->len - (size_t)(s - r->buf);
    memmove(r->buf, s, rest + 1);
    r->len = rest;
    return n;
}

static void *worker(void *arg) {
    bs_ctx *c = arg;
    CURL *h = kc->easy_init();
    struct curl_slist *hd = kc->slist_append(NULL, "Content-Type: application/json");
    char auth[600];
    if (c->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->api_key);
        hd = kc->slist_append(hd, auth);
    }
    for (;;) {
        int i = atomic_fetch_add(&c->next, 1);
        if (i >= c->n || !h) break;
        req_res *r = &c->res[i];
        double wait = c->t0 + c->arrival[i] - kiln_now();
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
            nanosleep(&ts, NULL);
        }
        kc->easy_reset(h);
        kc->easy_setopt(h, CURLOPT_URL, c->url);
        kc->easy_setopt(h, CURLOPT_HTTPHEADER, hd);
        kc->easy_setopt(h, CURLOPT_POSTFIELDS, r->body);
        kc->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        kc->easy_setopt(h, CURLOPT_WRITEDATA, r);
        kc->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        kc->easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
        r->start = kiln_now();
        CURLcode cc = kc->easy_perform(h);
        r->latency = kiln_now() - r->start;
        long code = 0;
        kc->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        if (cc != CURLE_OK) snprintf(r->err, sizeof r->err, "%s", kc->easy_strerror(cc));
        else if (code != 200 && !r->err[0]) snprintf(r->err, sizeof r->err, "HTTP %ld: %.100s", code, r->buf ? r->buf : "");
        r->ok = !r->err[0] && r->n_chunks > 0;
        if (r->ok && r->n_out < 0) r->n_out = r->n_chunks;
    }
    kc->slist_free_all(hd);
    if (h) kc->easy_cleanup(h);
    return NULL;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* percentile (linear interpolation, numpy's default) of sorted v */
static double pct(const double *v, int n, double p) {
    if (n <= 0) return 0;
    double k = (n - 1) * p / 100.0;
    int lo = (int)floor(k), hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (k - lo);
}

static void summarize(json_t *j, const char *name, double *v, int n, const char *label) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    double mean = n ? 1e3 * s / n : 0, med = 1e3 * pct(v, n, 50), p90 = 1e3 * pct(v, n, 90), p99 = 1e3 * pct(v, n, 99);
    char key[64];
    snprintf(key, sizeof key, "mean_%s_ms", name); json_object_set_new(j, key, json_real(mean));
    snprintf(key, sizeof key, "median_%s_ms", name); json_object_set_new(j, key, json_real(med));
    snprintf(key, sizeof key, "p50_%s_ms", name); json_object_set_new(j, key, json_real(med));
    snprintf(key, sizeof key, "p90_%s_ms", name); json_object_set_new(j, key, json_real(p90));
    snprintf(key, sizeof key, "p99_%s_ms", name); json_object_set_new(j, key, json_real(p99));
    printf("%s\n", label);
    printf("%-40s %10.2f\n%-40s %10.2f\n%-40s %10.2f\n%-40s %10.2f\n", "  mean (ms):", mean, "  p50 (ms):", med, "  p90 (ms):", p90, "  p99 (ms):", p99);
}

static const char *const k_words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "big", "red",
                                      "ball", "in", "park", "with", "her", "friend", "sun", "was", "happy", "tree", "bird", "sang"};

static char *fetch_model_name(const char *base) {
    char url[1200];
    snprintf(url, sizeof url, "%s/v1/models", base);
    CURL *h = kc->easy_init();
    if (!h) return NULL;
    req_res tmp;
    memset(&tmp, 0, sizeof tmp);
    kc->easy_setopt(h, CURLOPT_URL, url);
    kc->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    kc->easy_setopt(h, CURLOPT_WRITEDATA, &tmp);
    kc->easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    char *name = NULL;
    if (kc->easy_perform(h) == CURLE_OK && tmp.buf) {
        json_error_t je;
        json_t *j = json_loads(tmp.buf, 0, &je);
        json_t *id = json_object_get(json_array_get(json_object_get(j, "data"), 0), "id");
        if (json_is_string(id)) name = kiln_strdup(json_string_value(id));
        json_decref(j);
    }
    kiln_free(tmp.buf);
    kc->easy_cleanup(h);
    return name;
}

static void usage(void) {
    fprintf(stderr, "usage: kiln bench serve [--url http://127.0.0.1:8000] [--concurrency N] [--rate R] [--requests N]\n"
                    "         [--input-len N|A:B|C+-D] [--output-len N|A:B|C+-D] [--model NAME] [--prompt ids|words] [--vocab N]\n"
                    "         [--seed S] [--api-key KEY] [--json FILE]\n");
}

int kiln_cmd_bench_serve(int argc, char **argv) {
    const char *base = "http://127.0.0.1:8000", *model = NULL, *json_path = NULL, *api_key = NULL, *pmode = "ids";
    long conc = 0, nreq = 100, vocab = 256, seed = 0;
    double rate = INFINITY;
    dist din = {32, 32}, dout = {32, 32};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        if (!v) { fprintf(stderr, "kiln bench serve: unknown or incomplete option '%s'\n", a); usage(); return 2; }
        i++;
        int bad = 0;
        if (!strcmp(a, "--url")) base = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else if (!strcmp(a, "--api-key")) api_key = v;
        else if (!strcmp(a, "--prompt")) { pmode = v; bad = strcmp(v, "ids") && strcmp(v, "words"); }
        else if (!strcmp(a, "--concurrency")) bad = kiln_cli_parse_int(v, 1, 4096, &conc);
        else if (!strcmp(a, "--requests")) bad = kiln_cli_parse_int(v, 1, 1 << 20, &nreq);
        else if (!strcmp(a, "--vocab")) bad = kiln_cli_parse_int(v, 4, 1 << 24, &vocab);
        else if (!strcmp(a, "--seed")) bad = kiln_cli_parse_int(v, 0, 1L << 62, &seed);
        else if (!strcmp(a, "--rate")) bad = !strcmp(v, "inf") ? (rate = INFINITY, 0) : kiln_cli_parse_float(v, &rate) || !(rate > 0);
        else if (!strcmp(a, "--input-len")) bad = parse_dist(v, &din);
        else if (!strcmp(a, "--output-len")) bad = parse_dist(v, &dout);
        else { fprintf(stderr, "kiln bench serve: unknown option '%s'\n", a); usage(); return 2; }
        if (bad) { fprintf(stderr, "kiln bench serve: bad value '%s' for %s\n", v, a); return 2; }
    }
    if (conc <= 0) conc = isfinite(rate) ? (nreq < 1024 ? nreq : 1024) : (nreq < 64 ? nreq : 64);
    char lmsg[256];
    if (!(kc = kiln_curl_load(lmsg, sizeof lmsg))) { fprintf(stderr, "kiln bench serve: %s\n", lmsg); return 1; }
    if (kc->global_init(CURL_GLOBAL_DEFAULT) != 0) { fprintf(stderr, "kiln bench serve: libcurl init failed\n"); return 1; }
    char url[1200];
    snprintf(url, sizeof url, "%s/v1/completions", base);
    char *fetched = model ? NULL : fetch_model_name(base);
    if (!model) model = fetched;
    int n = (int)nreq, rc = 0;
    req_res *res = kiln_calloc((size_t)n, sizeof *res);
    double *arrival = kiln_calloc((size_t)n, sizeof(double));
    if (!res || !arrival) { fprintf(stderr, "kiln bench serve: out of memory\n"); kiln_free(res); kiln_free(arrival); kiln_free(fetched); return 1; }
    uint64_t rs = (uint64_t)seed * 0x2545F4914F6CDD1Dull + 1;
    double t = 0;
    long in_total = 0;
    for (int i = 0; i < n && !rc; i++) {
        req_res *r = &res[i];
        arrival[i] = t;
        if (isfinite(rate)) t += -log(1.0 - rng_unit(&rs)) / rate;
        r->in_len = dist_draw(&din, &rs);
        r->max_out = dist_draw(&dout, &rs);
        r->n_out = r->n_prompt = -1;
        r->cap_itl = r->max_out + 16;
        r->itl = kiln_malloc((size_t)r->cap_itl * sizeof(double));
        json_t *prompt;
        if (!strcmp(pmode, "ids")) {
            prompt = json_array();
            for (int k = 0; k < r->in_len; k++) json_array_append_new(prompt, json_integer(3 + (json_int_t)(rng_next(&rs) % (uint64_t)(vocab - 3))));
        } else {
            size_t cap = (size_t)r->in_len * 8 + 1, len = 0;
            char *s = kiln_malloc(cap);
            if (!s) { rc = 1; break; }
            s[0] = 0;
            for (int k = 0; k < r->in_len; k++)
                len += (size_t)snprintf(s + len, cap - len, "%s%s", k ? " " : "", k_words[rng_next(&rs) % (sizeof k_words / sizeof k_words[0])]);
            prompt = json_string(s);
            kiln_free(s);
        }
        json_t *body = json_pack("{s:o, s:i, s:b, s:b, s:f, s:{s:b}}", "prompt", prompt, "max_tokens", r->max_out, "stream", 1,
                                 "ignore_eos", 1, "temperature", 0.0, "stream_options", "include_usage", 1);
        if (model) json_object_set_new(body, "model", json_string(model));
        r->body = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (!r->body || !r->itl) rc = 1;
        in_total += r->in_len;
    }
    if (rc) fprintf(stderr, "kiln bench serve: out of memory\n");
    bs_ctx c = {url, api_key, n, (int)conc, arrival, res, 0, 0};
    pthread_t *th = kiln_calloc((size_t)conc, sizeof(pthread_t));
    int started = 0;
    if (!rc && th) {
        char rbuf[32];
        snprintf(rbuf, sizeof rbuf, isfinite(rate) ? "%g req/s (Poisson)" : "inf", rate);
        fprintf(stderr, "kiln bench serve: %d requests to %s (model %s), concurrency %ld, rate %s, input %d:%d, output %d:%d\n",
                n, url, model ? model : "(none)", conc, rbuf, din.lo, din.hi, dout.lo, dout.hi);
        c.t0 = kiln_now();
        for (long k = 0; k < conc; k++)
            if (pthread_create(&th[k], NULL, worker, &c) == 0) started++;
        for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
    }
    double dur = kiln_now() - c.t0;
    int ok = 0, n_itl = 0;
    long out_total = 0, in_ok = 0;
    for (int i = 0; i < n; i++) if (res[i].ok) { ok++; out_total += res[i].n_out; in_ok += res[i].n_prompt >= 0 ? res[i].n_prompt : res[i].in_len; n_itl += res[i].n_itl; }
    double *ttft = kiln_calloc((size_t)ok + 1, sizeof(double)), *tpot = kiln_calloc((size_t)ok + 1, sizeof(double));
    double *e2e = kiln_calloc((size_t)ok + 1, sizeof(double)), *itl = kiln_calloc((size_t)n_itl + 1, sizeof(double));
    int k = 0, kt = 0, ki = 0;
    const char *first_err = NULL;
    for (int i = 0; i < n; i++) {
        req_res *r = &res[i];
        if (!r->ok) { if (!first_err) first_err = r->err[0] ? r->err : "no chunks"; continue; }
        ttft[k] = r->ttft;
        e2e[k++] = r->latency;
        if (r->n_out > 1) tpot[kt++] = (r->latency - r->ttft) / (r->n_out - 1);
        for (int q = 0; q < r->n_itl; q++) itl[ki++] = r->itl[q];
    }
    /* requests in flight: the mean over the run (sum of latencies / duration: Little's law) and
     * the peak (over request starts), for picking the rate that keeps ~N sequences running */
    double busy = 0;
    int peak = 0;
    for (int i = 0; i < n; i++) {
        if (!res[i].ok) continue;
        busy += res[i].latency;
        int inflight = 0;
        for (int q = 0; q < n; q++)
            inflight += res[q].ok && res[q].start <= res[i].start && res[q].start + res[q].latency > res[i].start;
        if (inflight > peak) peak = inflight;
    }
    json_t *j = json_object();
    if (started) {
        printf("============ Serving Benchmark Result ============\n");
        printf("%-40s %10d\n%-40s %10d\n%-40s %10.2f\n", "Successful requests:", ok, "Failed requests:", n - ok, "Benchmark duration (s):", dur);
        printf("%-40s %10ld\n%-40s %10ld\n", "Total input tokens:", in_ok, "Total generated tokens:", out_total);
        printf("%-40s %10.2f\n%-40s %10.2f\n%-40s %10.2f\n", "Request throughput (req/s):", ok / dur, "Output token throughput (tok/s):",
               out_total / dur, "Total token throughput (tok/s):", (in_ok + out_total) / dur);
        printf("%-40s %10.2f\n%-40s %10d\n", "Mean concurrent requests:", dur > 0 ? busy / dur : 0, "Peak concurrent requests:", peak);
        json_object_set_new(j, "schema", json_string("kiln.bench_serve.v1"));
        json_object_set_new(j, "url", json_string(url));
        json_object_set_new(j, "model", model ? json_string(model) : json_null());
        json_object_set_new(j, "num_prompts", json_integer(n));
        json_object_set_new(j, "max_concurrency", json_integer(conc));
        json_object_set_new(j, "request_rate", isfinite(rate) ? json_real(rate) : json_string("inf"));
        json_object_set_new(j, "input_len", json_pack("{s:i, s:i}", "min", din.lo, "max", din.hi));
        json_object_set_new(j, "output_len", json_pack("{s:i, s:i}", "min", dout.lo, "max", dout.hi));
        json_object_set_new(j, "completed", json_integer(ok));
        json_object_set_new(j, "failed", json_integer(n - ok));
        json_object_set_new(j, "duration", json_real(dur));
        json_object_set_new(j, "total_input_tokens", json_integer(in_ok));
        json_object_set_new(j, "total_output_tokens", json_integer(out_total));
        json_object_set_new(j, "request_throughput", json_real(ok / dur));
        json_object_set_new(j, "output_throughput", json_real(out_total / dur));
        json_object_set_new(j, "total_token_throughput", json_real((in_ok + out_total) / dur));
        json_object_set_new(j, "mean_concurrency", json_real(dur > 0 ? busy / dur : 0));
        json_object_set_new(j, "peak_concurrency", json_integer(peak));
        summarize(j, "ttft", ttft, k, "---------------Time to First Token----------------");
        summarize(j, "tpot", tpot, kt, "-----Time per Output Token (excl. 1st token)------");
        summarize(j, "itl", itl, ki, "---------------Inter-token Latency----------------");
        summarize(j, "e2el", e2e, k, "----------------End-to-end Latency----------------");
        printf("==================================================\n");
        if (first_err) fprintf(stderr, "kiln bench serve: first failure: %s\n", first_err);
    }
    if (json_path && started && json_dump_file(j, json_path, JSON_INDENT(2) | JSON_REAL_PRECISION(8))) {
        fprintf(stderr, "kiln bench serve: cannot write %s\n", json_path);
        rc = 1;
    }
    json_decref(j);
    if (!started && !rc) { fprintf(stderr, "kiln bench serve: no worker thread started\n"); rc = 1; }
    if (!rc && ok == 0) rc = 1;
    for (int i = 0; i < n; i++) { kiln_free(res[i].itl); kiln_free(res[i].buf); free(res[i].body); }
    kiln_free(res); kiln_free(arrival); kiln_free(th); kiln_free(ttft); kiln_free(tpot); kiln_free(e2e); kiln_free(itl); kiln_free(fetched);
    kc->global_cleanup();
    return rc;
}
#else
int kiln_cmd_bench_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kiln bench serve: this build has no libcurl (install libcurl4-openssl-dev and rebuild)\n");
    return 2;
}
#endif
