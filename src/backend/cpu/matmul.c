/* matmul.c: y[r][o] = dot(W[o], x[r]) on the CPU.
 *
 *   x: [n_rows][n_in] f32, W: [n_out][n_in] (any dtype with a kiln_dot_fn), y: [n_rows][n_out]
 *
 * Work split: each pool thread owns one contiguous chunk of output columns [o0, o1), so the
 * weights are partitioned, never shared, between threads. Inside a chunk the loop is
 *   for each row tile (up to ROW_TILE_BYTES of x, a multiple of 4 rows, >= 4 rows)
 *     for o in [o0, o1)
 *       for each group of <= 4 rows of the tile: one kiln_dot_fn call
 * so a weight row is fetched from memory once per row tile and re-used from L1 by the row
 * groups, while the tile of x stays in L2: for decode batches up to the tile size the
 * weights stream exactly once per step (invariant I4). Each output element is exactly one
 * dot call on one weight row and one x row, whose result does not depend on the group size,
 * so y is bit-identical whatever the thread count and the batch composition (I5/I6).
 * Small products run on the calling thread (a pool wake-up would cost more than the work).
 * No allocation. */
#include "backend/cpu/dot_internal.h"
#include "util/error.h"

#define ROW_TILE_BYTES (512u * 1024u)
#define SERIAL_MACS (1u << 16) /* below this many multiply-adds: no threads */

typedef struct mm_job {
    kiln_dot_fn fn;
    const uint8_t *w; /* [n_out][row_bytes] */
    size_t row_bytes;
    const float *x;   /* [n_rows][n_in] */
    float *y;         /* [n_rows][n_out] */
    int n_rows, n_in, n_out, row_tile;
} mm_job;

static void mm_run(void *ctx, int ith, int nth) {
    const mm_job *j = ctx;
    int o0 = (int)((int64_t)j->n_out * ith / nth);
    int o1 = (int)((int64_t)j->n_out * (ith + 1) / nth);
    const size_t ldx = (size_t)j->n_in, ldy = (size_t)j->n_out;
    for (int t0 = 0; t0 < j->n_rows; t0 += j->row_tile) {
        int t1 = t0 + j->row_tile < j->n_rows ? t0 + j->row_tile : j->n_rows;
        for (int o = o0; o < o1; o++) {
            const uint8_t *wrow = j->w + (size_t)o * j->row_bytes;
            for (int g = t0; g < t1; g += KILN_DOT_MAX_NR) {
                int nr = t1 - g < KILN_DOT_MAX_NR ? t1 - g : KILN_DOT_MAX_NR;
                j->fn(wrow, j->x + (size_t)g * ldx, ldx, nr, j->n_in, j->y + (size_t)g * ldy + o, ldy);
            }
        }
    }
}

int kiln_cpu_matmul(kiln_cpu_ctx *c, float *y, const float *x, int n_rows, const kiln_tensor *w,
                    kiln_error *err) {
    if (!c || !w) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: NULL context or weight");
    if (w->ndim != 2 || w->shape[0] <= 0 || w->shape[1] <= 0 || w->shape[0] > INT32_MAX ||
        w->shape[1] > INT32_MAX)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: weight %s must be a 2-D [n_out][n_in] matrix",
                        w->name);
    if (n_rows < 0) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: n_rows %d < 0", w->name, n_rows);
    size_t row_bytes = kiln_dtype_row_bytes(w->dtype, w->shape[1]);
    if (row_bytes == 0)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: %lld columns is not a whole number of %s blocks",
                        w->name, (long long)w->shape[1], kiln_dtype_name(w->dtype));
    if (!w->data || w->nbytes < row_bytes * (size_t)w->shape[0])
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: data holds %zu bytes, [%lld][%lld] %s needs %zu",
                        w->name, w->nbytes, (long long)w->shape[0], (long long)w->shape[1],
                        kiln_dtype_name(w->dtype), row_bytes * (size_t)w->shape[0]);
    kiln_dot_fn fn = kiln_cpu_dot_lookup(w->dtype, c->isa);
    if (!fn)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "matmul: %s: no %s kernel for %s weights", w->name,
                        kiln_isa_name(c->isa), kiln_dtype_name(w->dtype));
    if (n_rows == 0) return KILN_OK;
    if (!x || !y) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "matmul: %s: NULL input or output", w->name);

    mm_job j = {.fn = fn, .w = w->data, .row_bytes = row_bytes, .x = x, .y = y, .n_rows = n_rows,
                .n_in = (int)w->shape[1], .n_out = (int)w->shape[0]};
    size_t tile = ROW_TILE_BYTES / ((size_t)j.n_in * sizeof(float));
    tile &= ~(size_t)(KILN_DOT_MAX_NR - 1);
    j.row_tile = tile < KILN_DOT_MAX_NR ? KILN_DOT_MAX_NR : tile > INT32_MAX ? INT32_MAX : (int)tile;

    double macs = (double)n_rows * j.n_out * j.n_in;
    if (!c->pool || kiln_pool_size(c->pool) <= 1 || macs < SERIAL_MACS)
        mm_run(&j, 0, 1);
    else
        kiln_pool_run(c->pool, mm_run, &j);
    return KILN_OK;
}
