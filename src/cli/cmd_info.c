/* cmd_info.c: `kiln info --model PATH`: architecture, parameters, dtypes, memory needed. */
#include <stdio.h>
#include <string.h>
#include "cli/cli.h"
#include "model/model.h"

static const char *fmt_name(kiln_model_format f) {
    switch (f) {
    case KILN_FORMAT_HF: return "Hugging Face (config.json + safetensors)";
    case KILN_FORMAT_MISTRAL: return "Mistral native (params.json + consolidated.safetensors)";
    case KILN_FORMAT_LLAMA2C: return "llama2.c checkpoint";
    case KILN_FORMAT_GGUF: return "GGUF";
    case KILN_FORMAT_DUMMY: return "dummy (random weights)";
    }
    return "?";
}

int kiln_cmd_info(int argc, char **argv) {
    const char *path = NULL;
    const char *quant = NULL;
    int dummy = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "--model") || !strcmp(argv[i], "-m")) && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--load-format") && i + 1 < argc) dummy = !strcmp(argv[++i], "dummy");
        else if (!strcmp(argv[i], "--dummy-quant") && i + 1 < argc) quant = argv[++i];
        else { fprintf(stderr, "kiln info: unknown option '%s'\nusage: kiln info --model PATH [--load-format dummy [--dummy-quant TYPE]]\n", argv[i]); return 2; }
    }
    if (!path) { fprintf(stderr, "usage: kiln info --model PATH [--load-format dummy [--dummy-quant TYPE]]\n"); return 2; }
    kiln_error err = {0};
    kiln_model *m = NULL;
    int rc = dummy ? kiln_model_load_dummy_quant(&m, path, 1, 0, quant, &err) : kiln_model_load(&m, path, &err);
    if (rc) { kiln_cli_print_error("info", &err); return 1; }
    const kiln_config *c = &m->cfg;
    int counts[KILN_DT_COUNT] = {0};
    for (int i = 0; i < m->n_tensors; i++) counts[m->tensors[i].dtype]++;
    printf("model:        %s\n", m->path);
    printf("format:       %s\n", fmt_name(m->format));
    if (m->loaded_from[0]) printf("loaded from:  %s\n", m->loaded_from);
    printf("architecture: %s\n", c->arch);
    printf("parameters:   %lld (%.3f B)\n", (long long)kiln_model_param_count(m), kiln_model_param_count(m) / 1e9);
    printf("layers %d, hidden %d, intermediate %d, heads %d, kv heads %d, head_dim %d, vocab %d\n", c->n_layers, c->dim,
           c->hidden_dim, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size);
    printf("context:      %d, rope theta %g (%s), rms eps %g, tied embeddings %s\n", c->max_seq_len, c->rope_theta,
           c->rope_style == KILN_ROPE_HALF ? "rotate_half" : "interleaved", (double)c->norm_eps, c->tied_embeddings ? "yes" : "no");
    printf("dtypes:      ");
    for (int t = 0; t < KILN_DT_COUNT; t++) if (counts[t]) printf(" %s x%d", kiln_dtype_name(t), counts[t]);
    printf("\n");
    size_t wb = kiln_model_weight_bytes(m);
    double kv_tok_f32 = 2.0 * c->n_layers * c->n_kv_heads * c->head_dim * 4;
    printf("memory:       weights %.1f MiB; KV cache %.1f KiB per token (f32, cpu), %.1f KiB (bf16, cuda); "
           "full context %.1f MiB (f32)\n",
           wb / 1048576.0, kv_tok_f32 / 1024, kv_tok_f32 / 2048, kv_tok_f32 * c->max_seq_len / 1048576.0);
    printf("eos ids:     ");
    for (int i = 0; i < c->n_eos; i++) printf(" %d", c->eos_ids[i]);
    printf("   bos: %d\n", c->bos_id);
    if (m->tokenizer_path[0]) printf("tokenizer:    %s\n", m->tokenizer_path);
    kiln_model_free(m);
    return 0;
}
