/* hermes.c: the incremental Hermes tool-call reader (hermes.h). */
#include <string.h>
#include "server/hermes.h"

static const char OPEN[] = "<tool_call>", CLOSE[] = "</tool_call>";

static const char *find(const char *s, size_t n, const char *pat) {
    size_t m = strlen(pat);
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(s + i, pat, m)) return s + i;
    return NULL;
}

/* length of the longest suffix of s[0..n) that is a proper prefix of pat */
static size_t partial(const char *s, size_t n, const char *pat) {
    size_t m = strlen(pat);
    for (size_t k = m - 1; k > 0; k--)
        if (k <= n && !memcmp(s + n - k, pat, k)) return k;
    return 0;
}

int kiln_hermes_next(kiln_hermes *h, const char *text, size_t len, int final, kiln_hermes_ev *ev) {
    for (;;) {
        const char *s = text + h->pos;
        size_t n = len - h->pos;
        if (h->phase == 0 || h->phase == 4) {
            const char *o = find(s, n, OPEN);
            size_t upto = o ? (size_t)(o - s) : final ? n : n - partial(s, n, OPEN);
            if (upto > 0 && h->phase == 0 && h->n_calls == 0) {
                ev->kind = KILN_HERMES_CONTENT;
                ev->off = h->pos;
                ev->len = upto;
                h->pos += upto;
                return 1;
            }
            h->pos += upto; /* text between or after calls is dropped */
            if (!o) return 0;
            h->open_pos = h->pos;
            h->pos += strlen(OPEN);
            h->phase = 1;
            continue;
        }
        if (h->phase == 1) { /* {"name": "N", "arguments": */
            const char *a = find(s, n, "\"arguments\"");
            if (!a && final && h->n_calls == 0 && h->phase == 1) { /* never a call: content after all */
                ev->kind = KILN_HERMES_CONTENT;
                ev->off = h->open_pos;
                ev->len = len - h->open_pos;
                ev->index = 0;
                h->pos = len;
                h->phase = 4;
                return 1;
            }
            if (!a) return 0;
            const char *p = a + strlen("\"arguments\"");
            while (p < text + len && (*p == ' ' || *p == '\n' || *p == '\t')) p++;
            if (p >= text + len) return 0;
            if (*p != ':') { h->phase = 4; h->pos = (size_t)(p - text); continue; }
            p++;
            while (p < text + len && (*p == ' ' || *p == '\n' || *p == '\t')) p++;
            if (p >= text + len) return 0;
            /* the name: the string after "name": before "arguments" */
            const char *nm = find(s, (size_t)(a - s), "\"name\"");
            ev->kind = KILN_HERMES_CALL;
            ev->off = ev->len = 0;
            if (nm) {
                const char *q = nm + 6;
                while (q < a && (*q == ' ' || *q == ':')) q++;
                if (q < a && *q == '"') {
                    const char *z = q + 1;
                    while (z < a && *z != '"') z += *z == '\\' ? 2 : 1;
                    if (z < a) { ev->off = (size_t)(q - text); ev->len = (size_t)(z + 1 - q); }
                }
            }
            ev->index = h->n_calls;
            h->pos = (size_t)(p - text);
            h->phase = 2;
            h->depth = h->in_str = h->esc = h->started = 0;
            return 1;
        }
        if (h->phase == 2) { /* the arguments value, up to where it closes */
            size_t i = 0;
            int end = 0;
            for (; i < n && !end; i++) {
                char c = s[i];
                if (h->in_str) {
                    if (h->esc) h->esc = 0;
                    else if (c == '\\') h->esc = 1;
                    else if (c == '"') { h->in_str = 0; if (h->depth == 0) end = 1; }
                    continue;
                }
                if (c == '"') { h->in_str = 1; h->started = 1; }
                else if (c == '{' || c == '[') { h->depth++; h->started = 1; }
                else if (c == '}' || c == ']') { if (--h->depth <= 0) end = 1; }
                else if (h->started && h->depth == 0 && (c == ',' || c == ' ' || c == '\n')) { i--; end = 1; }
                else h->started = 1;
            }
            if (i > 0) {
                ev->kind = KILN_HERMES_ARGS;
                ev->off = h->pos;
                ev->len = i;
                ev->index = h->n_calls;
                h->pos += i;
                if (end) h->phase = 3;
                return 1;
            }
            if (end) { h->phase = 3; continue; }
            return 0;
        }
        if (h->phase == 3) { /* }\n</tool_call> */
            const char *c = find(s, n, CLOSE);
            if (!c) return 0;
            h->pos += (size_t)(c - s) + strlen(CLOSE);
            h->phase = 4;
            ev->kind = KILN_HERMES_CALL_END;
            ev->index = h->n_calls++;
            ev->off = ev->len = 0;
            return 1;
        }
        return 0;
    }
}
