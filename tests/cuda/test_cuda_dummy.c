/* test_cuda_dummy.c: the device dummy-weight fill (dummy_fill.cu) gives exactly
 * kiln_dummy_value (src/model/dummy.c) rounded to the dtype, for matrices and norms. */
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "model/model.h"
#include "util/alloc.h"

static void one(kiln_dtype dt, int64_t rows, int64_t cols, uint64_t seed, int ti) {
    kiln_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.ndim = cols ? 2 : 1;
    t.shape[0] = rows;
    t.shape[1] = cols;
    int64_t n = cols ? rows * cols : rows;
    size_t es = kc_dtsize(dt);
    unsigned char *want = kiln_malloc((size_t)n * es), *got = kiln_malloc((size_t)n * es);
    for (int64_t i = 0; i < n; i++) {
        float v = kiln_dummy_value(seed, ti, i, &t);
        if (dt == KILN_DT_F32) memcpy(want + i * 4, &v, 4);
        else {
            uint16_t h = dt == KILN_DT_F16 ? kiln_f32_to_f16(v) : kiln_f32_to_bf16(v);
            memcpy(want + i * 2, &h, 2);
        }
    }
    void *d = kc_dev((size_t)n * es);
    kc_poison(d, (size_t)n * es);
    CU(kiln_cuda_dummy_fill(d, dt, n, seed, ti, cols, 0));
    kc_get(got, d, (size_t)n * es);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(want + i * es, got + i * es, es)) { if (first < 0) first = i; bad++; }
    KT_CHECK(bad == 0, "dummy %s [%lld][%lld] seed %llu tensor %d: %lld elements differ (first %lld)", kc_dtname(dt),
             (long long)rows, (long long)cols, (unsigned long long)seed, ti, (long long)bad, (long long)first);
    printf("dummy %-4s [%lld][%lld] tensor %d: %lld / %lld differ\n", kc_dtname(dt), (long long)rows, (long long)cols, ti,
           (long long)bad, (long long)n);
    CU(cudaFree(d));
    kiln_free(want);
    kiln_free(got);
}

int main(void) {
    kc_require_gpu();
    kiln_dtype dts[3] = {KILN_DT_F32, KILN_DT_F16, KILN_DT_BF16};
    for (int i = 0; i < 3; i++) {
        one(dts[i], 1024, 5120, 1, 7);
        one(dts[i], 333, 32768, 12345, 0);
        one(dts[i], 5120, 0, 1, 2);
        one(dts[i], 48, 17, 0xdeadbeefULL, 400);
    }
    return kt_done();
}
