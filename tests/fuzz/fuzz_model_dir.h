/* fuzz_model_dir.h: a model folder for the config / index targets: fixed files (a tiny
 * config.json, safetensors shards with one small tensor each) around the fuzzed file. */
#ifndef KILN_FUZZ_MODEL_DIR_H
#define KILN_FUZZ_MODEL_DIR_H
#include "fuzz_common.h"

/* a safetensors file holding one F32 tensor `name` of 4 elements (or none when name is NULL) */
static inline void fz_write_st(const char *dir, const char *file, const char *name) {
    char hdr[256];
    int n = name ? snprintf(hdr, sizeof hdr,
                            "{\"%s\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", name)
                 : snprintf(hdr, sizeof hdr, "{}");
    while (n % 8) hdr[n++] = ' ';
    uint8_t buf[8 + 256 + 16];
    uint64_t len = (uint64_t)n;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(len >> (8 * i));
    memcpy(buf + 8, hdr, (size_t)n);
    memset(buf + 8 + n, 0, 16);
    fz_write(dir, file, buf, (size_t)(8 + n + (name ? 16 : 0)));
}

static const char FZ_TINY_CONFIG[] =
    "{\"architectures\":[\"MistralForCausalLM\"],\"model_type\":\"mistral\",\"hidden_size\":8,"
    "\"intermediate_size\":16,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":4,"
    "\"num_hidden_layers\":1,\"vocab_size\":4,\"rms_norm_eps\":1e-5,\"max_position_embeddings\":64,"
    "\"rope_theta\":10000.0,\"hidden_act\":\"silu\",\"tie_word_embeddings\":false,"
    "\"bos_token_id\":1,\"eos_token_id\":2,\"torch_dtype\":\"float32\"}";
#endif
