/* test_cuda_qlinear.c: the GGUF-quantized kernels of qlinear.cu against the CPU's quantized math
 * (format/quant.c's scalar dequantization, the reference of the CPU backend), on random blocks:
 *   - every type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K): random bytes with random f16
 *     scale fields (either sign, 2^-12 .. 2^-5), N in {1, 7, 64, 333}, K in {32, 96, 576, 4096}
 *     (K-quants {256, 768, 5120}), x bf16 and f16;
 *   - kiln_cuda_qdequant: f32 output bit-equal to kiln_dequant_row, bf16 / f16 output equal to its
 *     round-to-nearest-even;
 *   - kiln_cuda_quantize_x: int8 blocks, scales and half sums bit-equal to the same f32 operations
 *     on the host (d = amax / 127, q = round-to-even(x * 127 / amax), s = d sum q), and
 *     |x - d q| <= d / 2 (1 + 1e-5) + 3e-7 |x| for every element (d / 2 up to f32 roundings);
 *   - kiln_cuda_qgemv_q8, T = 1..8 and 13: every element within a first-order f32 bound of the
 *     double sum of the dequantized weights times the dequantized activations d q,
 *     2^-24 (4 K / 32 + 64) sum_k (|w_k| + m_k) |x_k| with m_k the largest |w| of k's 32-element
 *     unit (the per-unit offset term a off s can be that large before it cancels); and the
 *     activations' own rounding stated against the exact x: |y - sum w x| within that plus
 *     sum_k |w_k| d_k / 2; row t bit-identical for every T and rows per warp 1 and 2;
 *     written into a column slice (ldy = N + 5) with the other columns left untouched;
 *   - kiln_cuda_qmma (tensor cores, T = 64): within 2^-22 (K / 16 + 64) sum |w x| of the double
 *     sum of the bf16-rounded weights times x; rows bit-identical for T = 1, 9, 16, 17, 33, 63;
 *   - kiln_cuda_qembed: rows equal to kiln_dequant_row's, with and without prev_row;
 *   - refusals: non-quantized or unsupported types, K not whole blocks, misaligned pointers.
 * KILN_QGEMV_BENCH=1 adds timings of the GEMV at T = 1, 2, 4, 8, of qmma at 16 and 64 and of qdequant for the Devstral
 * shapes in Q4_K, Q6_K and Q8_0 (us per call, weight GB/s), rotating over copies of W past L2. */
#include <math.h>
#include <string.h>
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "format/quant.h"
#include "util/alloc.h"

static const kiln_dtype k_types[] = {KILN_DT_Q8_0, KILN_DT_Q4_0, KILN_DT_Q4_1, KILN_DT_Q5_0,
                                     KILN_DT_Q5_1, KILN_DT_Q4_K, KILN_DT_Q5_K, KILN_DT_Q6_K};
#define N_TYPES ((int)(sizeof k_types / sizeof k_types[0]))

/* offsets of the f16 scale fields of a block (-1: none) */
static void scale_fields(kiln_dtype dt, int *a, int *b) {
    *a = 0;
    *b = -1;
    if (dt == KILN_DT_Q4_1 || dt == KILN_DT_Q5_1 || dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K) *b = 2;
    if (dt == KILN_DT_Q6_K) *a = 208;
}
static uint16_t rand_scale(unsigned long long *s) {
    double mag = ldexp(1.0 + 0.5 * (kt_randf(s) + 1.0), -12 + (int)(kt_rand_u64(s) % 8));
    return kiln_f32_to_f16((float)((kt_rand_u64(s) & 1) ? -mag : mag));
}
/* N rows of K elements of dt: random blocks */
static uint8_t *rand_blocks(kiln_dtype dt, int N, int K, unsigned long long *s, size_t *nbytes) {
    size_t rb = kiln_dtype_row_bytes(dt, K), n = rb * (size_t)N;
    uint8_t *b = kiln_malloc(n + 16);
    for (size_t i = 0; i < n + 16; i++) b[i] = (uint8_t)(kt_rand_u64(s) >> 56);
    int bb = kiln_dtype_block_bytes(dt), fa, fb;
    scale_fields(dt, &fa, &fb);
    for (size_t o = 0; o < n; o += (size_t)bb) {
        uint16_t h = rand_scale(s);
        memcpy(b + o + fa, &h, 2);
        if (fb >= 0) {
            h = rand_scale(s);
            memcpy(b + o + fb, &h, 2);
        }
    }
    *nbytes = n;
    return b;
}
static float *dequant(kiln_dtype dt, const uint8_t *b, int N, int K) {
    float *w = kiln_malloc((size_t)N * K * 4);
    size_t rb = kiln_dtype_row_bytes(dt, K);
    for (int n = 0; n < N; n++) KT_CHECK(kiln_dequant_row(dt, b + rb * n, K, w + (size_t)n * K) == 0, "dequant_row");
    return w;
}

static void check_dequant(kiln_dtype dt, const uint8_t *dw, const float *w, int N, int K) {
    kiln_dtype odts[3] = {KILN_DT_F32, KILN_DT_BF16, KILN_DT_F16};
    size_t n = (size_t)N * K;
    void *dout = kc_dev(n * 4);
    void *h = kiln_malloc(n * 4);
    for (int i = 0; i < 3; i++) {
        kiln_dtype o = odts[i];
        kc_poison(dout, n * 4);
        CU(kiln_cuda_qdequant(dout, o, dw, dt, N, K, 0));
        kc_get(h, dout, n * kc_dtsize(o));
        size_t bad = 0;
        for (size_t j = 0; j < n; j++) {
            uint32_t got, want;
            if (o == KILN_DT_F32) {
                memcpy(&got, (float *)h + j, 4);
                memcpy(&want, w + j, 4);
            } else {
                got = ((uint16_t *)h)[j];
                want = o == KILN_DT_BF16 ? kiln_f32_to_bf16(w[j]) : kiln_f32_to_f16(w[j]);
            }
            bad += got != want;
        }
        KT_CHECK(bad == 0, "qdequant %s -> %s N %d K %d: %zu of %zu elements differ from the CPU's", kiln_dtype_name(dt),
                 kc_dtname(o), N, K, bad, n);
    }
    CU(cudaFree(dout));
    kiln_free(h);
}

static void check_gemv(kiln_dtype dt, kiln_dtype xdt, const uint8_t *dw, const float *w, int N, int K,
                       unsigned long long *s) {
    const int MR = 13, ldy = N + 5, nb = K / 32; /* 13 rows: two launches of the 8-row kernel */
    float *x = kiln_malloc((size_t)MR * K * 4);
    kc_rand(x, (size_t)MR * K, 1.0f, s);
    for (int i = 0; i < MR * K; i += 97) x[i] *= 30.0f; /* a few outliers per block */
    kc_round_dt(xdt, x, (size_t)MR * K);
    void *hx = kiln_malloc((size_t)MR * K * 2);
    kc_to_dt(xdt, x, hx, (size_t)MR * K);
    void *dx = kc_dev((size_t)MR * K * 2);
    kc_put(dx, hx, (size_t)MR * K * 2);
    int8_t *dq = kc_dev((size_t)MR * K);
    float *dd = kc_dev((size_t)MR * nb * 4), *ds = kc_dev((size_t)MR * nb * 8);
    CU(kiln_cuda_quantize_x(dq, dd, ds, dx, xdt, MR, K, 0));
    int8_t *hq = kiln_malloc((size_t)MR * K);
    float *hd = kiln_malloc((size_t)MR * nb * 4), *hs = kiln_malloc((size_t)MR * nb * 8);
    kc_get(hq, dq, (size_t)MR * K);
    kc_get(hd, dd, (size_t)MR * nb * 4);
    kc_get(hs, ds, (size_t)MR * nb * 8);
    /* the activations' blocks against the host's f32 operations */
    size_t qbad = 0;
    float *xh = kiln_malloc((size_t)MR * K * 4); /* d q */
    for (int b = 0; b < MR * nb; b++) {
        const float *xb = x + (size_t)b * 32;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        int sq[2] = {0, 0};
        for (int j = 0; j < 32; j++) {
            int q = (int)nearbyintf(xb[j] * id);
            qbad += q != hq[(size_t)b * 32 + j];
            sq[j >> 4] += q;
            xh[(size_t)b * 32 + j] = hd[b] * (float)hq[(size_t)b * 32 + j];
            /* |x - d q| <= d / 2, up to the roundings of 127 / amax, x id and d q */
            qbad += !(fabsf(xb[j] - xh[(size_t)b * 32 + j]) <= d * 0.5f * (1.0f + 1e-5f) + fabsf(xb[j]) * 3e-7f);
        }
        qbad += memcmp(&hd[b], &d, 4) != 0;
        for (int h = 0; h < 2; h++) {
            float sv = d * (float)sq[h];
            qbad += memcmp(&hs[2 * b + h], &sv, 4) != 0;
        }
    }
    KT_CHECK(qbad == 0, "quantize_x %s K %d: %zu values differ from the host's", kc_dtname(xdt), K, qbad);
    float *dy = kc_dev((size_t)MR * ldy * 4);
    float *yr = kiln_malloc((size_t)MR * ldy * 4), *yt = kiln_malloc((size_t)MR * ldy * 4);
    kc_poison(dy, (size_t)MR * ldy * 4);
    CU(kiln_cuda_qgemv_q8(dy + 2, ldy, dq, dd, ds, dw, dt, MR, N, K, 0, 0, 0));
    kc_get(yr, dy, (size_t)MR * ldy * 4);
    double worst = 0, worst_x = 0;
    size_t bad = 0, bad_x = 0, untouched = 0;
    for (int t = 0; t < MR; t++) {
        for (int j = 0; j < ldy; j++) {
            uint32_t bits;
            memcpy(&bits, &yr[(size_t)t * ldy + j], 4);
            if (j < 2 || j >= N + 2) {
                untouched += bits != 0xffffffffu;
                continue;
            }
            int n = j - 2;
            const float *wr = w + (size_t)n * K, *xr = xh + (size_t)t * K, *xe = x + (size_t)t * K;
            double ref = 0, mag = 0, exact = 0, xerr = 0;
            for (int u = 0; u < nb; u++) {
                double um = 0;
                for (int k = 32 * u; k < 32 * u + 32; k++) um = fmax(um, fabs(wr[k]));
                for (int k = 32 * u; k < 32 * u + 32; k++) {
                    ref += (double)wr[k] * xr[k];
                    exact += (double)wr[k] * xe[k];
                    mag += (fabs(wr[k]) + um) * fabs(xr[k]);
                    xerr += fabs(wr[k]) * (hd[t * nb + u] * 0.5 * (1 + 1e-5) + fabs(xe[k]) * 3e-7);
                }
            }
            double bound = ldexp(1.0, -24) * (4.0 * K / 32 + 64) * mag + 1e-30;
            double got = yr[(size_t)t * ldy + j], e = fabs(got - ref), ex = fabs(got - exact);
            if (!(e <= bound)) bad++;
            if (!(ex <= bound + xerr)) bad_x++;
            if (e / bound > worst) worst = e / bound;
            if (ex / (bound + xerr) > worst_x) worst_x = ex / (bound + xerr);
        }
    }
    KT_CHECK(bad == 0 && bad_x == 0 && untouched == 0,
             "qgemv %s x %s N %d K %d: %zu elements out of the f32 bound (worst %.2f of it), %zu out of the int8 "
             "activation bound against exact x (worst %.2f), %zu outside the slice written",
             kiln_dtype_name(dt), kc_dtname(xdt), N, K, bad, worst, bad_x, worst_x, untouched);
    /* T = 1..MR and rows per warp 1, 2, 4: the same bits per row */
    size_t diff = 0;
    for (int rpw = 0; rpw <= 2; rpw++)
        for (int T = 1; T <= MR; T += (T < 9 ? 1 : 4)) {
            kc_poison(dy, (size_t)MR * ldy * 4);
            CU(kiln_cuda_qgemv_q8(dy + 2, ldy, dq, dd, ds, dw, dt, T, N, K, rpw, 0, 0));
            kc_get(yt, dy, (size_t)MR * ldy * 4);
            for (int t = 0; t < T; t++) diff += memcmp(yt + (size_t)t * ldy + 2, yr + (size_t)t * ldy + 2, (size_t)N * 4) != 0;
            for (int t = T; t < MR; t++)
                for (int j = 0; j < ldy; j++) {
                    uint32_t bits;
                    memcpy(&bits, &yt[(size_t)t * ldy + j], 4);
                    diff += bits != 0xffffffffu;
                }
        }
    KT_CHECK(diff == 0, "qgemv %s N %d K %d: rows differ across T / rows per warp (%zu)", kiln_dtype_name(dt), N, K, diff);
    CU(cudaFree(dx)); CU(cudaFree(dy)); CU(cudaFree(dq)); CU(cudaFree(dd)); CU(cudaFree(ds));
    kiln_free(x); kiln_free(hx); kiln_free(yr); kiln_free(yt); kiln_free(hq); kiln_free(hd); kiln_free(hs);
    kiln_free(xh);
}

/* kiln_cuda_qmma: against the double sum of bf16-rounded weights times x (bf16), a first-order
 * f32 bound with 4x margin for the tensor cores' accumulation, 2^-22 (K / 16 + 64) sum |w x|;
 * rows bit-identical for every T; column slice */
static void check_mma(kiln_dtype dt, const uint8_t *dw, const float *w, int N, int K, unsigned long long *s) {
    const int MR = KILN_QMMA_MAX_ROWS, ldy = N + 3;
    float *x = kiln_malloc((size_t)MR * K * 4);
    kc_rand(x, (size_t)MR * K, 1.0f, s);
    kc_round_dt(KILN_DT_BF16, x, (size_t)MR * K);
    uint16_t *hx = kiln_malloc((size_t)MR * K * 2);
    kc_to_dt(KILN_DT_BF16, x, hx, (size_t)MR * K);
    void *dx = kc_dev((size_t)MR * K * 2);
    kc_put(dx, hx, (size_t)MR * K * 2);
    float *dy = kc_dev((size_t)MR * ldy * 4), *yr = kiln_malloc((size_t)MR * ldy * 4), *yt = kiln_malloc((size_t)MR * ldy * 4);
    kc_poison(dy, (size_t)MR * ldy * 4);
    CU(kiln_cuda_qmma(dy + 1, ldy, dx, KILN_DT_BF16, dw, dt, MR, N, K, 0));
    kc_get(yr, dy, (size_t)MR * ldy * 4);
    size_t bad = 0, untouched = 0;
    double worst = 0;
    for (int t = 0; t < MR; t++)
        for (int j = 0; j < ldy; j++) {
            uint32_t bits;
            memcpy(&bits, &yr[(size_t)t * ldy + j], 4);
            if (j < 1 || j >= N + 1) { untouched += bits != 0xffffffffu; continue; }
            const float *wr = w + (size_t)(j - 1) * K, *xr = x + (size_t)t * K;
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double wb = kiln_bf16_to_f32(kiln_f32_to_bf16(wr[k]));
                ref += wb * xr[k];
                mag += fabs(wb * xr[k]);
            }
            double bound = ldexp(1.0, -22) * (K / 16.0 + 64) * mag + 1e-30, e = fabs(yr[(size_t)t * ldy + j] - ref);
            if (!(e <= bound)) bad++;
            if (e / bound > worst) worst = e / bound;
        }
    size_t diff = 0;
    const int Ts[6] = {1, 9, 16, 17, 33, 63};
    for (int i = 0; i < 6; i++) {
        int T = Ts[i];
        kc_poison(dy, (size_t)MR * ldy * 4);
        CU(kiln_cuda_qmma(dy + 1, ldy, dx, KILN_DT_BF16, dw, dt, T, N, K, 0));
        kc_get(yt, dy, (size_t)MR * ldy * 4);
        for (int t = 0; t < T; t++) diff += memcmp(yt + (size_t)t * ldy + 1, yr + (size_t)t * ldy + 1, (size_t)N * 4) != 0;
        for (int t = T; t < MR; t++) {
            uint32_t bits;
            memcpy(&bits, &yt[(size_t)t * ldy + 1], 4);
            diff += bits != 0xffffffffu;
        }
    }
    KT_CHECK(bad == 0 && untouched == 0 && diff == 0, "qmma %s N %d K %d: %zu out of bound (worst %.2f), %zu outside "
             "the slice, %zu rows differ across T", kiln_dtype_name(dt), N, K, bad, worst, untouched, diff);
    CU(cudaFree(dx)); CU(cudaFree(dy));
    kiln_free(x); kiln_free(hx); kiln_free(yr); kiln_free(yt);
}

/* the weights kiln_cuda_qmma_reg multiplies (qmma_reg.cu's note): Q8_0 bf16(d q); Q4_K
 * bf16(bf16(d sc) q + bf16(-dmin m)) (one rounding: the bf16 FMA); Q6_K bf16(bf16(d sc) (q - 32)) */
static float bf16r(double v) { return kiln_bf16_to_f32(kiln_f32_to_bf16((float)v)); }
static float *reg_weights(kiln_dtype dt, const uint8_t *b, const float *w, int N, int K) {
    float *o = kiln_malloc((size_t)N * K * 4);
    size_t rb = kiln_dtype_row_bytes(dt, K);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            const uint8_t *blk = b + rb * n + (size_t)(k / 256) * kiln_dtype_block_bytes(dt);
            int e = k % 256, j = e / 32, l = e % 32;
            float v;
            if (dt == KILN_DT_Q4_K) {
                int sc, mn;
                kiln_qk_scale_min(blk + 4, j, &sc, &mn);
                float d = kiln_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8)), dm = kiln_f16_to_f32((uint16_t)(blk[2] | blk[3] << 8));
                int q = (blk[16 + 32 * (j / 2) + l] >> (4 * (j & 1))) & 15;
                v = bf16r((double)bf16r(d * (float)sc) * q + (double)bf16r(-(dm * (float)mn)));
            } else if (dt == KILN_DT_Q6_K) {
                int h = j / 4, kk = j % 4;
                int ql = (blk[64 * h + 32 * (kk & 1) + l] >> (4 * (kk >> 1))) & 15;
                int qh = (blk[128 + 32 * h + l] >> (2 * kk)) & 3;
                float d = kiln_f16_to_f32((uint16_t)(blk[208] | blk[209] << 8));
                int8_t sc = (int8_t)blk[192 + 8 * h + 2 * kk + l / 16];
                v = bf16r((double)bf16r(d * (float)sc) * ((ql | qh << 4) - 32));
            } else {
                v = bf16r(w[(size_t)n * K + k]);
            }
            o[(size_t)n * K + k] = v;
        }
    return o;
}

/* kiln_cuda_qmma_reg: against the double sum of reg_weights times x (bf16), the qmma bound;
 * every nt; rows bit-identical for every T at the same nt (T <= 32: nt is capped above) */
static void check_mma_reg(kiln_dtype dt, const uint8_t *dw, const float *wr_, int N, int K, unsigned long long *s) {
    const int MR = KILN_QMMA_MAX_ROWS, ldy = N + 3;
    float *x = kiln_malloc((size_t)MR * K * 4);
    kc_rand(x, (size_t)MR * K, 1.0f, s);
    kc_round_dt(KILN_DT_BF16, x, (size_t)MR * K);
    uint16_t *hx = kiln_malloc((size_t)MR * K * 2);
    kc_to_dt(KILN_DT_BF16, x, hx, (size_t)MR * K);
    void *dx = kc_dev((size_t)MR * K * 2);
    kc_put(dx, hx, (size_t)MR * K * 2);
    float *dy = kc_dev((size_t)MR * ldy * 4), *y32 = kiln_malloc((size_t)MR * ldy * 4), *yt = kiln_malloc((size_t)MR * ldy * 4);
    double *ref = kiln_malloc((size_t)MR * N * 8), *mag = kiln_malloc((size_t)MR * N * 8);
    for (int t = 0; t < MR; t++)
        for (int n = 0; n < N; n++) {
            double r = 0, m = 0;
            for (int k = 0; k < K; k++) {
                double p = (double)wr_[(size_t)n * K + k] * x[(size_t)t * K + k];
                r += p;
                m += fabs(p);
            }
            ref[(size_t)t * N + n] = r;
            mag[(size_t)t * N + n] = m;
        }
    size_t bad = 0, untouched = 0, diff = 0;
    double worst = 0;
    const int nts[4] = {0, 1, 2, 4}, Ts[6] = {32, 1, 5, 16, 17, 64};
    for (int ni = 0; ni < 4; ni++)
        for (int ti = 0; ti < 6; ti++) {
            int T = Ts[ti];
            kc_poison(dy, (size_t)MR * ldy * 4);
            CU(kiln_cuda_qmma_reg(dy + 1, ldy, dx, KILN_DT_BF16, dw, dt, T, N, K, nts[ni], 0, 132, NULL, 0));
            kc_get(yt, dy, (size_t)MR * ldy * 4);
            for (int t = 0; t < MR; t++)
                for (int j = 0; j < ldy; j++) {
                    uint32_t bits;
                    memcpy(&bits, &yt[(size_t)t * ldy + j], 4);
                    if (t >= T || j < 1 || j >= N + 1) { untouched += bits != 0xffffffffu; continue; }
                    double r = ref[(size_t)t * N + j - 1];
                    double bound = ldexp(1.0, -22) * (K / 16.0 + 64) * mag[(size_t)t * N + j - 1] + 1e-30;
                    double e = fabs(yt[(size_t)t * ldy + j] - r);
                    if (!(e <= bound)) bad++;
                    if (e / bound > worst) worst = e / bound;
                }
            if (T == 32) memcpy(y32, yt, (size_t)MR * ldy * 4);
            if (T == 32 && nts[ni] == 0) { /* variant 1 (registers capped): the same bits */
                kc_poison(dy, (size_t)MR * ldy * 4);
                CU(kiln_cuda_qmma_reg(dy + 1, ldy, dx, KILN_DT_BF16, dw, dt, T, N, K, 0, 1, 132, NULL, 0));
                kc_get(yt, dy, (size_t)MR * ldy * 4);
                diff += memcmp(yt, y32, (size_t)MR * ldy * 4) != 0;
            }
            else if (T < 32)
                for (int t = 0; t < T; t++) diff += memcmp(yt + (size_t)t * ldy + 1, y32 + (size_t)t * ldy + 1, (size_t)N * 4) != 0;
        }
    KT_CHECK(bad == 0 && untouched == 0 && diff == 0, "qmma_reg %s N %d K %d: %zu out of bound (worst %.2f), %zu "
             "outside the slice, %zu rows differ across T", kiln_dtype_name(dt), N, K, bad, worst, untouched, diff);
    /* with the split-K work buffers (T <= 16): x staged in shared memory, K split over CTAs at
     * 132 and at 16 SMs (other part counts); the same bound, the same bits for every T, the
     * counters left zero (a second launch reuses them) */
    kiln_cuda_qreg_work wk;
    kiln_cuda_qmma_reg_work(132, &wk.floats, &wk.counters);
    wk.part = kc_dev(wk.floats * 4);
    wk.cnt = kc_dev(wk.counters * 4);
    CU(cudaMemset(wk.cnt, 0, wk.counters * 4));
    size_t xbad = 0, xuntouched = 0, xdiff = 0;
    double xworst = 0;
    /* three launch classes (m-tiles 1, 2, 4): the first T of each is its reference */
    /* variants: register cap, grid, L2 prefetch 3 / 6 groups ahead, 2 n-tiles a warp (with the
     * prefetch; with the cap flipped: Q6_K / Q8_0 at 2 n-tiles), the x stages filled in the old
     * order (32: the same bits, checked below) */
    const int xT[10] = {16, 1, 5, 9, 32, 17, 23, 64, 33, 50}, xsm[2] = {132, 16},
              xv[9] = {0, 1, 2, 3, 4, 12, 16 | 8, 16 | 1, 32};
    for (int si = 0; si < 18; si++) /* SM counts x variants */
        for (int ti = 0; ti < 10; ti++) {
            int T = xT[ti];
            kc_poison(dy, (size_t)MR * ldy * 4);
            CU(kiln_cuda_qmma_reg(dy + 1, ldy, dx, KILN_DT_BF16, dw, dt, T, N, K, 0, xv[si / 2], xsm[si % 2], &wk, 0));
            kc_get(yt, dy, (size_t)MR * ldy * 4);
            for (int t = 0; t < MR; t++)
                for (int j = 0; j < ldy; j++) {
                    uint32_t bits;
                    memcpy(&bits, &yt[(size_t)t * ldy + j], 4);
                    if (t >= T || j < 1 || j >= N + 1) { xuntouched += bits != 0xffffffffu; continue; }
                    double r = ref[(size_t)t * N + j - 1];
                    double bound = ldexp(1.0, -22) * (K / 16.0 + 64) * mag[(size_t)t * N + j - 1] + 1e-30;
                    double e = fabs(yt[(size_t)t * ldy + j] - r);
                    if (!(e <= bound)) xbad++;
                    if (e / bound > xworst) xworst = e / bound;
                }
            if (ti == 0 || ti == 4 || ti == 7) memcpy(y32, yt, (size_t)MR * ldy * 4);
            else
                for (int t = 0; t < T; t++) xdiff += memcmp(yt + (size_t)t * ldy + 1, y32 + (size_t)t * ldy + 1, (size_t)N * 4) != 0;
        }
    /* variant 32 (the x stages filled a slot a thread, unswizzled) against 0 (a row a warp,
     * swizzled): the same x in the same registers, so the same bits at every T */
    size_t wdiff = 0;
    const int wT[5] = {3, 9, 16, 32, 50};
    for (int ti = 0; ti < 5; ti++) {
        int T = wT[ti];
        CU(kiln_cuda_qmma_reg(dy + 1, ldy, dx, KILN_DT_BF16, dw, dt, T, N, K, 0, 0, 132, &wk, 0));
        kc_get(y32, dy, (size_t)MR * ldy * 4);
        CU(kiln_cuda_qmma_reg(dy + 1, ldy, dx, KILN_DT_BF16, dw, dt, T, N, K, 0, 32, 132, &wk, 0));
        kc_get(yt, dy, (size_t)MR * ldy * 4);
        for (int t = 0; t < T; t++) wdiff += memcmp(yt + (size_t)t * ldy + 1, y32 + (size_t)t * ldy + 1, (size_t)N * 4) != 0;
    }
    KT_CHECK(wdiff == 0, "qmma_reg split-K %s N %d K %d: %zu rows differ between the x fill orders", kiln_dtype_name(dt), N, K, wdiff);
    unsigned *hc = kiln_malloc(wk.counters * 4);
    kc_get(hc, wk.cnt, wk.counters * 4);
    size_t nz = 0;
    for (size_t i = 0; i < wk.counters; i++) nz += hc[i] != 0;
    KT_CHECK(xbad == 0 && xuntouched == 0 && xdiff == 0 && nz == 0, "qmma_reg split-K %s N %d K %d: %zu out of bound "
             "(worst %.2f), %zu outside the slice, %zu rows differ across T, %zu counters left set", kiln_dtype_name(dt),
             N, K, xbad, xworst, xuntouched, xdiff, nz);
    kiln_free(hc);
    CU(cudaFree(wk.part)); CU(cudaFree(wk.cnt));
    CU(cudaFree(dx)); CU(cudaFree(dy));
    kiln_free(x); kiln_free(hx); kiln_free(y32); kiln_free(yt); kiln_free(ref); kiln_free(mag);
}

static void check_embed(kiln_dtype dt, const uint8_t *dw, const float *w, int N, int K) {
    enum { T = 5 };
    int32_t ids[T] = {0, N - 1, N / 2, 0, N / 3}, prev[T] = {-1, 1, -1, 0, -1}, ptok[2] = {N - 1, N / 2};
    int32_t *d = kc_dev(sizeof ids * 3);
    kc_put(d, ids, sizeof ids);
    kc_put(d + T, prev, sizeof prev);
    kc_put(d + 2 * T, ptok, sizeof ptok);
    float *dx = kc_dev((size_t)T * K * 4), *hx = kiln_malloc((size_t)T * K * 4);
    for (int pass = 0; pass < 2; pass++) {
        kc_poison(dx, (size_t)T * K * 4);
        CU(kiln_cuda_embed(dx, dw, dt, d, pass ? d + T : NULL, pass ? d + 2 * T : NULL, T, K, 0));
        kc_get(hx, dx, (size_t)T * K * 4);
        int bad = 0;
        for (int t = 0; t < T; t++) {
            int id = pass && prev[t] >= 0 ? ptok[prev[t]] : ids[t];
            bad += memcmp(hx + (size_t)t * K, w + (size_t)id * K, (size_t)K * 4) != 0;
        }
        KT_CHECK(bad == 0, "embed %s K %d (prev_row %d): %d rows differ from the CPU's", kiln_dtype_name(dt), K, pass, bad);
    }
    CU(cudaFree(d));
    CU(cudaFree(dx));
    kiln_free(hx);
}

static void one(kiln_dtype dt, int N, int K, unsigned long long *s) {
    size_t nb;
    uint8_t *b = rand_blocks(dt, N, K, s, &nb);
    float *w = dequant(dt, b, N, K);
    uint8_t *dw = kc_dev(nb + 16);
    kc_put(dw, b, nb + 16);
    check_dequant(dt, dw, w, N, K);
    check_gemv(dt, KILN_DT_BF16, dw, w, N, K, s);
    if (N < 100) check_gemv(dt, KILN_DT_F16, dw, w, N, K, s);
    check_mma(dt, dw, w, N, K, s);
    if (kiln_cuda_qmma_reg_supports(dt, K)) {
        float *wr = reg_weights(dt, b, w, N, K);
        check_mma_reg(dt, dw, wr, N, K, s);
        kiln_free(wr);
    }
    check_embed(dt, dw, w, N, K);
    CU(cudaFree(dw));
    kiln_free(b);
    kiln_free(w);
}

static void refusals(void) {
    void *dw = kc_dev(1 << 16), *dx = kc_dev(1 << 16);
    float *dy = kc_dev(1 << 16);
    const cudaError_t bad = cudaErrorInvalidValue;
    int8_t *q = dx;
    float *d = (float *)dx + 4096, *sm = (float *)dx + 8192;
    KT_CHECK(kiln_cuda_qgemv_q8(dy, 64, q, d, sm, dw, KILN_DT_BF16, 1, 64, 256, 0, 0, 0) == bad, "bf16 taken");
    KT_CHECK(kiln_cuda_qgemv_q8(dy, 64, q, d, sm, dw, KILN_DT_F8_E4M3, 1, 64, 256, 0, 0, 0) == bad, "f8 taken");
    KT_CHECK(kiln_cuda_qgemv_q8(dy, 64, q, d, sm, dw, KILN_DT_Q4_K, 1, 64, 128, 0, 0, 0) == bad, "Q4_K K 128 taken");
    KT_CHECK(kiln_cuda_qgemv_q8(dy, 64, q, d, sm, dw, KILN_DT_Q8_0, KILN_QGEMV_MAX_ROWS + 1, 64, 256, 0, 0, 0) == bad,
             "too many rows taken");
    KT_CHECK(kiln_cuda_qgemv_q8(dy, 32, q, d, sm, dw, KILN_DT_Q8_0, 1, 64, 256, 0, 0, 0) == bad, "ldy < N taken");
    KT_CHECK(kiln_cuda_qgemv_q8(dy, 64, q + 2, d, sm, dw, KILN_DT_Q8_0, 1, 64, 256, 0, 0, 0) == bad, "misaligned xq");
    KT_CHECK(kiln_cuda_qgemv_q8(dy, 64, q, d, sm, dw, KILN_DT_Q8_0, 1, 64, 256, 3, 0, 0) == bad, "3 rows a warp");
    KT_CHECK(kiln_cuda_quantize_x(q, d, sm, dw, KILN_DT_BF16, 1, 48, 0) == bad, "quantize_x K 48 taken");
    KT_CHECK(kiln_cuda_quantize_x(q, d, sm, dw, KILN_DT_Q8_0, 1, 64, 0) == bad, "quantize_x of q8_0 x taken");
    KT_CHECK(kiln_cuda_qdequant(dy, KILN_DT_BF16, dw, KILN_DT_Q6_K, 4, 32, 0) == bad, "Q6_K K 32 taken");
    KT_CHECK(kiln_cuda_qdequant(dy, KILN_DT_I32, dw, KILN_DT_Q8_0, 4, 32, 0) == bad, "i32 output taken");
    KT_CHECK(kiln_cuda_qembed(dy, dw, KILN_DT_Q4_K, (const int32_t *)dx, NULL, NULL, 1, 100, 0) == bad, "D 100 taken");
    CU(cudaFree(dw));
    CU(cudaFree(dx));
    CU(cudaFree(dy));
}

/* timings: Devstral shapes, weights rotated past L2 */
#define NRUN 52
/* prof: KILN_QGEMV_BENCH=2, a run for a profiler (ncu): qmma_x at 16 rows, variants 0 and 32, on the down
 * and gate|up shapes only, two launches each (the second is the one to read) */
static void bench(int prof) {
    struct { const char *name; int N, K; } sh[] = {
        {"qkv", 6144, 5120}, {"o", 5120, 4096}, {"gate|up", 65536, 5120}, {"down", 5120, 32768}, {"lm head", 131072, 5120}};
    kiln_dtype bt[3] = {KILN_DT_Q4_K, KILN_DT_Q6_K, KILN_DT_Q8_0};
    unsigned long long s = 7;
    printf("| type | shape | N x K | T | us | GB/s |\n|---|---|---|---|---|---|\n");
    for (int ti = 0; ti < 3; ti++)
        for (int si = 0; si < 5; si++) {
            kiln_dtype dt = bt[ti];
            if (prof && si != 2 && si != 3) continue;
            int N = sh[si].N, K = sh[si].K;
            size_t nb = kiln_dtype_row_bytes(dt, K) * (size_t)N;
            int copies = (int)((512u << 20) / nb) + 1;
            uint8_t *dw = kc_dev(nb * copies + 16);
            CU(cudaMemset(dw, 0, nb * copies + 16));
            size_t nx = 8 * (size_t)K;
            float *xf = kiln_malloc(nx * 4);
            kc_rand(xf, nx, 1.0f, &s);
            uint16_t *hx = kiln_malloc(nx * 2);
            kc_to_dt(KILN_DT_BF16, xf, hx, nx);
            void *dx = kc_dev(nx * 2), *dy = kc_dev((size_t)64 * N * 4);
            kc_put(dx, hx, nx * 2);
            int8_t *xq = kc_dev((size_t)64 * K);
            float *xd = kc_dev((size_t)64 * K / 8), *xs = kc_dev((size_t)64 * K / 4);
            CU(kiln_cuda_quantize_x(xq, xd, xs, dx, KILN_DT_BF16, 8, K, 0));
            CU(cudaMemset(xq + 8 * (size_t)K, 1, (size_t)56 * K));
            CU(cudaMemset(xd, 0, (size_t)64 * K / 8));
            CU(cudaMemset(xs, 0, (size_t)64 * K / 4));
            int Ts[7] = {1, 2, 4, 8, 16, 64, 0};
            void *dx64 = kc_dev((size_t)64 * K * 2);
            CU(cudaMemset(dx64, 0, (size_t)64 * K * 2));
            if (kiln_cuda_qmma_reg_supports(dt, K)) { /* auto nt at each T, then nt 1 / 2 / 4 at T 1 and 16 */
                /* rows, n-tiles, variant per run; k >= 16: the split-K kernel (work buffers) */
                /* 28..: the prefetch distances (v 4 / 8 / 12) and 2 n-tiles (16) at 1, 4, 16 rows, prefetch at 32 / 64;
                 * 47, 48: v 17 (2 n-tiles with the register cap flipped: Q6_K / Q8_0 at 2 n-tiles, 1 CTA an SM);
                 * 49..51: v 32 (the x stages' old fill order) at 4, 16, 32 */
                const int RT[NRUN] = {1, 4, 8, 16, 32, 64, 1, 1, 1, 16, 16, 16, 1, 4, 8, 16, 1, 4, 8, 16, 4, 16, 4, 16, 4,
                                      16, 32, 64, 1, 4, 16, 1, 4, 16, 1, 4, 16, 1, 4, 16, 1, 4, 16, 32, 64, 32, 64, 4, 16,
                                      4, 16, 32};
                const int RNT[NRUN] = {0, 0, 0, 0, 0, 0, 1, 2, 4, 1, 2, 4};
                const int RV[NRUN] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 0, 0,
                                      4, 4, 4, 8, 8, 8, 12, 12, 12, 16, 16, 16, 24, 24, 24, 4, 4, 8, 8, 17, 17,
                                      32, 32, 32};
                kiln_cuda_qreg_work wk;
                kiln_cuda_qmma_reg_work(132, &wk.floats, &wk.counters);
                wk.part = kc_dev(wk.floats * 4);
                wk.cnt = kc_dev(wk.counters * 4);
                CU(cudaMemset(wk.cnt, 0, wk.counters * 4));
                for (int k = 0; k < NRUN; k++) {
                    int T = RT[k], nt = RNT[k], wp = RV[k];
                    if (prof && !(k >= 16 && T == 16 && (wp == 0 || wp == 32))) continue; /* qmma_x at 16 rows, v 0 and 32 */
                    cudaEvent_t a, b;
                    CU(cudaEventCreate(&a));
                    CU(cudaEventCreate(&b));
                    for (int it = -3; it < (prof ? 1 : 20); it++) {
                        if (it == 0) CU(cudaEventRecord(a, 0));
                        const uint8_t *w = dw + nb * (size_t)((it + 3) % copies);
                        CU(kiln_cuda_qmma_reg((float *)dy, N, dx64, KILN_DT_BF16, w, dt, T, N, K, nt, wp, 132,
                                              k >= 16 ? &wk : NULL, 0));
                    }
                    CU(cudaEventRecord(b, 0));
                    CU(cudaEventSynchronize(b));
                    float ms;
                    CU(cudaEventElapsedTime(&ms, a, b));
                    double us = ms * 1000.0 / 20;
                    printf("| %s | %s | %d x %d | %s %d nt %d v %d | %.1f | %.0f |\n", kiln_dtype_name(dt), sh[si].name,
                           N, K, k >= 16 ? "regx" : "reg", T, nt, wp, us, nb / us / 1e3);
                    CU(cudaEventDestroy(a));
                    CU(cudaEventDestroy(b));
                }
                CU(cudaFree(wk.part));
                CU(cudaFree(wk.cnt));
            }
            for (int k = 0; k < (prof ? 0 : 7); k++) {
                cudaEvent_t a, b;
                CU(cudaEventCreate(&a));
                CU(cudaEventCreate(&b));
                void *dq = Ts[k] ? NULL : kc_dev((size_t)N * K * 2);
                for (int it = -3; it < 20; it++) {
                    if (it == 0) CU(cudaEventRecord(a, 0));
                    const uint8_t *w = dw + nb * (size_t)((it + 3) % copies);
                    if (Ts[k] > 8) CU(kiln_cuda_qmma((float *)dy, N, dx64, KILN_DT_BF16, w, dt, Ts[k], N, K, 0));
                    else if (Ts[k]) CU(kiln_cuda_qgemv_q8((float *)dy, N, xq, xd, xs, w, dt, Ts[k], N, K, 0, 0, 0));
                    else CU(kiln_cuda_qdequant(dq, KILN_DT_BF16, w, dt, N, K, 0));
                }
                CU(cudaEventRecord(b, 0));
                CU(cudaEventSynchronize(b));
                float ms;
                CU(cudaEventElapsedTime(&ms, a, b));
                double us = ms * 1000.0 / 20;
                if (Ts[k]) printf("| %s | %s | %d x %d | %d | %.1f | %.0f |\n", kiln_dtype_name(dt), sh[si].name, N, K, Ts[k], us, nb / us / 1e3);
                else printf("| %s | %s | %d x %d | dequant | %.1f | %.0f (+%.0f written) |\n", kiln_dtype_name(dt), sh[si].name, N, K, us, nb / us / 1e3, (double)N * K * 2 / us / 1e3);
                if (dq) CU(cudaFree(dq));
                CU(cudaEventDestroy(a));
                CU(cudaEventDestroy(b));
            }
            CU(cudaFree(dw));
            CU(cudaFree(dx));
            CU(cudaFree(dy));
            CU(cudaFree(xq)); CU(cudaFree(xd)); CU(cudaFree(xs)); CU(cudaFree(dx64));
            kiln_free(xf);
            kiln_free(hx);
        }
}

int main(void) {
    kc_require_gpu();
    const char *b = getenv("KILN_QGEMV_BENCH");
    if (b && *b == '2') { /* the profiler's run alone */
        bench(1);
        return 0;
    }
    unsigned long long s = kc_seed();
    const int Ns[4] = {1, 7, 64, 333};
    const int K32[4] = {32, 96, 576, 4096}, K256[3] = {256, 768, 5120};
    for (int ti = 0; ti < N_TYPES; ti++) {
        kiln_dtype dt = k_types[ti];
        int kq = kiln_dtype_block_elems(dt) == 256;
        for (int ni = 0; ni < 4; ni++)
            for (int ki = 0; ki < (kq ? 3 : 4); ki++) one(dt, Ns[ni], kq ? K256[ki] : K32[ki], &s);
        fprintf(stderr, "%s: done\n", kiln_dtype_name(dt));
    }
    refusals();
    if (b && *b == '1') bench(0);
    return kt_done();
}
