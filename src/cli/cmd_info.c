/* cmd_info.c: `kiln info --model PATH`: architecture, parameters, dtypes, memory needed;
 * `kiln info --backend cuda [--model PATH]`: what the backend would run on its device (the card,
 * the build's architectures, the target, the kernel paths), through the backend's describe op
 * (the CLI never calls CUDA itself). KILN_CUDA_* (KILN_CUDA_TARGET=sm_86 ...) apply as in the
 * other commands. */
#include <stdio.h>
#include <string.h>
#include "backend/backend.h"
#include "cli/cli.h"
#include "model/model.h"
#include "model/tp.h"
#include "util/error.h"

#define INFO_USAGE "usage: kiln info --model PATH [--load-format dummy [--dummy-quant TYPE]] [--quantization fp8] [--backend cpu|cuda]\n" \
                   "       kiln info --backend cuda   (the card, the build's architectures, the kernel paths)\n"

static int describe_backend(const char *name, const kiln_model *m) {
    const kiln_backend_ops *ops = kiln_backend_find(name);
    if (!ops) {
        char why[1024];
        kiln_backend_unavailable(name, why, sizeof why);
        fprintf(stderr, "kiln info: %s\n", why);
        return 1;
    }
    if (!ops->describe) {
        printf("backend:      %s (nothing to describe)\n", ops->name);
        return 0;
    }
    kiln_engine_options eo;
    kiln_cli_engine_defaults(&eo); /* the KILN_* switches, as the engine would get them */
    kiln_backend_config bc;
    memset(&bc, 0, sizeof bc);
    bc.cuda = eo.cuda;
    bc.cpu = eo.cpu;
    bc.strict = eo.strict;
    bc.batch_invariant = eo.batch_invariant;
    bc.n_devices = eo.n_devices;
    bc.tp_size = eo.tensor_parallel_size;
    memcpy(bc.devices, eo.devices, sizeof bc.devices);
    char buf[4096];
    kiln_error err = {0};
    printf("backend:      %s\n", ops->name);
    if (ops->describe(m, &bc, buf, sizeof buf, &err)) {
        kiln_cli_print_error("info", &err);
        return 1;
    }
    fputs(buf, stdout);
    return 0;
}

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
    const char *path = NULL, *backend = NULL, *quant = NULL, *quantization = NULL;
    int dummy = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "--model") || !strcmp(argv[i], "-m")) && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--load-format") && i + 1 < argc) dummy = !strcmp(argv[++i], "dummy");
        else if (!strcmp(argv[i], "--dummy-quant") && i + 1 < argc) quant = argv[++i];
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--quantization") && i + 1 < argc) quantization = argv[++i];
        else { fprintf(stderr, "kiln info: unknown option '%s'\n" INFO_USAGE, argv[i]); return 2; }
    }
    if (!path && backend) return describe_backend(backend, NULL);
    if (!path) { fprintf(stderr, INFO_USAGE); return 2; }
    kiln_error err = {0};
    kiln_model *m = NULL;
    int rc = dummy ? kiln_model_load_dummy_quant(&m, path, 1, 0, quant, &err) : kiln_model_load(&m, path, &err);
    if (!rc && quantization) { /* what the engine's quantization option would make of it */
        int pc = !strcmp(quantization, "fp8-per-channel");
        if (strcmp(quantization, "fp8") != 0 && !pc)
            rc = KILN_ERR(&err, KILN_ERR_INVALID_ARG, "--quantization must be fp8 or fp8-per-channel (got '%s')", quantization);
        else if (m->fp8.format == KILN_FP8_NONE)
            rc = kiln_model_quantize_fp8(m, pc ? KILN_SCALE_CHANNEL : KILN_SCALE_TENSOR, &err);
        if (rc) kiln_model_free(m);
    }
    if (rc) { kiln_cli_print_error("info", &err); return 1; }
    const kiln_config *c = &m->cfg;
    int counts[KILN_DT_COUNT] = {0};
    for (int i = 0; i < m->n_tensors; i++) counts[m->tensors[i].dtype]++;
    printf("model:        %s\n", m->path);
    printf("format:       %s\n", fmt_name(m->format));
    if (m->loaded_from[0]) printf("loaded from:  %s\n", m->loaded_from);
    printf("architecture: %s%s%s\n", c->arch, c->text_of[0] ? ", the text model of " : "",
           !c->text_of[0] ? "" : !strcmp(c->text_of, "vision_encoder") ? "a multimodal Mistral-native checkpoint (params.json vision_encoder)" : c->text_of);
    {
        char feats[512];
        kiln_model_feature_names(m, kiln_model_features(m), feats, sizeof feats);
        printf("features:     %s\n", feats[0] ? feats : "none beyond Llama's (RMSNorm, SwiGLU, RoPE, GQA)");
    }
    if (m->n_skipped)
        printf("skipped:      %d tensors (%lld parameters) on purpose: %s (text only; image inputs are refused)\n",
               m->n_skipped, (long long)m->skipped_params, m->skipped_what);
    printf("parameters:   %lld (%.3f B)\n", (long long)kiln_model_param_count(m), kiln_model_param_count(m) / 1e9);
    printf("layers %d, hidden %d, intermediate %d, heads %d, kv heads %d, head_dim %d, vocab %d\n", c->n_layers, c->dim,
           c->hidden_dim, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size);
    printf("context:      %d, rope theta %g (%s), rms eps %g, tied embeddings %s\n", c->max_seq_len, c->rope_theta,
           c->rope_style == KILN_ROPE_HALF ? "rotate_half" : "interleaved", (double)c->norm_eps, c->tied_embeddings ? "yes" : "no");
    printf("dtypes:      ");
    for (int t = 0; t < KILN_DT_COUNT; t++) if (counts[t]) printf(" %s x%d", kiln_dtype_name(t), counts[t]);
    printf("\n");
    char f8[200];
    kiln_model_fp8_describe(m, f8, sizeof f8);
    printf("weights:      %s%s%s%s\n", kiln_model_weight_dtype(m), f8[0] ? " (" : "", f8, f8[0] ? ")" : "");
    {
        int has_kv = 0;
        for (int l = 0; l < c->n_layers; l++) has_kv |= m->layers[l].k_scale > 0;
        printf("kv cache:     f32 on cpu, bf16 on cuda (auto); fp8 e4m3 with --kv-cache-dtype fp8, scales %s\n",
               has_kv ? "k_scale / v_scale from the checkpoint" : "1.0");
    }
    size_t wb = kiln_model_weight_bytes(m);
    double kv_tok_f32 = 2.0 * c->n_layers * c->n_kv_heads * c->head_dim * 4;
    printf("memory:       weights %.1f MiB; KV cache %.1f KiB per token (f32, cpu), %.1f KiB (bf16, cuda); "
           "full context %.1f MiB (f32)\n",
           wb / 1048576.0, kv_tok_f32 / 1024, kv_tok_f32 / 2048, kv_tok_f32 * c->max_seq_len / 1048576.0);
    printf("eos ids:     ");
    for (int i = 0; i < c->n_eos; i++) printf(" %d", c->eos_ids[i]);
    printf("   bos: %d\n", c->bos_id);
    if (m->tokenizer_path[0]) printf("tokenizer:    %s\n", m->tokenizer_path);
    /* the --tensor-parallel-size values this model splits into (model/tp.c), else why 2 does not */
    kiln_error tperr = {0}, why2 = {0};
    printf("tensor par.:  --tensor-parallel-size 1");
    for (int n = 2; n <= KILN_MAX_DEVICES; n++)
        if (!kiln_tp_check_model(m, n, n == 2 ? &why2 : &tperr)) printf(", %d%s", n, n > c->n_kv_heads ? " (KV replicated)" : "");
    printf("%s%s\n", why2.msg[0] ? "; not 2: " : "", why2.msg);
    rc = backend ? describe_backend(backend, m) : 0;
    kiln_model_free(m);
    return rc;
}
