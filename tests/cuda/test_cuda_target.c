/* test_cuda_target.c: the CUDA backend's target (src/backend/cuda/target.h, issue 16):
 *   - the card's own target: the fields match cudaGetDeviceProperties (name, compute
 *     capability, SMs, shared memory per block / SM, registers), PDL from sm_90, FP8 MMA from
 *     sm_89, not forced;
 *   - every forced target at or below the card (sm_80, sm_86, sm_89, sm_90): the architecture's
 *     shared memory (163 / 164 KB on sm_80, 99 / 100 KB on sm_86 and sm_89), no PDL below sm_90,
 *     FP8 MMA only from sm_89, the card's SM count kept;
 *   - refusals: a target above the card (a made-up sm_86 card forced to sm_89 / sm_90, and on a
 *     real card below sm_90, sm_90 itself) and an unknown one (sm_75, sm_100);
 *   - the backend's choices for a forced sm_86 through its describe op (kiln info --backend
 *     cuda): PDL off, the 90 KB wide variant, tensor-core attention kept (64 KB fits);
 *   - the helpers the choices use: resident blocks by shared memory, the wide variant fit.
 * The rest of tests/cuda runs with a forced target through KILN_CUDA_TARGET (cuda_test.h
 * kc_target_from_env; scripts/cuda_check.sh --target sm_86). */
#include <stdlib.h>
#include <string.h>
#include "backend/backend.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/target.h"
#include "cuda_test.h"
#include "engine/engine.h"

#define KB ((size_t)1024)

static const struct {
    int sm;
    size_t block, per_sm;
    int pdl, fp8;
} k_limits[] = {{80, 163 * KB, 164 * KB, 0, 0}, {86, 99 * KB, 100 * KB, 0, 0}, {89, 99 * KB, 100 * KB, 0, 1},
                {90, 227 * KB, 228 * KB, 1, 1}};

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

static void describe(int target_sm, char *buf, size_t n, int *rc, kiln_error *err) {
    const kiln_backend_ops *ops = kiln_backend_cuda_ops();
    KT_CHECK(ops && ops->describe, "the cuda ops table has describe");
    kiln_backend_config bc;
    memset(&bc, 0, sizeof bc);
    kiln_engine_options eo;
    kiln_engine_options_default(&eo);
    bc.cuda = eo.cuda;
    bc.cuda.target_sm = target_sm;
    *rc = ops->describe(NULL, &bc, buf, n, err);
}

int main(void) {
    kc_require_gpu();
    struct cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, 0));
    int card = p.major * 10 + p.minor;
    kiln_error err = {0};

    /* the card's own */
    kiln_cuda_target t;
    KT_CHECK(kiln_cuda_target_init(&t, 0, 0, &err) == 0, "target of the card: %s", err.msg);
    KT_CHECK(!strcmp(t.card, p.name), "card name %s, expected %s", t.card, p.name);
    KT_CHECK(t.cc_major == p.major && t.cc_minor == p.minor && t.card_major == p.major && t.card_minor == p.minor,
             "cc %d.%d, card %d.%d", t.cc_major, t.cc_minor, p.major, p.minor);
    KT_CHECK(t.n_sm == p.multiProcessorCount, "SMs %d, expected %d", t.n_sm, p.multiProcessorCount);
    KT_CHECK(t.smem_per_block == p.sharedMemPerBlockOptin, "smem per block %zu, expected %zu", t.smem_per_block,
             (size_t)p.sharedMemPerBlockOptin);
    KT_CHECK(t.smem_per_sm == p.sharedMemPerMultiprocessor, "smem per SM %zu", t.smem_per_sm);
    KT_CHECK(t.regs_per_sm == p.regsPerMultiprocessor, "regs per SM %d", t.regs_per_sm);
    /* the features need the card and the code it runs (a compute_80 PTX build has no griddepcontrol) */
    int code = t.code_ptx;
    KT_CHECK(code >= 80 && t.code_sass >= code, "code: compute_%d as sm_%d", code, t.code_sass);
    KT_CHECK(t.has_pdl == (card >= 90 && code >= 90) && t.has_fp8_mma == (card >= 89 && code >= 89) &&
                 t.has_wgmma == (card == 90 && code >= 90),
             "pdl %d fp8 %d wgmma %d on sm_%d (code compute_%d)", t.has_pdl, t.has_fp8_mma, t.has_wgmma, card, code);
    KT_CHECK(t.forced == 0 && t.card_mem == p.totalGlobalMem, "forced %d", t.forced);
    printf("card: %s sm_%d, %d SMs, %zu / %zu KB smem, build %s (compute_%d code as sm_%d)\n", t.card, card, t.n_sm,
           t.smem_per_block / KB, t.smem_per_sm / KB, kiln_cuda_build_archs(), t.code_ptx, t.code_sass);

    /* every forced target the card can take */
    for (size_t i = 0; i < sizeof k_limits / sizeof k_limits[0]; i++) {
        int sm = k_limits[i].sm;
        kiln_cuda_target f;
        int rc = kiln_cuda_target_init(&f, 0, sm, &err);
        if (sm > card) {
            KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "above the card"),
                     "sm_%d on a sm_%d card: rc %d (%s)", sm, card, rc, err.msg);
            continue;
        }
        KT_CHECK(rc == 0, "forced sm_%d: %s", sm, err.msg);
        KT_CHECK(f.forced == sm && f.cc_major == sm / 10 && f.cc_minor == sm % 10, "forced sm_%d: cc %d.%d", sm,
                 f.cc_major, f.cc_minor);
        KT_CHECK(f.smem_per_block == min_sz(k_limits[i].block, t.smem_per_block), "sm_%d: smem per block %zu", sm,
                 f.smem_per_block);
        KT_CHECK(f.smem_per_sm == min_sz(k_limits[i].per_sm, t.smem_per_sm), "sm_%d: smem per SM %zu", sm,
                 f.smem_per_sm);
        KT_CHECK(f.has_pdl == (k_limits[i].pdl && t.has_pdl), "sm_%d: pdl %d", sm, f.has_pdl);
        KT_CHECK(f.has_fp8_mma == (k_limits[i].fp8 && t.has_fp8_mma), "sm_%d: fp8 %d", sm, f.has_fp8_mma);
        KT_CHECK(!f.has_wgmma || sm == 90, "sm_%d: wgmma", sm);
        KT_CHECK(f.n_sm == t.n_sm && f.regs_per_sm == t.regs_per_sm && !strcmp(f.card, t.card),
                 "sm_%d: the card's SMs, registers and name kept", sm);
        printf("forced sm_%d: %zu / %zu KB smem, pdl %d, fp8 mma %d\n", sm, f.smem_per_block / KB, f.smem_per_sm / KB,
               f.has_pdl, f.has_fp8_mma);
    }

    /* above the card: a made-up sm_86 card (no CUDA call) */
    kiln_cuda_target a = t;
    a.card_major = a.cc_major = 8;
    a.card_minor = a.cc_minor = 6;
    a.smem_per_block = 99 * KB;
    a.smem_per_sm = 100 * KB;
    a.has_pdl = 0, a.has_fp8_mma = 0, a.has_wgmma = 0;
    kiln_cuda_target b = a;
    KT_CHECK(kiln_cuda_target_force(&b, 89, &err) == KILN_ERR_UNSUPPORTED && strstr(err.msg, "above the card"),
             "sm_89 on an sm_86 card: %s", err.msg);
    b = a;
    KT_CHECK(kiln_cuda_target_force(&b, 90, &err) == KILN_ERR_UNSUPPORTED, "sm_90 on an sm_86 card accepted");
    b = a;
    KT_CHECK(kiln_cuda_target_force(&b, 80, &err) == 0 && b.smem_per_block == 99 * KB && b.forced == 80,
             "sm_80 on an sm_86 card: %s (smem %zu)", err.msg, b.smem_per_block);
    b = t;
    KT_CHECK(kiln_cuda_target_force(&b, 75, &err) == KILN_ERR_INVALID_ARG, "sm_75 accepted");
    KT_CHECK(kiln_cuda_target_force(&b, 100, &err) == KILN_ERR_INVALID_ARG, "sm_100 accepted");

    /* the helpers of the backend's choices */
    kiln_cuda_target s86 = t;
    KT_CHECK(kiln_cuda_target_force(&s86, card >= 86 ? 86 : 80, &err) == 0, "force: %s", err.msg);
    if (card >= 86) {
        KT_CHECK(kiln_cuda_target_smem_blocks(&s86, 64 * KB) == 1, "sm_86: 64 KB blocks per SM %d",
                 kiln_cuda_target_smem_blocks(&s86, 64 * KB));
        KT_CHECK(kiln_cuda_target_smem_blocks(&s86, 100 * KB) == 0, "sm_86: a 100 KB block fits");
    }
    KT_CHECK(kiln_cuda_gemm_wide_fit(0, 5120, 99 * KB) == KILN_WIDE_SMALL_VARIANT, "wide at 99 KB: %d",
             kiln_cuda_gemm_wide_fit(0, 5120, 99 * KB));
    KT_CHECK(kiln_cuda_gemm_wide_fit(0, 5120, 163 * KB) == KILN_WIDE_DEFAULT_VARIANT, "wide at 163 KB");
    KT_CHECK(kiln_cuda_gemm_wide_fit(3, 5120, 163 * KB) == KILN_WIDE_SMALL_VARIANT, "wide v3 (216 KB) at 163 KB");
    KT_CHECK(kiln_cuda_gemm_wide_fit(0, 5120, 64 * KB) == 0, "wide at 64 KB");
    KT_CHECK(kiln_cuda_gemm_wide_smem(KILN_WIDE_SMALL_VARIANT, 16, 5120) <= 99 * KB, "the small variant fits 99 KB");
    KT_CHECK(kiln_cuda_attention_tc_smem(128) <= 99 * KB && kiln_cuda_attention_tc_smem(48) == 0,
             "tensor-core attention smem");

    /* the backend's choices, through describe */
    char buf[4096];
    int rc;
    describe(0, buf, sizeof buf, &rc, &err);
    KT_CHECK(rc == 0, "describe: %s", err.msg);
    printf("--- describe (the card's)\n%s", buf);
    KT_CHECK(strstr(buf, "(the card's)") != NULL, "describe names the card's target");
    KT_CHECK(strstr(buf, t.has_pdl ? "PDL:          on" : "PDL:          off") != NULL, "describe: PDL");
    if (card >= 86) {
        describe(86, buf, sizeof buf, &rc, &err);
        KT_CHECK(rc == 0, "describe sm_86: %s", err.msg);
        printf("--- describe (forced sm_86)\n%s", buf);
        KT_CHECK(strstr(buf, "sm_86 (forced") != NULL, "describe: forced sm_86");
        KT_CHECK(strstr(buf, "99 KB shared memory per block") != NULL, "describe: 99 KB");
        KT_CHECK(strstr(buf, "PDL:          off (") != NULL, "describe: PDL off");
        KT_CHECK(strstr(buf, "FP8 MMA:      no") != NULL, "describe: FP8 off");
        KT_CHECK(strstr(buf, "variant 7") != NULL, "describe: the 90 KB wide variant");
        KT_CHECK(strstr(buf, "on tensor cores") != NULL, "describe: tensor-core attention kept (64 KB fits)");
    }
    if (card < 90) {
        describe(90, buf, sizeof buf, &rc, &err);
        KT_CHECK(rc == KILN_ERR_UNSUPPORTED, "describe sm_90 on a sm_%d card: rc %d", card, rc);
    }
    return kt_done();
}
