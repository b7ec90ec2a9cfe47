/* cmd_gguf.c: `kiln gguf-dump --model FILE [--tensor NAME --out FILE.f32]`.
 * Lists a GGUF file's metadata and tensors (stdout); with --tensor, writes that tensor
 * dequantized to f32, row-major [rows][ne0] little-endian (what tests/py compare with the gguf
 * package's dequantize). */
#include <stdio.h>
#include <string.h>
#include "format/quant.h"
#include "format/gguf.h"
#include "util/alloc.h"
#include "util/fp16.h"

int kiln_cmd_gguf(int argc, char **argv);

static const char *type_name(kiln_gguf_type t) {
    static const char *n[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                              "str", "arr", "u64", "i64", "f64"};
    return (unsigned)t < 13 ? n[t] : "?";
}

static void print_kv(const kiln_gguf *g, int64_t i) {
    kiln_gguf_str k = kiln_gguf_kv_key(g, i);
    kiln_gguf_type t = kiln_gguf_kv_type(g, i);
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)(k.len > 255 ? 255 : k.len), k.ptr);
    printf("%-44s %-4s ", key, type_name(t));
    if (t == KILN_GGUF_STRING) {
        kiln_gguf_str s;
        kiln_gguf_get_str(g, key, &s);
        int n = (int)(s.len > 60 ? 60 : s.len);
        printf("\"");
        for (int j = 0; j < n; j++) putchar(s.ptr[j] == '\n' ? ' ' : s.ptr[j]);
        printf("\"%s\n", s.len > 60 ? "..." : "");
    } else if (t == KILN_GGUF_ARRAY) {
        uint64_t n;
        kiln_gguf_type et = kiln_gguf_kv_arr_type(g, i, &n);
        printf("[%llu x %s]\n", (unsigned long long)n, type_name(et));
    } else if (t == KILN_GGUF_FLOAT32 || t == KILN_GGUF_FLOAT64) {
        double v = 0;
        kiln_gguf_get_f64(g, key, &v);
        printf("%.9g\n", v);
    } else {
        int64_t v = 0;
        uint64_t u = 0;
        if (kiln_gguf_get_i64(g, key, &v) == 0) printf("%lld\n", (long long)v);
        else if (kiln_gguf_get_u64(g, key, &u) == 0) printf("%llu\n", (unsigned long long)u);
        else printf("?\n");
    }
}

static int dump_tensor(const kiln_gguf_tensor_info *t, const char *out) {
    if (t->dtype == KILN_DT_COUNT || t->dtype == KILN_DT_I32) {
        fprintf(stderr, "gguf-dump: tensor type %s is not supported\n",
                kiln_gguf_ggml_type_name(t->ggml_type));
        return 1;
    }
    FILE *f = fopen(out, "wb");
    if (!f) {
        fprintf(stderr, "gguf-dump: cannot write %s\n", out);
        return 1;
    }
    int64_t n = (int64_t)t->ne[0];
    uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    size_t rb = kiln_dtype_row_bytes(t->dtype, n);
    float *buf = kiln_malloc(sizeof(float) * (size_t)n);
    int rc = buf ? 0 : 1;
    for (uint64_t r = 0; r < rows && !rc; r++) {
        const unsigned char *row = (const unsigned char *)t->data + r * rb;
        if (t->dtype == KILN_DT_F32) {
            memcpy(buf, row, rb);
        } else if (t->dtype == KILN_DT_F16 || t->dtype == KILN_DT_BF16) {
            for (int64_t i = 0; i < n; i++) {
                uint16_t h;
                memcpy(&h, row + 2 * i, 2);
                buf[i] = t->dtype == KILN_DT_F16 ? kiln_f16_to_f32(h) : kiln_bf16_to_f32(h);
            }
        } else if (kiln_dequant_row(t->dtype, row, n, buf) != 0) {
            fprintf(stderr, "gguf-dump: cannot dequantize %s\n", kiln_dtype_name(t->dtype));
            rc = 1;
            break;
        }
        if (fwrite(buf, sizeof(float), (size_t)n, f) != (size_t)n) rc = 1;
    }
    if (fclose(f) != 0) rc = 1;
    kiln_free(buf);
    if (rc) fprintf(stderr, "gguf-dump: writing %s failed\n", out);
    return rc;
}

int kiln_cmd_gguf(int argc, char **argv) {
    const char *model = NULL, *tensor = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--tensor") && i + 1 < argc) tensor = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else {
            fprintf(stderr, "usage: kiln gguf-dump --model FILE [--tensor NAME --out FILE.f32]\n");
            return 2;
        }
    }
    if (!model || (tensor && !out)) {
        fprintf(stderr, "usage: kiln gguf-dump --model FILE [--tensor NAME --out FILE.f32]\n");
        return 2;
    }
    kiln_gguf *g = NULL;
    kiln_error err = {0};
    if (kiln_gguf_open(&g, model, &err) != 0) {
        fprintf(stderr, "kiln: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (tensor) {
        const kiln_gguf_tensor_info *t = kiln_gguf_find_tensor(g, tensor);
        if (!t) {
            fprintf(stderr, "gguf-dump: %s: no tensor '%s'\n", model, tensor);
            rc = 1;
        } else {
            rc = dump_tensor(t, out);
        }
    } else {
        printf("GGUF v%u: %llu metadata entries, %llu tensors\n", kiln_gguf_version(g),
               (unsigned long long)kiln_gguf_n_kv(g), (unsigned long long)kiln_gguf_n_tensors(g));
        for (uint64_t i = 0; i < kiln_gguf_n_kv(g); i++) print_kv(g, (int64_t)i);
        for (uint64_t i = 0; i < kiln_gguf_n_tensors(g); i++) {
            const kiln_gguf_tensor_info *t = kiln_gguf_tensor(g, i);
            printf("tensor %-40.*s %-6s [", (int)t->name.len, t->name.ptr,
                   kiln_gguf_ggml_type_name(t->ggml_type));
            for (uint32_t d = 0; d < t->n_dims; d++)
                printf("%s%llu", d ? ", " : "", (unsigned long long)t->ne[d]);
            printf("] %zu bytes\n", t->nbytes);
        }
    }
    kiln_gguf_close(g);
    return rc;
}
