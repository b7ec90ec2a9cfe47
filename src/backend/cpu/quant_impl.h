/* quant_impl.h: private to the quant_dot*.c files: GGML block layouts; their per-ISA entry
 * points are declared in dot_internal.h (the kernel tables).
 *
 * Block layouts: format/quant.h.
 */
#ifndef KILN_CPU_QUANT_IMPL_H
#define KILN_CPU_QUANT_IMPL_H
#include <stdint.h>
#include "backend/cpu/dot_internal.h"
#include "format/quant.h"

#endif
