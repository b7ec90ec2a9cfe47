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
 * PATH: tokenizer.json, tekken.json, llama2.c tokenizer .bin, or a model folder.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tokenizer/tokenizer.h"
#include "util/alloc.h"

static void usage(FILE *f) {
    fprintf(f, "usage: kiln tokenize --tokenizer PATH [--no-special] [--parse-special] [--json] "
               "[--decode] [--raw]\n"
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

int kiln_cmd_tokenize(int argc, char **argv) {
    const char *path = NULL;
    int no_special = 0, parse_special = 0, json = 0, decode = 0, raw = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--tokenizer") && i + 1 < argc) path = argv[++i];
        else if (!strncmp(a, "--tokenizer=", 12)) path = a + 12;
        else if (!strcmp(a, "--no-special")) no_special = 1;
        else if (!strcmp(a, "--parse-special")) parse_special = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--decode")) decode = 1;
        else if (!strcmp(a, "--raw")) raw = 1;
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
    size_t n;
    char *in = read_all(stdin, &n);
    if (!in) {
        fprintf(stderr, "kiln tokenize: out of memory reading stdin\n");
        kiln_tokenizer_free(t);
        return 1;
    }
    int rc = 0;
    if (!decode) {
        int32_t *ids;
        int nid;
        int flags = (no_special ? 0 : KILN_TOK_ADD_BOS) | (parse_special ? KILN_TOK_PARSE_SPECIAL : 0);
        if (kiln_tokenizer_encode(t, in, n, flags, &ids, &nid, &err) != KILN_OK) {
            fprintf(stderr, "kiln tokenize: %s\n", err.msg);
            rc = 1;
        } else {
            if (json) putchar('[');
            for (int i = 0; i < nid; i++) printf(i ? (json ? ",%d" : " %d") : "%d", ids[i]);
            if (json) putchar(']');
            putchar('\n');
            kiln_free(ids);
        }
    } else {
        int cap = 256, nid = 0;
        int32_t *ids = kiln_malloc((size_t)cap * sizeof *ids);
        char *p = in;
        while (ids && *p) {
            if (strchr(" \t\r\n,[]", *p)) {
                p++;
                continue;
            }
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) {
                fprintf(stderr, "kiln tokenize: --decode: not a token id at '%.20s'\n", p);
                rc = 2;
                break;
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
            rc = 1;
        } else if (rc == 0) {
            char *text;
            size_t tl;
            if (kiln_tokenizer_decode(t, ids, nid, no_special, &text, &tl, &err) != KILN_OK) {
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
        }
        kiln_free(ids);
    }
    kiln_free(in);
    kiln_tokenizer_free(t);
    return rc;
}
