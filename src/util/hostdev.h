/* hostdev.h: KILN_HD marks a static inline function shared by host C and CUDA device code
 * (nvcc compiles it for both; a C compiler sees a plain function). */
#ifndef KILN_HOSTDEV_H
#define KILN_HOSTDEV_H
#ifdef __CUDACC__
#define KILN_HD __host__ __device__
#else
#define KILN_HD
#endif
#endif
