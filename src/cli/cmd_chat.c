/* cmd_chat.c: `kiln chat`: a terminal chat over the engine with the model's chat format.
 *
 *   kiln chat --model PATH [--system TEXT] [-n N] [--temperature T] [--top-p P] [--top-k K]
 *             [--seed S] [--chat-template NAME] + the engine options (cli.h)
 *
 * Interactive (stdin is a terminal): a prompt per user turn, the answer streams as it is
 * generated, the history is kept (every turn re-encodes the whole conversation; the prefix
 * cache makes the repeated prefix cheap); /reset forgets the history, /quit (or EOF) leaves.
 * Not a terminal: all of stdin is one user message; the answer is printed once and the command
 * exits. Sampling: the options, else the model's generation defaults, except that the
 * non-interactive mode is greedy (temperature 0) unless --temperature is given, so that a
 * piped question gets the same answer every run. The turn ends at the format's end-of-turn
 * token (</s>, <|im_end|>, <|eot_id|>) or the model's EOS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli/cli.h"
#include "engine/engine.h"
#include "tokenizer/chat.h"
#include "util/alloc.h"
#include "util/error.h"

static void usage_chat(void) {
    fprintf(stderr,
            "usage: kiln chat --model PATH [--system TEXT] [-n N] [--temperature T] [--top-p P]\n"
            "         [--top-k K] [--seed S] [--chat-template mistral-v7|mistral-v3|chatml|llama3] [engine options]\n"
            "  interactive on a terminal (/reset, /quit); otherwise stdin is one message, answered once\n");
}

typedef struct history {
    kiln_chat_msg *m;
    char **owned;
    int n, cap;
} history;

static int hist_add(history *h, const char *role, const char *text, size_t len) {
    if (h->n == h->cap) {
        int cap = h->cap ? h->cap * 2 : 8;
        kiln_chat_msg *nm = kiln_realloc(h->m, (size_t)cap * sizeof *nm);
        if (!nm) return -1;
        h->m = nm;
        char **no = kiln_realloc(h->owned, (size_t)cap * sizeof *no);
        if (!no) return -1;
        h->owned = no;
        h->cap = cap;
    }
    char *s = kiln_strndup(text, len);
    if (!s) return -1;
    memset(&h->m[h->n], 0, sizeof h->m[h->n]);
    h->m[h->n].role = role;
    h->m[h->n].content = s;
    h->owned[h->n++] = s;
    return 0;
}
static void hist_clear(history *h, int keep) {
    while (h->n > keep) kiln_free(h->owned[--h->n]);
}

/* one assistant turn: encode the history, generate, stream, append the answer */
static int turn(kiln_engine *e, const char *tmpl, history *h, const kiln_request_params *base, int stream,
                kiln_error *err) {
    const kiln_tokenizer *t = kiln_engine_tokenizer(e);
    int32_t *ids = NULL;
    int n = 0, rc;
    if ((rc = kiln_chat_encode(t, tmpl, h->m, h->n, NULL, 1, &ids, &n, err))) return rc;
    kiln_request_params p = *base;
    int32_t stop = kiln_chat_end_of_turn(t, tmpl);
    p.prompt_ids = ids;
    p.n_prompt = n;
    if (stop >= 0) {
        p.stop_ids = &stop;
        p.n_stop_ids = 1;
    }
    uint64_t id;
    if ((rc = kiln_engine_add_request(e, &p, &id, err))) {
        kiln_free(ids);
        return rc;
    }
    char *ans = NULL;
    size_t alen = 0;
    for (;;) {
        int active;
        kiln_output out;
        if ((rc = kiln_engine_step(e, &active, err)) || (rc = kiln_engine_poll(e, id, &out, err))) break;
        if (out.text_len) {
            char *na = kiln_realloc(ans, alen + out.text_len + 1);
            if (!na) {
                rc = KILN_ERR(err, KILN_ERR_OOM, "chat: out of memory");
                break;
            }
            ans = na;
            memcpy(ans + alen, out.text_delta, out.text_len);
            alen += out.text_len;
            if (stream) {
                fwrite(out.text_delta, 1, out.text_len, stdout);
                fflush(stdout);
            }
        }
        if (out.finish != KILN_FINISH_NONE) break;
    }
    if (!stream && rc == KILN_OK && alen) fwrite(ans, 1, alen, stdout);
    if (rc == KILN_OK) {
        putchar('\n');
        fflush(stdout);
        if (hist_add(h, "assistant", ans ? ans : "", alen)) rc = KILN_ERR(err, KILN_ERR_OOM, "chat: out of memory");
    }
    kiln_free(ans);
    kiln_free(ids);
    return rc;
}

static char *read_stdin(size_t *n) {
    size_t cap = 4096, len = 0;
    char *b = kiln_malloc(cap);
    while (b) {
        if (len + 1 >= cap) {
            char *nb = kiln_realloc(b, cap * 2);
            if (!nb) break;
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + len, 1, cap - len - 1, stdin);
        if (r == 0) {
            b[len] = 0;
            *n = len;
            return b;
        }
        len += r;
    }
    kiln_free(b);
    return NULL;
}

int kiln_cmd_chat(int argc, char **argv) {
    kiln_engine_options o;
    kiln_cli_engine_defaults(&o);
    const char *system = NULL, *tmpl = NULL;
    long n = 512, top_k = -2, seed = -1;
    double temp = -1, top_p = -1;
    for (int i = 1; i < argc; i++) {
        int r = kiln_cli_engine_opt(argc, argv, &i, &o);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_chat(); return 0; }
        if (!val) { fprintf(stderr, "kiln chat: unknown or incomplete option '%s'\n", a); usage_chat(); return 2; }
        i++;
        if (!strcmp(a, "--system")) system = val;
        else if (!strcmp(a, "--chat-template")) tmpl = val;
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            if (kiln_cli_parse_int(val, 1, 1 << 24, &n)) { fprintf(stderr, "kiln chat: -n must be a positive integer\n"); return 2; }
        } else if (!strcmp(a, "--temperature") || !strcmp(a, "-t")) {
            if (kiln_cli_parse_float(val, &temp) || temp < 0) { fprintf(stderr, "kiln chat: --temperature must be >= 0\n"); return 2; }
        } else if (!strcmp(a, "--top-p")) {
            if (kiln_cli_parse_float(val, &top_p) || !(top_p > 0 && top_p <= 1)) { fprintf(stderr, "kiln chat: --top-p must be in (0, 1]\n"); return 2; }
        } else if (!strcmp(a, "--top-k")) {
            if (kiln_cli_parse_int(val, 0, 1 << 24, &top_k)) { fprintf(stderr, "kiln chat: --top-k must be >= 0\n"); return 2; }
        } else if (!strcmp(a, "--seed") || !strcmp(a, "-s")) {
            if (kiln_cli_parse_int(val, 0, 1L << 62, &seed)) { fprintf(stderr, "kiln chat: --seed must be >= 0\n"); return 2; }
        } else { fprintf(stderr, "kiln chat: unknown option '%s'\n", a); usage_chat(); return 2; }
    }
    if (!o.model_path) { usage_chat(); return 2; }
    int interactive = isatty(0);
    kiln_error err = {0};
    kiln_engine *e = NULL;
    if (kiln_engine_open(&e, &o, &err)) { kiln_cli_print_error("chat", &err); return 1; }
    const kiln_tokenizer *t = kiln_engine_tokenizer(e);
    const char *fmt = t ? kiln_chat_template_name(t, tmpl, &err) : NULL;
    if (!fmt) {
        if (!t) fprintf(stderr, "kiln chat: the model has no tokenizer (give one with --tokenizer)\n");
        else kiln_cli_print_error("chat", &err);
        kiln_engine_close(e);
        return 1;
    }
    const kiln_config *mc = &kiln_engine_model(e)->cfg;
    kiln_request_params base;
    kiln_request_params_default(&base);
    base.max_tokens = (int)n;
    base.sampling.temperature = temp >= 0 ? (float)temp : !interactive ? 0.0f
                                : mc->has_temperature ? mc->gen_temperature : 0.0f;
    base.sampling.top_p = top_p > 0 ? (float)top_p : mc->has_top_p ? mc->gen_top_p : 1.0f;
    base.sampling.top_k = top_k >= 0 ? (int)top_k : mc->has_top_k ? mc->gen_top_k : 0;
    if (seed >= 0) { base.sampling.seed = (uint64_t)seed; base.sampling.has_seed = 1; }
    history h = {0};
    int rc = 0, keep = 0;
    if (system) {
        if (hist_add(&h, "system", system, strlen(system))) rc = 1;
        keep = 1;
    }
    if (!interactive) {
        size_t len;
        char *msg = read_stdin(&len);
        while (msg && len && (msg[len - 1] == '\n' || msg[len - 1] == '\r')) msg[--len] = 0;
        if (!msg || hist_add(&h, "user", msg, len)) { fprintf(stderr, "kiln chat: cannot read stdin\n"); rc = 1; }
        else if (turn(e, tmpl, &h, &base, 1, &err)) { kiln_cli_print_error("chat", &err); rc = 1; }
        kiln_free(msg);
    } else {
        fprintf(stderr, "kiln chat (%s format): /reset clears the history, /quit leaves\n", fmt);
        char line[65536];
        while (!rc) {
            fputs("> ", stdout);
            fflush(stdout);
            if (!fgets(line, sizeof line, stdin)) break;
            size_t len = strlen(line);
            while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
            if (!len) continue;
            if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
            if (!strcmp(line, "/reset")) { hist_clear(&h, keep); fprintf(stderr, "(history cleared)\n"); continue; }
            if (hist_add(&h, "user", line, len)) { rc = 1; break; }
            if (turn(e, tmpl, &h, &base, 1, &err)) {
                kiln_cli_print_error("chat", &err);
                hist_clear(&h, h.n - 1); /* drop the failed user turn, keep going */
            }
        }
    }
    hist_clear(&h, 0);
    kiln_free(h.m);
    kiln_free(h.owned);
    kiln_engine_close(e);
    return rc;
}
