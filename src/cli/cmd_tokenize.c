/* cmd_tokenize.c: `kiln tokenize`: text <-> token ids from the command line.
 *
 *   kiln tokenize --tokenizer PATH [--no-special] [--parse-special] [--json] [--decode] [--raw]
 *
 * Encode (default): all of stdin is one text (bytes as given, invalid UTF-8 included); the ids
 * go to stdout on one line separated by spaces, or as a JSON array with --json. BOS/template
 * tokens are added unless --no-special; --parse-special turns special-token text ("</s>",
 * "[INST]") into the control token (HF tokenizer.json always matches its added tokens, as the
 * `tokenizers` library does). Decode (--decode): stdin holds ids (separated by spaces, commas,
 * newlines; brackets ignored); the text goes to stdout as is (a JSON string with --json);
 * --no-special leaves special tokens out. --raw reads tokenizer.json exactly as the HF
 * `tokenizers` library does instead of transformers' view (see tokenizer.h).
 * PATH: tokenizer.json, tekken.json, llama2.c tokenizer .bin, a .gguf, or a model folder.
 * --chat FILE.json: encode an OpenAI-style request (messages, tools) with the vocabulary's chat
 * format (--chat-template NAME overrides; the generation prompt is added unless the request says
 * "add_generation_prompt": false). The request is read by the server's parser
 * (kiln_srv_parse_request), the one reader of OpenAI chat messages. --tool-calls: stdin holds ids of model output; decode them (special tokens kept) and print
 * {"content": ..., ["reasoning_content": ...,] "tool_calls": [...]} as the server's Mistral reader
 * (server/mistral_tools.c) reads them; with --stream, the SSE chunks' JSON objects the server
 * would send as the text grows a token at a time, one a line.
 * --chat FILE --batch: FILE holds a JSON array of requests; one line each (ids, or "error: MESSAGE").
 * --bench N: encode stdin N times (plain text, one thread) and print the best run's MB/s.
 * --batch (for tests, one load for many texts): encode reads records "<byte length>\n<bytes>"
 * and prints one line of ids per record; --decode --batch reads one line of ids per sequence
 * and prints each text as a JSON string on its own line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "server/mistral_tools.h"
#include "server/openai.h"
#include "tokenizer/chat.h"
#include "tokenizer/detok.h"
#include "tokenizer/tokenizer.h"
#include "cli/cli.h"
#include "util/alloc.h"
#include "util/timeutil.h"

static void usage(FILE *f) {
    fprintf(f, "usage: kiln tokenize --tokenizer PATH [--no-special] [--parse-special] [--json] "
               "[--decode] [--raw] [--batch]\n"
               "       kiln tokenize --tokenizer PATH --chat FILE.json [--chat-template NAME] [--json]\n"
               "       kiln tokenize --tokenizer PATH --tool-calls [--stream]  (stdin: ids of model output)\n"
               "  reads stdin: text to encode, or ids to decode (--decode)\n");
}

static char *read_all(FILE *f, size_t *n) {
    size_t cap = 1 << 16, len = 0;
    char *b = kiln_malloc(cap);
    while (b) {
        if (len + 1 >= cap) {
            char *nb = kiln_realloc(b, cap * 2);
            if (!nb) {
                kiln_free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0) break;
    }
    if (b) b[len] = 0;
    *n = len;
    return b;
}

static void put_json_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static int do_encode(kiln_tokenizer *t, const char *in, size_t n, int flags, int json) {
    kiln_error err = {0};
    int32_t *ids;
    int nid;
    if (kiln_tokenizer_encode(t, in, n, flags, &ids, &nid, &err) != KILN_OK) {
        fprintf(stderr, "kiln tokenize: %s\n", err.msg);
        return 1;
    }
    if (json) putchar('[');
    for (int i = 0; i < nid; i++) printf(i ? (json ? ",%d" : " %d") : "%d", ids[i]);
    if (json) putchar(']');
    putchar('\n');
    kiln_free(ids);
    return 0;
}

static int do_decode(kiln_tokenizer *t, const char *p, int skip_special, int json) {
    kiln_error err = {0};
    int cap = 256, nid = 0, rc = 0;
    int32_t *ids = kiln_malloc((size_t)cap * sizeof *ids);
    while (ids && *p) {
        if (strchr(" \t\r\n,[]", *p)) {
            p++;
            continue;
        }
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) {
            fprintf(stderr, "kiln tokenize: --decode: not a token id at '%.20s'\n", p);
            kiln_free(ids);
            return 2;
        }
        p = end;
        if (nid == cap) {
            int32_t *ni = kiln_realloc(ids, (size_t)cap * 2 * sizeof *ids);
            if (!ni) {
                kiln_free(ids);
                ids = NULL;
                break;
            }
            ids = ni;
            cap *= 2;
        }
        ids[nid++] = (int32_t)v;
    }
    if (!ids) {
        fprintf(stderr, "kiln tokenize: out of memory\n");
        return 1;
    }
    char *text;
    size_t tl;
    if (kiln_tokenizer_decode(t, ids, nid, skip_special, &text, &tl, &err) != KILN_OK) {
        fprintf(stderr, "kiln tokenize: %s\n", err.msg);
        rc = 1;
    } else {
        if (json) {
            put_json_string(text, tl);
            putchar('\n');
        } else {
            fwrite(text, 1, tl, stdout);
        }
        kiln_free(text);
    }
    kiln_free(ids);
    return rc;
}

/* one request (JSON text s, n bytes): its ids on a line; a refusal goes to stderr, or (batch) to
 * stdout as a line "error: MESSAGE" */
static int chat_one(kiln_tokenizer *t, const char *path, const char *s, size_t n, const char *tmpl, int json, int batch) {
    FILE *ef = batch ? stdout : stderr;
    const char *pre = batch ? "error: " : "kiln tokenize: ";
    /* the server's OpenAI request parser: one reading of chat messages for both commands */
    kiln_error err = {0};
    kiln_srv_limits lim = {.model_name = NULL, .vocab_size = kiln_tokenizer_vocab_size(t), .max_model_len = 0};
    kiln_srv_request req;
    kiln_srv_err e;
    int32_t *ids = NULL;
    int nid = 0, rc = 0;
    if (kiln_srv_parse_request(&req, KILN_SRV_CHAT, s, n, &lim, &e)) {
        fprintf(ef, "%s%s: %s%s%s\n", pre, path, e.param[0] ? e.param : "", e.param[0] ? ": " : "", e.msg);
        return 1;
    }
    if (kiln_chat_encode(t, tmpl, req.msgs, req.n_msgs, req.tools_json, req.add_generation_prompt, &ids, &nid, &err)) {
        fprintf(ef, "%s%s: %s\n", pre, path, err.msg);
        rc = 1;
    } else {
        if (json) putchar('[');
        for (int i = 0; i < nid; i++) printf(i ? (json ? ",%d" : " %d") : "%d", ids[i]);
        if (json) putchar(']');
        putchar('\n');
    }
    kiln_free(ids);
    kiln_srv_request_free(&req);
    return rc;
}

/* --chat FILE: one request; with --batch FILE holds a JSON array of requests, one output line
 * each (one tokenizer load for many requests: the oracle tests) */
static int do_chat(kiln_tokenizer *t, const char *path, const char *tmpl, int json, int batch) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "kiln tokenize: cannot open %s\n", path);
        return 1;
    }
    size_t n;
    char *s = read_all(f, &n);
    fclose(f);
    if (!s) return 1;
    int rc = 0;
    if (!batch) {
        rc = chat_one(t, path, s, n, tmpl, json, 0);
    } else {
        json_error_t je;
        json_t *all = json_loadb(s, n, 0, &je), *r;
        size_t i;
        if (!json_is_array(all)) {
            fprintf(stderr, "kiln tokenize: %s: --chat --batch takes a JSON array of requests\n", path);
            rc = 2;
        }
        json_array_foreach(all, i, r) {
            char *one = json_dumps(r, JSON_COMPACT);
            if (!one) {
                rc = 1;
                break;
            }
            chat_one(t, path, one, strlen(one), tmpl, json, 1);
            free(one);
        }
        json_decref(all);
    }
    kiln_free(s);
    return rc;
}

/* --bench N: encode stdin N times (no special tokens); the best run's MB/s and the id count */
static int do_bench(kiln_tokenizer *t, const char *in, size_t n, int reps) {
    kiln_error err = {0};
    double best = 1e30;
    int nid = 0;
    for (int r = 0; r < reps; r++) {
        int32_t *ids;
        double t0 = kiln_now();
        if (kiln_tokenizer_encode(t, in, n, 0, &ids, &nid, &err)) {
            fprintf(stderr, "kiln tokenize: %s\n", err.msg);
            return 1;
        }
        double dt = kiln_now() - t0;
        if (dt < best) best = dt;
        kiln_free(ids);
    }
    printf("{\"bytes\": %zu, \"tokens\": %d, \"seconds\": %.6f, \"mb_per_s\": %.3f}\n", n, nid, best,
           (double)n / 1e6 / best);
    return 0;
}

static void cli_id(void *ctx, char *id, size_t cap) { snprintf(id, cap, "cli-%d", ++*(int *)ctx); }

/* --tool-calls --stream: the output text as the server sees it grow (one token more each time,
 * released by the incremental detokenizer as in the server), through the server's Mistral reader and SSE
 * writer: the chunks' JSON objects, one a line */
static int stream_tool_calls(kiln_tokenizer *t, const int32_t *ids, int nid) {
    kiln_mtc ms;
    kiln_mtc_init(&ms, 1);
    kiln_srv_request r;
    memset(&r, 0, sizeof r);
    r.kind = KILN_SRV_CHAT;
    kiln_srv_meta m = {.id = "chatcmpl-cli", .created = 0, .model = "kiln"};
    kiln_buf out = {0};
    int first = 1, idn = 0, rc = 0;
    kiln_buf acc = {0}; /* the text so far, grown as the server's detokenizer releases it */
    kiln_detok d;
    kiln_detok_init(&d, t, 0);
    for (int k = 0; k <= nid && !rc; k++) {
        const char *piece = NULL;
        size_t pl = 0;
        kiln_error err = {0};
        if (k < nid ? kiln_detok_push(&d, ids[k], &piece, &pl, &err) : kiln_detok_flush(&d, &piece, &pl, &err)) {
            fprintf(stderr, "kiln tokenize: %s\n", err.msg);
            rc = 1;
            break;
        }
        if (kiln_buf_add(&acc, piece ? piece : "", pl) ||
            kiln_srv_mistral_frames(&ms, acc.p ? acc.p : "", acc.len, k == nid, &out, &r, &m, &first, cli_id, &idn)) {
            fprintf(stderr, "kiln tokenize: out of memory\n");
            rc = 1;
        }
    }
    kiln_detok_free(&d);
    kiln_buf_free(&acc);
    for (char *p = out.p; p && !rc;) { /* "data: {...}\n\n" -> "{...}\n" */
        char *e = strstr(p, "\n\n");
        if (!e) break;
        if (!strncmp(p, "data: ", 6)) printf("%.*s\n", (int)(e - p - 6), p + 6);
        p = e + 2;
    }
    kiln_buf_free(&out);
    kiln_mtc_free(&ms);
    return rc;
}

static int do_tool_calls(kiln_tokenizer *t, const char *p, int stream) {
    kiln_error err = {0};
    int32_t *ids = NULL;
    int nid = 0, rc = 0;
    char *q = kiln_strdup(p); /* ids separated by spaces, commas or newlines, brackets ignored */
    size_t k = 0;
    for (const char *r = p; q && *r; r++) {
        if (strchr(" \t\r\n,[]", *r)) {
            if (k && q[k - 1] != ',') q[k++] = ',';
        } else {
            q[k++] = *r;
        }
    }
    if (q) {
        if (k && q[k - 1] == ',') k--;
        q[k] = 0;
    }
    int bad = !q || kiln_cli_parse_ids(q, &ids, &nid);
    kiln_free(q);
    if (bad) {
        fprintf(stderr, "kiln tokenize: --tool-calls: stdin must hold token ids\n");
        return 2;
    }
    char *text = NULL, *content = NULL, *calls = NULL, *reasoning = NULL;
    size_t tl;
    int idn = 0;
    if (kiln_tokenizer_decode(t, ids, nid, 0, &text, &tl, &err)) {
        fprintf(stderr, "kiln tokenize: %s\n", err.msg);
        rc = 1;
    } else if (stream) {
        rc = stream_tool_calls(t, ids, nid);
    } else if (kiln_srv_mistral_whole(text, tl, 1, cli_id, &idn, &content, &reasoning, &calls)) {
        fprintf(stderr, "kiln tokenize: out of memory\n");
        rc = 1;
    } else {
        fputs("{\"content\": ", stdout);
        const char *c = content ? content : "";
        put_json_string(c, strlen(c));
        if (reasoning) {
            fputs(", \"reasoning_content\": ", stdout);
            put_json_string(reasoning, strlen(reasoning));
        }
        printf(", \"tool_calls\": %s}\n", calls ? calls : "null");
    }
    kiln_free(text);
    kiln_free(content);
    kiln_free(calls);
    kiln_free(reasoning);
    kiln_free(ids);
    return rc;
}

int kiln_cmd_tokenize(int argc, char **argv) {
    const char *path = NULL;
    const char *chat = NULL, *tmpl = NULL;
    int no_special = 0, parse_special = 0, json = 0, decode = 0, raw = 0, batch = 0, tool_calls = 0, bench = 0, stream = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--tokenizer") && i + 1 < argc) path = argv[++i];
        else if (!strncmp(a, "--tokenizer=", 12)) path = a + 12;
        else if (!strcmp(a, "--no-special")) no_special = 1;
        else if (!strcmp(a, "--parse-special")) parse_special = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--decode")) decode = 1;
        else if (!strcmp(a, "--raw")) raw = 1;
        else if (!strcmp(a, "--batch")) batch = 1;
        else if (!strcmp(a, "--chat") && i + 1 < argc) chat = argv[++i];
        else if (!strcmp(a, "--chat-template") && i + 1 < argc) tmpl = argv[++i];
        else if (!strcmp(a, "--tool-calls")) tool_calls = 1;
        else if (!strcmp(a, "--stream")) stream = 1;
        else if (!strcmp(a, "--bench") && i + 1 < argc) bench = atoi(argv[++i]);
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "kiln tokenize: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "kiln tokenize: --tokenizer PATH is required\n");
        usage(stderr);
        return 2;
    }
    kiln_error err = {0};
    kiln_tokenizer *t;
    if (kiln_tokenizer_load_ex(&t, path, raw ? KILN_TOK_LOAD_RAW : 0, &err) != KILN_OK) {
        fprintf(stderr, "kiln tokenize: %s\n", err.msg);
        return 1;
    }
    if (chat) {
        int rc = do_chat(t, chat, tmpl, json, batch);
        kiln_tokenizer_free(t);
        return rc;
    }
    size_t n;
    char *in = read_all(stdin, &n);
    if (!in) {
        fprintf(stderr, "kiln tokenize: out of memory reading stdin\n");
        kiln_tokenizer_free(t);
        return 1;
    }
    int rc = 0;
    if (bench > 0) {
        rc = do_bench(t, in, n, bench);
        kiln_free(in);
        kiln_tokenizer_free(t);
        return rc;
    }
    if (tool_calls) {
        rc = do_tool_calls(t, in, stream);
        kiln_free(in);
        kiln_tokenizer_free(t);
        return rc;
    }
    int flags = (no_special ? 0 : KILN_TOK_ADD_BOS) | (parse_special ? KILN_TOK_PARSE_SPECIAL : 0);
    if (!decode && !batch) {
        rc = do_encode(t, in, n, flags, json);
    } else if (!decode) {
        size_t pos = 0;
        while (rc == 0 && pos < n) {
            char *end;
            unsigned long long l = strtoull(in + pos, &end, 10);
            if (end == in + pos || *end != '\n' || l > n - (size_t)(end + 1 - in)) {
                fprintf(stderr, "kiln tokenize: --batch: bad record header at byte %zu\n", pos);
                rc = 2;
                break;
            }
            pos = (size_t)(end + 1 - in);
            rc = do_encode(t, in + pos, (size_t)l, flags, json);
            pos += (size_t)l;
        }
    } else if (!batch) {
        rc = do_decode(t, in, no_special, json);
    } else {
        char *line = in;
        while (rc == 0 && *line) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = 0;
            rc = do_decode(t, line, no_special, 1);
            if (!nl) break;
            line = nl + 1;
        }
    }
    kiln_free(in);
    kiln_tokenizer_free(t);
    return rc;
}
