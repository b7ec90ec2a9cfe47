/* mask_walk.h: the memoized trie walk (mask_walk.c), private to grammar/. */
#ifndef KILN_GRAMMAR_MASK_WALK_H
#define KILN_GRAMMAR_MASK_WALK_H
#include "grammar/grammar.h"

#define KILN_GWALK_ESC (-2) /* the parent of a position walk's start: popping to it is an exit */

void kiln_gscratch_reset(kiln_gscratch *w);
/* the state of one stack given by key[0..len) (the top's position, then its ancestors'), over
 * ESC when truncated (the real stack goes deeper), else over the bottom */
int32_t kiln_gwalk_frame(kiln_gscratch *w, const int32_t *key, int len, int truncated);
/* the state reached by popping to a parent whose chain (positions, bottom up) is given */
int32_t kiln_gwalk_pop(kiln_gscratch *w, const kiln_gram *g, const int32_t *chain, int len);
/* walk trie nodes [i0, i1) (a subtree below depth d0, or the whole trie with d0 = 0) from state
 * s0: tokens accepted are set in mask; nodes where a stack exits its position walk are written
 * to u_out (NULL: not recorded) */
int kiln_gwalk(kiln_gscratch *w, const kiln_gram *g, const kiln_token_trie *t, int i0, int i1, int d0, int32_t s0,
               uint32_t *mask, int32_t *u_out, int u_cap, int *n_u, kiln_error *err);
int32_t kiln_gwalk_state(kiln_gscratch *w, const kiln_gram *g, const int32_t *pos, const int32_t *parent_chain_len,
                         const int32_t *chains, int n_tops, int flags);
#endif
