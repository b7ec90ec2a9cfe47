/* env.c: the one place that reads the environment. Library behaviour is set through the
 * options structs of kiln.h; the kiln command keeps accepting the KILN_* variables of the README
 * and maps them onto those fields here, before the command-line flags (which win). A malformed
 * number is reported and ignored (the option keeps its default). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"

/* "1" -> 1, "0" -> 0, unset or empty -> *dst unchanged */
static void env_flag(const char *name, int *dst) {
    const char *v = getenv(name);
    if (!v || !*v) return;
    if (!strcmp(v, "1")) *dst = 1;
    else if (!strcmp(v, "0")) *dst = 0;
    else fprintf(stderr, "kiln: warning: %s=%s ignored (expected 0 or 1)\n", name, v);
}

/* an integer in [lo, hi]; unset or empty -> *dst unchanged */
static void env_int(const char *name, long lo, long hi, int *dst) {
    const char *v = getenv(name);
    long x;
    if (!v || !*v) return;
    if (kiln_cli_parse_int(v, lo, hi, &x)) {
        fprintf(stderr, "kiln: warning: %s=%s ignored (expected an integer in [%ld, %ld])\n", name, v, lo, hi);
        return;
    }
    *dst = (int)x;
}

/* a CUDA architecture: "sm_86", "sm86" or "86" -> 86; "card" or "0" -> 0 (the card's own); unset
 * or empty -> *dst unchanged (the backend refuses an architecture it does not know) */
static void env_target(const char *name, int *dst) {
    const char *v = getenv(name);
    long x;
    if (!v || !*v) return;
    if (!strcmp(v, "card")) {
        *dst = 0;
        return;
    }
    const char *d = !strncmp(v, "sm_", 3) ? v + 3 : !strncmp(v, "sm", 2) ? v + 2 : v;
    if (kiln_cli_parse_int(d, 0, 1000, &x)) {
        fprintf(stderr, "kiln: warning: %s=%s ignored (expected sm_80, sm_86, sm_89, sm_90 or card)\n", name, v);
        return;
    }
    *dst = (int)x;
}

void kiln_cli_engine_defaults(kiln_engine_options *o) {
    kiln_engine_options_default(o);
    env_flag("KILN_STRICT", &o->strict);
    env_flag("KILN_BATCH_INVARIANT", &o->batch_invariant);
    env_flag("KILN_HOST_SAMPLING", &o->host_sampling);
    env_flag("KILN_JUMP_FORWARD", &o->jump_forward);
    env_int("KILN_MAX_BATCH_TOKENS", 1, 1 << 20, &o->max_batch_tokens);
    const char *itl = getenv("KILN_MAX_ITL_MS"); /* the ITL policy's target (--max-itl-ms) */
    if (itl && *itl) {
        char *end;
        double f = strtod(itl, &end);
        if (*end || !(f >= 0)) fprintf(stderr, "kiln: warning: KILN_MAX_ITL_MS=%s ignored (ms >= 0)\n", itl);
        else o->sched.max_itl_ms = f;
    }
    const char *stp = getenv("KILN_MAX_STEP_MS"); /* the step budget (--max-step-ms) */
    if (stp && *stp) {
        char *end;
        double f = strtod(stp, &end);
        if (*end || !(f >= 0)) fprintf(stderr, "kiln: warning: KILN_MAX_STEP_MS=%s ignored (ms >= 0)\n", stp);
        else o->sched.max_step_ms = f;
    }
    int mb = 0;
    env_int("KILN_SCRATCH_POOL_MB", 1, 1 << 30, &mb);
    if (mb > 0) o->scratch_pool_mb = (size_t)mb;
    int ov = 1;
    env_flag("KILN_OVERLAP", &ov);
    if (!ov) o->overlap = -1;
    const char *isa = getenv("KILN_CPU_ISA");
    if (isa && *isa) o->cpu.isa = isa;
    const char *act = getenv("KILN_CPU_ACT");
    if (act && *act) o->cpu.act = act;
    const char *attn = getenv("KILN_CPU_ATTN");
    if (attn && *attn) o->cpu.attn = attn;
    int amx = -2;
    env_flag("KILN_CPU_AMX", &amx);
    if (amx != -2) o->cpu.amx = amx ? 1 : -1;
    int pack = -2;
    env_flag("KILN_CPU_PACK", &pack);
    if (pack == 0) o->cpu.pack = -1;
    env_flag("KILN_CPU_SAMPLE", &o->cpu.backend_sampling);
    env_int("KILN_CPU_PANEL_ROWS", 2, 1 << 20, &o->cpu.panel_min_rows);
    kiln_cuda_options *c = &o->cuda;
    env_flag("KILN_CUDA_DEBUG", &c->debug);
    env_int("KILN_CUDA_GEMV", 0, 1 << 20, &c->gemv_max_rows);
    env_int("KILN_CUDA_SKINNY", 0, 1 << 20, &c->skinny_max_rows);
    env_int("KILN_CUDA_WIDE", 0, 1 << 20, &c->wide_min_rows);
    env_int("KILN_CUDA_WIDE_VARIANT", 0, 64, &c->wide_variant);
    env_flag("KILN_CUDA_GLU", &c->glu_fused);
    env_flag("KILN_CUDA_PDL", &c->pdl);
    env_int("KILN_CUDA_PDL_ROWS", 1, 1 << 20, &c->pdl_min_rows);
    env_flag("KILN_CUDA_GRAPHS", &c->graphs);
    env_int("KILN_CUDA_PIECE_MAX", 0, 1 << 20, &c->piece_max_rows);
    env_int("KILN_CUDA_DECODE_TC", 0, 1 << 30, &c->decode_tc_rows);
    env_int("KILN_CUDA_DECODE_TC_SPLIT", 0, 1024, &c->decode_tc_split);
    env_int("KILN_CUDA_ATT_BPS", 1, 1024, &c->att_blocks_per_sm);
    env_flag("KILN_CUDA_GU_16BIT", &c->gate_up_16bit);
    env_int("KILN_CUDA_QREG", 0, 1 << 20, &c->qreg_max_rows);
    env_int("KILN_CUDA_QREG_VARIANT", 0, 63, &c->qreg_variant);
    env_int("KILN_CUDA_FP8_MMA", 0, 1 << 20, &c->fp8_mma_max_rows);
    env_flag("KILN_CUDA_FP8_FUSE", &c->fp8_fuse_quant);
    env_flag("KILN_CUDA_Q8_FUSE", &c->q8_fuse_quant);
    env_int("KILN_CUDA_GEMM_TUNE", 0, 16, &c->gemm_tune);
    env_int("KILN_CUDA_L2PF_MB", 0, 4096, &c->l2_prefetch_mb);
    env_int("KILN_CUDA_L2PF_MODE", 1, 3, &c->l2_prefetch_mode);
    env_target("KILN_CUDA_TARGET", &c->target_sm);
    /* fault injection (tests of kiln validate) */
    env_flag("KILN_TEST_EXTRA_SYNC", &o->faults.extra_sync);
    env_flag("KILN_TEST_BREAK_BATCH", &o->faults.break_batch);
    env_int("KILN_TEST_CUDA_FAIL_ALLOC", 0, 1 << 30, &c->fail_alloc_at); /* issue 21: GPU OOM at load */
}

void kiln_cli_server_defaults(kiln_server_options *o) {
    kiln_server_options_default(o);
    const char *key = getenv("KILN_API_KEY");
    if (key && *key) o->api_key = key;
    /* fault injection (tests of kiln serve: a slow step outlives a client's timeout) */
    env_int("KILN_TEST_STEP_DELAY_MS", 0, 60 * 1000, &o->test_step_delay_ms);
}
