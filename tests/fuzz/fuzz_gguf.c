/* fuzz_gguf.c: GGUF files of arbitrary bytes through the three readers that open them: the
 * format reader (format/gguf.c: header, typed metadata, tensor infos; every key, array element
 * and tensor is read back), the GGUF vocabulary (tokenizer/tok_gguf.c) and the GGUF model
 * loader (model/gguf_model.c: config from metadata, tensor binding). */
#include "fuzz_common.h"
#include "format/gguf.h"
#include "model/model.h"

static void fz_gguf_walk(const kiln_gguf *g) {
    volatile uint64_t sink = 0;
    uint64_t n_kv = kiln_gguf_n_kv(g);
    for (uint64_t i = 0; i < n_kv; i++) {
        kiln_gguf_str k = kiln_gguf_kv_key(g, (int64_t)i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(k.len < 255 ? k.len : 255), k.ptr ? k.ptr : "");
        sink += (uint64_t)kiln_gguf_kv_type(g, (int64_t)i);
        uint64_t u;
        int64_t s;
        double d;
        int b;
        kiln_gguf_str str;
        if (!kiln_gguf_get_u64(g, key, &u)) sink += u;
        if (!kiln_gguf_get_i64(g, key, &s)) sink += (uint64_t)s;
        if (!kiln_gguf_get_f64(g, key, &d)) sink += (uint64_t)(d == d);
        if (!kiln_gguf_get_bool(g, key, &b)) sink += (uint64_t)b;
        if (!kiln_gguf_get_str(g, key, &str) && str.len) sink += (uint8_t)str.ptr[str.len - 1];
        kiln_gguf_type et;
        uint64_t n;
        if (!kiln_gguf_get_arr(g, key, &et, &n)) {
            uint64_t m = n < 64 ? n : 64; /* the first elements and the last */
            for (uint64_t j = 0; j <= m; j++) {
                uint64_t at = j < m ? j : n - 1;
                if (!kiln_gguf_arr_str(g, key, at, &str) && str.len) sink += (uint8_t)str.ptr[0];
                if (!kiln_gguf_arr_f64(g, key, at, &d)) sink += (uint64_t)(d == d);
                if (!kiln_gguf_arr_i64(g, key, at, &s)) sink += (uint64_t)s;
                if (!n) break;
            }
            sink += (uint64_t)kiln_gguf_kv_arr_type(g, (int64_t)i, &n);
        }
    }
    uint64_t n_t = kiln_gguf_n_tensors(g);
    for (uint64_t i = 0; i < n_t; i++) {
        const kiln_gguf_tensor_info *t = kiln_gguf_tensor(g, i);
        if (!t) continue;
        sink += (uint64_t)kiln_gguf_ggml_type_name(t->ggml_type)[0];
        if (t->nbytes) sink += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(t->name.len < 255 ? t->name.len : 255),
                 t->name.ptr ? t->name.ptr : "");
        sink += (uint64_t)(kiln_gguf_find_tensor(g, name) != NULL);
    }
    (void)sink;
}

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    const char *p = fz_write(fz_dir("gguf"), "x.gguf", data, size);
    kiln_error err = {0};
    kiln_gguf *g = NULL;
    if (kiln_gguf_open(&g, p, &err) == 0) {
        fz_gguf_walk(g);
        kiln_gguf_close(g);
    }
    kiln_tokenizer *t = NULL;
    if (kiln_tokenizer_load(&t, p, &err) == 0) {
        int32_t *ids = NULL;
        int n = 0;
        if (kiln_tokenizer_encode(t, "Hello world, the ab <s>\n", 24, KILN_TOK_ADD_BOS | KILN_TOK_PARSE_SPECIAL,
                                  &ids, &n, &err) == 0) {
            char *text = NULL;
            size_t len = 0;
            if (kiln_tokenizer_decode(t, ids, n, 0, &text, &len, &err) == 0) kiln_free(text);
            kiln_free(ids);
        }
        kiln_tokenizer_free(t);
    }
    kiln_model *m = NULL;
    if (kiln_model_load(&m, p, &err) == 0) kiln_model_free(m);
    return 0;
}
