/* kiln-layer: engine (links only this layer and those below it) */
/* test_fp8_engine.c: FP8 through the engine (issue 17) on ../shared/models/mistral-tiny-random
 * (bf16, HF):
 *   - kv_cache_dtype "f16" / "bf16" (CPU): twice the f32 pool's blocks, generation alone and in a
 *     batch agree;
 *   - kv_cache_dtype "fp8": the same kv_memory_mb holds four times the f32 pool's blocks (twice a
 *     bf16 pool's), the info names the pool type; generation runs and a request's tokens are the
 *     same alone and in a batch of three (per-token everything: I5 holds with FP8);
 *   - quantization "fp8" / "fp8-per-channel": the info names the weight dtype and scheme; greedy
 *     generation alone and batched agree; an unknown quantization is refused by name;
 *   - allocation in the step loop stays zero with both (I7). */
#include <string.h>
#include "engine/engine.h"
#include "model/model.h"
#include "test.h"
#include "util/alloc.h"

enum { MAXO = 24 };

static kiln_engine *open_fp8(const char *model, const char *kv, const char *quant, size_t mb, kiln_error *err) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.model_path = model;
    o.skip_tokenizer = 1;
    o.max_seqs = 16; /* wants 256 blocks: the memory, not the sequences, sizes the pool */
    o.max_model_len = 256;
    o.kv_memory_mb = mb;
    o.kv_cache_dtype = kv;
    o.quantization = quant;
    kiln_engine *e = NULL;
    if (kiln_engine_open(&e, &o, err)) return NULL;
    return e;
}

/* greedy: n requests (prompts differ), all added at once; ids out [n][MAXO] */
static int generate(kiln_engine *e, int n, int32_t out[][MAXO], uint64_t *allocs) {
    uint64_t id[4];
    int32_t prompts[4][6] = {{1, 5, 9, 20, 33, 7}, {1, 60, 2, 88, 41, 13}, {1, 100, 200, 300, 400, 500}, {1, 7, 7, 7, 7, 7}};
    kiln_error err = {0};
    for (int i = 0; i < n; i++) {
        kiln_request_params p;
        kiln_request_params_default(&p);
        p.prompt_ids = prompts[i];
        p.n_prompt = 6;
        p.max_tokens = MAXO;
        p.ignore_eos = 1;
        p.sampling.temperature = 0;
        if (kiln_engine_add_request(e, &p, &id[i], &err)) { fprintf(stderr, "add: %s\n", err.msg); return -1; }
    }
    int got[4] = {0}, active = 1;
    *allocs = 0;
    for (int s = 0; s < 1000 && active; s++) {
        uint64_t a0 = kiln_alloc_count();
        if (kiln_engine_step(e, &active, &err)) { fprintf(stderr, "step: %s\n", err.msg); return -1; }
        *allocs += kiln_alloc_count() - a0;
        for (int i = 0; i < n; i++) {
            kiln_output o;
            if (kiln_engine_poll(e, id[i], &o, &err)) continue;
            for (int k = 0; k < o.n_new && got[i] < MAXO; k++) out[i][got[i]++] = o.new_ids[k];
        }
    }
    for (int i = 0; i < n; i++) if (got[i] != MAXO) return -1;
    return 0;
}

static void check_config(const char *model, const char *kv, const char *quant) {
    kiln_error err = {0};
    kiln_engine *e = open_fp8(model, kv, quant, 8, &err);
    KT_CHECK(e != NULL, "open kv %s quant %s: %s", kv, quant ? quant : "-", err.msg);
    if (!e) return;
    kiln_engine_info in;
    kiln_engine_get_info(e, &in);
    int32_t solo[1][MAXO], batch[3][MAXO];
    uint64_t a1 = 0, a3 = 0;
    KT_CHECK(generate(e, 1, solo, &a1) == 0, "generate alone (kv %s, %s)", kv, quant ? quant : "16-bit");
    KT_CHECK(generate(e, 3, batch, &a3) == 0, "generate in a batch of 3");
    KT_CHECK(memcmp(solo[0], batch[0], sizeof solo[0]) == 0, "kv %s, %s: the same tokens alone and in a batch",
             kv, quant ? quant : "16-bit");
    KT_CHECK(a1 == 0 && a3 == 0, "no allocation in the step loop (%llu, %llu)", (unsigned long long)a1,
             (unsigned long long)a3);
    if (quant) {
        KT_CHECK(!strcmp(in.weight_dtype, "f8_e4m3") && strstr(in.quantization, "online fp8") &&
                     strstr(in.quantization, strcmp(quant, "fp8") ? "per-channel" : "per-tensor"),
                 "info: weights %s (%s)", in.weight_dtype, in.quantization);
    }
    kiln_engine_close(e);
}

/* kv's pool in 1 MiB of KV memory: its element type, ratio x the f32 pool's blocks, and the
 * backend holding exactly its bytes */
static void check_pool(const char *model, const char *kv, kiln_kv_dtype dt, int ratio) {
    kiln_error err = {0};
    kiln_engine *a = open_fp8(model, "auto", NULL, 1, &err), *b = open_fp8(model, kv, NULL, 1, &err);
    KT_CHECK(a && b, "open %s: %s", kv, err.msg);
    if (a && b) {
        kiln_engine_info ia, ib;
        kiln_engine_get_info(a, &ia);
        kiln_engine_get_info(b, &ib);
        int na = ia.kv_layout.n_blocks - 1, nb = ib.kv_layout.n_blocks - 1;
        printf("  1 MiB of KV: %d f32 blocks, %d %s blocks (%zu / %zu bytes)\n", na, nb, kv, ia.kv_layout_bytes,
               ib.kv_layout_bytes);
        KT_CHECK(ib.kv_layout.dtype == dt && ib.kv_layout.elem_bytes == 4 / ratio, "%s pool layout", kv);
        KT_CHECK(nb >= ratio * na && nb < ratio * na + ratio,
                 "the %s pool holds %dx the f32 pool's blocks in the same memory (%d vs %d)", kv, ratio, nb, na);
        KT_CHECK(ib.backend_kv_bytes == ib.kv_layout_bytes, "the backend holds the %s pool's bytes (%zu)", kv,
                 ib.backend_kv_bytes);
    }
    kiln_engine_close(a);
    kiln_engine_close(b);
}

int main(void) {
    const char *model = kt_shared("models/mistral-tiny-random");
    if (!kt_exists(model)) KT_SKIP("%s not found (KILN_SHARED)", model);
    kiln_error err = {0};
    /* the pool in 1 MiB: fp8 holds 4x the f32 ("auto" on the CPU) pool's blocks, f16 / bf16 2x */
    check_pool(model, "fp8", KILN_KV_FP8_E4M3, 4);
    check_pool(model, "f16", KILN_KV_F16, 2);
    check_pool(model, "bf16", KILN_KV_BF16, 2);
    check_config(model, "f16", NULL);
    check_config(model, "bf16", NULL);
    check_config(model, "fp8", NULL);
    check_config(model, "auto", "fp8");
    check_config(model, "fp8", "fp8-per-channel");
    kiln_engine *c = open_fp8(model, "auto", "int4", 4, &err);
    KT_CHECK(!c && strstr(err.msg, "int4"), "quantization int4 refused by name: %s", err.msg);
    kiln_engine_close(c);
    return kt_done();
}
