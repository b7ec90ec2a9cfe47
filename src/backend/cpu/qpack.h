/* qpack.h: packed copies of quantized weights for the W x A8 kernels (qgemm.h: the packed
 * layout, kiln_qgemm_pack_fn), one per weight matrix, keyed by the matrix's data pointer.
 *
 * A matrix [n_out][n_in] packs into ceil(n_out / 16) groups of 16 rows,
 * kiln_qgemm_packed_bytes(dtype, n_in) bytes each (the last group's missing rows repeat its
 * last row): the same bytes as the rows, plus at most 15 rows of padding. The backend packs its
 * weights at create (kiln_cpu_packs_add); kiln_cpu_matmul looks them up (kiln_cpu_packs_find) and
 * runs the packed kernel where it finds one, the unpacked kernel (same bits) where not. */
#ifndef KILN_CPU_QPACK_H
#define KILN_CPU_QPACK_H
#include "backend/cpu/qgemm.h"
#include "format/tensor.h"
#include "util/error.h"

typedef struct kiln_cpu_packs kiln_cpu_packs;

typedef struct kiln_cpu_pack {
    const uint8_t *wp;         /* the groups, 64-byte aligned */
    size_t group_bytes;        /* bytes of one group */
    kiln_qgemm_packed_fn fn;
    int sums16;                /* fn reads the activations' qs16 (kiln_q8act_sums16) */
} kiln_cpu_pack;

int kiln_cpu_packs_create(kiln_cpu_packs **out, kiln_isa isa, kiln_error *err);
void kiln_cpu_packs_destroy(kiln_cpu_packs *p);
/* Pack w (a no-op when it is packed already, or when (w's dtype, isa) has no packed kernel:
 * *added 0). Threads of pool (may be NULL) share the groups. */
int kiln_cpu_packs_add(kiln_cpu_packs *p, const kiln_tensor *w, kiln_pool *pool, int *added, kiln_error *err);
/* w's packed copy, or NULL. */
const kiln_cpu_pack *kiln_cpu_packs_find(const kiln_cpu_packs *p, const kiln_tensor *w);
/* Matrices packed and their bytes. */
void kiln_cpu_packs_stats(const kiln_cpu_packs *p, int *n, size_t *bytes);

#endif
