/* test_cuda_spec.c: speculative decoding on the cuda backend (issue 20): test_engine_spec.c's
 * whole suite (n-gram K = 4 and 7, preemption, abort, prefix cache after speculation, a draft
 * model = the target and another model, opt-out), every run in batch-invariant mode with host
 * sampling, so speculation may not change one bit of any request's output; and the engine's
 * switch to host sampling when it speculates on a backend that samples by default. */
#include "cuda_test.h"
#define SPEC_TEST_CUDA 1
#include "test_engine_spec.c"
