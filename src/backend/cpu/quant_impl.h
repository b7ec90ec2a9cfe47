/* quant_impl.h: private to the quant_dot*.c files: GGML block layouts and the per-ISA tables.
 *
 * Block layouts: format/quant.h.
 */
#ifndef KILN_CPU_QUANT_IMPL_H
#define KILN_CPU_QUANT_IMPL_H
#include <stdint.h>
#include "backend/cpu/kernels.h"
#include "format/quant.h"

/* Dot kernels of one ISA for dtype dt; NULL where none. */
kiln_dot_fn kiln_quant_dot_avx2(kiln_dtype dt);
kiln_dot_fn kiln_quant_dot_avx512(kiln_dtype dt);
kiln_dotw_fn kiln_quant_dotw_avx2(kiln_dtype dt);
kiln_dotw_fn kiln_quant_dotw_avx512(kiln_dtype dt);
kiln_deq_fn kiln_quant_deq_avx512(kiln_dtype dt);
kiln_tile_fn kiln_quant_tile_avx512(void);
kiln_tile_phase_fn kiln_quant_tile_phase_avx512(void);

#endif
