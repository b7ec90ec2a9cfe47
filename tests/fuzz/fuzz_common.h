/* fuzz_common.h: what the fuzz targets (tests/fuzz/fuzz_*.c) share.
 *
 * Each target defines FUZZ_ENTRY (LLVMFuzzerTestOneInput unless the includer renamed it):
 * tests/c/test_fuzz_regressions.c includes every target into one program with the entries
 * renamed and replays tests/fuzz/regressions/ and tests/fuzz/corpus/ through them, so a crash
 * found once stays tested in builds without clang.
 *
 * Loaders take paths and mmap: inputs are written to files under one per-process temporary
 * folder (fz_write), removed at exit. The fixed tokenizers come from tests/fuzz/data/, found
 * beside this header (__FILE__ is absolute: CMake passes absolute source paths). */
#ifndef KILN_FUZZ_COMMON_H
#define KILN_FUZZ_COMMON_H
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "kiln.h"
#include "tokenizer/tokenizer.h"

static char fz_root[256];

/* remove the folder tree under p (only what the targets wrote: files and folders) */
static inline void fz_rm_tree(const char *p) {
    DIR *d = opendir(p);
    if (!d) {
        unlink(p);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char q[1024];
        if (snprintf(q, sizeof q, "%s/%s", p, e->d_name) >= (int)sizeof q) continue;
        fz_rm_tree(q);
    }
    closedir(d);
    rmdir(p);
}
static inline void fz_cleanup(void) {
    if (fz_root[0]) fz_rm_tree(fz_root);
}

/* a folder <tmp>/<sub> of this process, created once */
static inline const char *fz_dir(const char *sub) {
    static char out[8][512];
    static int k;
    if (!fz_root[0]) {
        snprintf(fz_root, sizeof fz_root, "/tmp/kiln_fuzz_XXXXXX");
        if (!mkdtemp(fz_root)) {
            perror("kiln fuzz: mkdtemp");
            abort();
        }
        atexit(fz_cleanup);
    }
    char *o = out[k++ & 7];
    snprintf(o, 512, "%s/%s", fz_root, sub);
    mkdir(o, 0700);
    return o;
}

/* write n bytes to <dir>/<name>; returns the path (static storage, 8 in rotation) */
static inline const char *fz_write(const char *dir, const char *name, const void *data, size_t n) {
    static char out[8][1024];
    static int k;
    char *p = out[k++ & 7];
    snprintf(p, 1024, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n)) {
        perror("kiln fuzz: write");
        abort();
    }
    fclose(f);
    return p;
}

/* a NUL-terminated copy of the input (malloc; the parsers take C strings) */
static inline char *fz_cstr(const uint8_t *data, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    if (n) memcpy(s, data, n);
    s[n] = 0;
    return s;
}

/* the path of tests/fuzz/data/<name> */
static inline const char *fz_data(const char *name) {
    static char out[4][1024];
    static int k;
    char *p = out[k++ & 3];
    const char *f = __FILE__, *slash = strrchr(f, '/');
    if (slash) snprintf(p, 1024, "%.*s/data/%s", (int)(slash - f), f, name);
    else snprintf(p, 1024, "data/%s", name);
    return p;
}

/* The fixed tokenizers (loaded once, kept for the process): 0 byte-level BPE tokenizer.json
 * (ChatML and Llama 3 tokens), 1 SentencePiece-style tokenizer.json, 2 tekken v7. */
#define FZ_N_TOK 3
static kiln_tokenizer *fz_tok[FZ_N_TOK];
static inline void fz_tok_free(void) {
    for (int i = 0; i < FZ_N_TOK; i++) kiln_tokenizer_free(fz_tok[i]), fz_tok[i] = NULL;
}
static inline kiln_tokenizer *fz_tokenizer(int i) {
    static const char *names[FZ_N_TOK] = {"tok_bytelevel.json", "tok_spm.json", "tekken.json"};
    if (!fz_tok[0]) {
        for (int j = 0; j < FZ_N_TOK; j++) {
            kiln_error err = {0};
            if (kiln_tokenizer_load_ex(&fz_tok[j], fz_data(names[j]), KILN_TOK_LOAD_RAW, &err)) {
                fprintf(stderr, "kiln fuzz: %s: %s\n", names[j], err.msg);
                abort();
            }
        }
        atexit(fz_tok_free);
    }
    return fz_tok[i % FZ_N_TOK];
}

#ifndef FUZZ_ENTRY
#define FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif
#endif
