/* test_cuda_grammar.c: constrained decoding on the cuda backend (issue 18): test_engine_grammar.c's
 * suite with tinystories-656K, the reference runs sampled on the host from the backend's logits,
 * the others drawn by the device sampler with each step's grammar masks (regex, GBNF, choice, a
 * batch of constrained and unconstrained requests under overlapped scheduling), every output
 * equal token for token in batch-invariant mode. */
#include "cuda_test.h"
#define GRAMMAR_TEST_CUDA 1
#include "test_engine_grammar.c"
