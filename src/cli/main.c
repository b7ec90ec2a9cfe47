/* main.c: the kiln command line. The only place that decides the process exit code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"
#include "util/log.h"

typedef int (*cmd_fn)(int, char **);
static const struct { const char *name; cmd_fn fn; const char *help; } k_cmds[] = {
    {"generate", kiln_cmd_generate, "generate text from a prompt"},
    {"logits", kiln_cmd_logits, "dump the f32 logits of every prompt position"},
    {"info", kiln_cmd_info, "describe a model (architecture, parameters, memory)"},
    {"chat", kiln_cmd_chat, "chat with a model in the terminal (stdin not a terminal: answer once)"},
    {"tokenize", kiln_cmd_tokenize, "encode stdin to ids (or --decode ids to text)"},
    {"bench", kiln_cmd_bench, "measure prefill / decode throughput per batch size"},
    {"validate", kiln_cmd_validate, "benchmark + invariant and coherence checks -> Markdown/JSON report"}, /* bench branch */
    {"quantize", kiln_cmd_quantize, "write a model as GGUF in a quantization type (q4_k_m, q8_0 ...)"},
    {"gguf-dump", kiln_cmd_gguf, "list a GGUF file's metadata and tensors; dequantize one tensor"},
    {"serve", kiln_cmd_serve, "OpenAI-compatible HTTP server (docs/server.md)"}, /* server branch */
};

static void usage(void) {
    fprintf(stderr, "kiln %s: LLM inference and serving\nusage: kiln <command> [options]\n\ncommands:\n", KILN_VERSION);
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++) fprintf(stderr, "  %-10s %s\n", k_cmds[i].name, k_cmds[i].help);
    fprintf(stderr, "\nenvironment: KILN_LOG=error|warn|info|debug, KILN_STRICT=1, KILN_CPU_ISA=scalar|avx2|avx512|neon,\n"
                    "             KILN_CPU_ACT=q8|f32, KILN_CPU_ATTN=f32|bf16, KILN_CPU_AMX=0|1, KILN_MAX_BATCH_TOKENS=N, KILN_MAX_ITL_MS=MS, KILN_BATCH_INVARIANT=1\n");
}

int main(int argc, char **argv) {
    const char *lv = getenv("KILN_LOG");
    if (lv) {
        if (!strcmp(lv, "error")) kiln_log_set_level(KILN_LOG_ERROR);
        else if (!strcmp(lv, "info")) kiln_log_set_level(KILN_LOG_INFO);
        else if (!strcmp(lv, "debug")) kiln_log_set_level(KILN_LOG_DEBUG);
    }
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) { usage(); return argc < 2 ? 2 : 0; }
    if (!strcmp(argv[1], "--version")) { printf("kiln %s\n", KILN_VERSION); return 0; }
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        if (!strcmp(argv[1], k_cmds[i].name)) return k_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "kiln: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}
