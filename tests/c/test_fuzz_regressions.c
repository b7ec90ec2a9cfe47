/* kiln-layer: server (links only this layer and those below it) */
/* test_fuzz_regressions.c: every fuzz target (tests/fuzz/fuzz_*.c) compiled into one program
 * without libFuzzer, replaying through the same entry points
 *   tests/fuzz/regressions/TARGET/  inputs that once crashed, leaked or tripped UBSan
 *   tests/fuzz/corpus/TARGET/       the seed corpora
 * so a fixed crash stays tested in the normal (and ASan) builds, with gcc. A crash here is a
 * failure of this test; an input never "fails" otherwise (the targets return 0). */
#include <dirent.h>
#include <stdint.h>
#include "test.h"

#define FUZZ_ENTRY fz_one_safetensors
#include "../fuzz/fuzz_safetensors.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_gguf
#include "../fuzz/fuzz_gguf.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_hf_config
#include "../fuzz/fuzz_hf_config.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_params_json
#include "../fuzz/fuzz_params_json.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_shard_index
#include "../fuzz/fuzz_shard_index.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_tokenizer_json
#include "../fuzz/fuzz_tokenizer_json.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_tekken
#include "../fuzz/fuzz_tekken.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_tokenize
#include "../fuzz/fuzz_tokenize.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_chat
#include "../fuzz/fuzz_chat.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_openai
#include "../fuzz/fuzz_openai.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_sse
#include "../fuzz/fuzz_sse.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fz_one_grammar
#include "../fuzz/fuzz_grammar.c"
#undef FUZZ_ENTRY

static const struct {
    const char *name;
    int (*one)(const uint8_t *, size_t);
} targets[] = {
    {"fuzz_safetensors", fz_one_safetensors}, {"fuzz_gguf", fz_one_gguf},
    {"fuzz_hf_config", fz_one_hf_config},     {"fuzz_params_json", fz_one_params_json},
    {"fuzz_shard_index", fz_one_shard_index}, {"fuzz_tokenizer_json", fz_one_tokenizer_json},
    {"fuzz_tekken", fz_one_tekken},           {"fuzz_tokenize", fz_one_tokenize},
    {"fuzz_chat", fz_one_chat},               {"fuzz_openai", fz_one_openai},
    {"fuzz_sse", fz_one_sse},                 {"fuzz_grammar", fz_one_grammar},
};

/* run every file of dir through one; returns how many ran */
static int replay(const char *dir, int (*one)(const uint8_t *, size_t)) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        FILE *f = fopen(p, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
        size_t got = buf && len > 0 ? fread(buf, 1, (size_t)len, f) : 0;
        fclose(f);
        KT_CHECK(buf && got == (size_t)(len > 0 ? len : 0), "%s: read failed", p);
        if (buf) {
            fprintf(stderr, "replay %s\n", p);
            KT_CHECK(one(buf, got) == 0, "%s", p);
            n++;
        }
        free(buf);
    }
    closedir(d);
    return n;
}

int main(void) {
    if (!kt_exists("tests/fuzz/corpus")) KT_SKIP("tests/fuzz/corpus not found (run from the repo root)");
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", targets[i].name);
        int n = replay(dir, targets[i].one);
        KT_CHECK(n > 0, "%s: no seed corpus", targets[i].name);
        snprintf(dir, sizeof dir, "tests/fuzz/regressions/%s", targets[i].name);
        int r = replay(dir, targets[i].one);
        printf("%-20s %4d corpus, %3d regression inputs\n", targets[i].name, n, r);
    }
    return kt_done();
}
