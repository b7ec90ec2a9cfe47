/* sample.cu: token sampling on the device with the exact semantics of the CPU sampler
 * (engine/sampler.c, kiln_sample), and the penalty tables it reads.
 *
 * Shapes: logits [n][V] f32 (read only); work [n][V] f32 scratch (the processed logits);
 * rows [n] parameters; counts [slots][V] int32 output-token counts and in_prompt [slots][V] u8
 * (one slot per sequence, kept current on the device: the sampler adds the chosen token).
 *
 * One CTA of 1024 threads per row (rows are independent; every reduction below has a fixed
 * order that depends only on V, so a row gives the same bits alone or in any batch):
 *   1. w = logits; repetition (divide positive / multiply negative, ids in the prompt or the
 *      output), presence/frequency (w -= freq * count + pres, exactly rounded ops, no FMA),
 *      bias (one thread, in list order, as the CPU), suppression (-inf), the grammar mask (-inf
 *      where its bit is clear).
 *   2. temperature <= 0: argmax (lowest id on ties). Else w *= 1/temperature (f32), mx = max.
 *   3. top-k: radix select on the order-preserving u32 key of w (-0 folded into +0): 3 passes
 *      (11, 11, 10 bits) of shared histograms find the key K of the k-th candidate in the order
 *      (w desc, id asc); ties at K are kept lowest id first (a block scan of tie counts over
 *      contiguous id chunks). The rest become -inf in work.
 *   4. top-p: the same radix select weighted by the probability mass exp(w - mx) in 64-bit fixed
 *      point (scaled by 2^(63 - bitlen(V)), so V masses fit): integer sums are deterministic
 *      without ordering the atomics. Target = ceil(top_p * total); ties at the threshold are
 *      taken lowest id first until the target is met. The rest become -inf.
 *   5. min-p (w - mx >= log(min_p); min_p > 1 keeps only the argmax) and the draw: each thread
 *      owns a contiguous id chunk; a block exclusive scan (double) of chunk sums gives every
 *      chunk its running-sum start; the first id (lowest) whose running sum exceeds
 *      u * total is chosen, u = kiln_uniform(seed, position) (Philox4x32-10, integer math).
 *   6. raw logprobs: log-softmax of the unmodified row (double sums); top n_top by radix select
 *      (count) then a sort of <= 20 candidates (logit desc, id asc).
 * The only difference from the CPU is the summation order of doubles (and the fixed point of
 * top-p), so a token can differ only when u * sum falls within ~1e-12 relative of a boundary.
 * Cost per row: ~3-4 reads of the row per radix select (top-k, top-p, raw top-n) plus the
 * penalty, temperature and draw passes, all from L2; the mass histograms use shared 64-bit
 * atomics, which contend when many candidates share a bucket (not tuned yet).
 * Nothing allocates or synchronises; the launchers only enqueue on `st`.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include "backend/cuda/cuda_dev.cuh"
#include "backend/cuda/cuda_ops.h"
#include "util/philox.h"

#define NT 1024   /* threads per row; the bucket scan below maps 2 buckets to each thread */
#define NB 2048   /* histogram buckets (11 bits) */

typedef unsigned long long u64;

/* ---- the uniform of (seed, position), bit-identical to engine/sampler.c (util/philox.h) ---- */
static __device__ double dev_uniform(uint64_t seed, uint64_t position) {
    return __dmul_rn(__ull2double_rn(kiln_philox_bits53(seed, position)), 1.0 / 9007199254740992.0);
}

/* order-preserving key: larger float -> larger key; -0 and +0 share one key (they compare
 * equal, so the CPU orders them by id) */
static __device__ __forceinline__ uint32_t fkey(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u << 1) == 0) u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
static __device__ __forceinline__ float key_to_float(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/* exp(w - mx) in fixed point (0 for -inf) */
static __device__ __forceinline__ u64 efix(float v, float mx, double scale) {
    if (v == -INFINITY) return 0;
    double e = exp(__dsub_rn((double)v, (double)mx));
    return __double2ull_rn(__dmul_rn(e, scale));
}

typedef struct sample_smem {
    u64 hist[NB];
    u64 scan[32];
    double dscan[32];
    float fred[32];
    int ired[32];
    uint32_t bucket;
    u64 need, total;
    double dtotal;
    int found, last;
    int top_n;
    int top_id[KILN_CUDA_MAX_TOP];
    float top_v[KILN_CUDA_MAX_TOP];
} sample_smem;

/* block exclusive scan in thread order (fixed order); *total gets the block sum */
static __device__ u64 scan_u64(u64 v, u64 *total, sample_smem *sm) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u64 incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        u64 n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
    }
    __syncthreads();
    if (lane == 31) sm->scan[warp] = incl;
    __syncthreads();
    if (threadIdx.x == 0) {
        u64 run = 0;
        for (int i = 0; i < NT / 32; i++) { u64 t = sm->scan[i]; sm->scan[i] = run; run += t; }
        sm->total = run;
    }
    __syncthreads();
    *total = sm->total;
    return sm->scan[warp] + incl - v;
}
static __device__ double scan_f64(double v, double *total, sample_smem *sm) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    double incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        double n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl = __dadd_rn(incl, n);
    }
    double excl = __shfl_up_sync(0xffffffffu, incl, 1);
    if (lane == 0) excl = 0.0;
    __syncthreads();
    if (lane == 31) sm->dscan[warp] = incl;
    __syncthreads();
    if (threadIdx.x == 0) {
        double run = 0.0;
        for (int i = 0; i < NT / 32; i++) { double t = sm->dscan[i]; sm->dscan[i] = run; run = __dadd_rn(run, t); }
        sm->dtotal = run;
    }
    __syncthreads();
    *total = sm->dtotal;
    return __dadd_rn(sm->dscan[warp], excl);
}
static __device__ float block_max(float v, sample_smem *sm) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sm->fred[threadIdx.x >> 5] = v;
    __syncthreads();
    float m = -INFINITY;
    for (int i = 0; i < NT / 32; i++) m = fmaxf(m, sm->fred[i]);
    return m;
}
static __device__ double block_sum_f64(double v, sample_smem *sm) {
    double tot;
    scan_f64(v, &tot, sm);
    return tot;
}
/* argmax of w[0..V), lowest id on ties; 0 when nothing beats -inf (as the CPU loop) */
static __device__ int block_argmax(const float *w, int V, sample_smem *sm) {
    float best = -INFINITY;
    int id = INT_MAX;
    for (int i = threadIdx.x; i < V; i += NT) {
        float v = w[i];
        if (v > best) { best = v; id = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ob = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, id, o);
        if (ob > best || (ob == best && oi < id)) { best = ob; id = oi; }
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) { sm->fred[threadIdx.x >> 5] = best; sm->ired[threadIdx.x >> 5] = id; }
    __syncthreads();
    best = -INFINITY;
    id = INT_MAX;
    for (int i = 0; i < NT / 32; i++) {
        float ob = sm->fred[i];
        int oi = sm->ired[i];
        if (ob > best || (ob == best && oi < id)) { best = ob; id = oi; }
    }
    return id == INT_MAX ? 0 : id;
}

/* Radix select over the keys of src[0..V) in the order (value desc, id asc).
 * mass = 0: weight 1 per element, target `need` (the need-th element).
 * mass = 1: weight efix(v), target ceil(top_p * total mass).
 * Returns the threshold key K; *rem = the weight still needed within key K (>= 1). */
static __device__ uint32_t radix_select(const float *src, int V, int mass, u64 need, float top_p, float mx,
                                        double scale, u64 *rem, sample_smem *sm) {
    uint32_t prefix = 0;
    int hi = 32; /* bits of the key fixed so far: [hi, 32) */
    for (int pass = 0; pass < 3; pass++) {
        int nb = pass < 2 ? 11 : 10, shift = hi - nb;
        for (int b = threadIdx.x; b < NB; b += NT) sm->hist[b] = 0;
        __syncthreads();
        /* every lane runs every iteration (NT is a multiple of 32): the count histogram
         * aggregates equal buckets of a warp (__match_any_sync) to spare contended atomics */
        for (int base = 0; base < V; base += NT) {
            int i = base + (int)threadIdx.x, bucket = -1;
            float v = 0.0f;
            if (i < V) {
                v = src[i];
                uint32_t k = fkey(v);
                if (hi == 32 || (k >> hi) == prefix) bucket = (int)((k >> shift) & ((1u << nb) - 1));
            }
            if (mass) {
                u64 wt = bucket >= 0 ? efix(v, mx, scale) : 0;
                if (wt) atomicAdd(&sm->hist[bucket], wt);
            } else {
                unsigned peers = __match_any_sync(0xffffffffu, bucket);
                if (bucket >= 0 && (int)(threadIdx.x & 31) == __ffs(peers) - 1)
                    atomicAdd(&sm->hist[bucket], (u64)__popc(peers));
            }
        }
        __syncthreads();
        /* thread t looks at buckets b0 = 2047 - 2t and b1 = b0 - 1 (descending key order) */
        int b0 = NB - 1 - 2 * (int)threadIdx.x, b1 = b0 - 1;
        u64 h0 = sm->hist[b0], h1 = sm->hist[b1], total;
        u64 above = scan_u64(h0 + h1, &total, sm);
        if (mass && pass == 0) {
            double t = ceil(__dmul_rn((double)top_p, __ull2double_rn(total)));
            need = t < 1.0 ? 1 : (u64)t;
            if (need > total) need = total;
        }
        if (threadIdx.x == 0) { sm->bucket = 0; sm->need = 1; }
        __syncthreads();
        if (above < need && need <= above + h0) { sm->bucket = (uint32_t)b0; sm->need = need - above; }
        else if (above + h0 < need && need <= above + h0 + h1) { sm->bucket = (uint32_t)b1; sm->need = need - above - h0; }
        __syncthreads();
        prefix = (prefix << nb) | sm->bucket;
        need = sm->need;
        hi = shift;
        __syncthreads();
    }
    *rem = need;
    return prefix;
}

/* the id chunk of this thread: [lo, hi) */
static __device__ __forceinline__ void chunk(int V, int *lo, int *hi) {
    int c = (V + NT - 1) / NT;
    *lo = min(V, (int)threadIdx.x * c);
    *hi = min(V, *lo + c);
}

/* Keep key > K and the first m ids with key == K (id order); the rest of w becomes -inf
 * (gather = 0), or the kept ids are gathered into sm->top_* (raw top-n). */
static __device__ void keep_threshold(float *w, const float *src, int V, uint32_t K, u64 m, int gather,
                                      sample_smem *sm) {
    int lo, hi;
    chunk(V, &lo, &hi);
    u64 ties = 0, tot;
    for (int i = lo; i < hi; i++) ties += fkey(src[i]) == K;
    u64 rank = scan_u64(ties, &tot, sm);
    for (int i = lo; i < hi; i++) {
        float v = src[i];
        uint32_t k = fkey(v);
        int keep = k > K || (k == K && rank++ < m);
        if (gather) {
            if (keep) {
                int s = atomicAdd(&sm->top_n, 1);
                if (s < KILN_CUDA_MAX_TOP) { sm->top_id[s] = i; sm->top_v[s] = v; }
            }
        } else if (!keep && v != -INFINITY) {
            w[i] = -INFINITY;
        }
    }
    __syncthreads();
}

static __device__ __forceinline__ double ekeep(float v, float mx) {
    if (v == -INFINITY) return 0.0;
    return exp(__dsub_rn((double)v, (double)mx));
}

__global__ void __launch_bounds__(NT) sample_kernel(const float *logits, float *work, int V,
                                                    const kiln_cuda_sample_row *rows, const int32_t *bias_ids,
                                                    const float *bias_values, const int32_t *supp_ids,
                                                    const uint32_t *masks, int mask_words,
                                                    int32_t *counts, const uint8_t *in_prompt, int32_t *out_tok,
                                                    float *out_logprob, int32_t *out_top_ids, float *out_top_lp) {
    __shared__ sample_smem sm;
    const int row = blockIdx.x, tid = threadIdx.x;
    const kiln_cuda_sample_row r = rows[row];
    const float *x = logits + (size_t)row * V;
    float *w = work + (size_t)row * V;

    /* 1. penalties, bias, suppression */
    const int32_t *cnt = r.slot >= 0 && counts ? counts + (size_t)r.slot * V : NULL;
    const uint8_t *inp = r.slot >= 0 && in_prompt ? in_prompt + (size_t)r.slot * V : NULL;
    int do_rep = cnt && inp && r.repetition_penalty != 1.0f && r.repetition_penalty > 0.0f;
    int do_pf = cnt && (r.presence_penalty != 0.0f || r.frequency_penalty != 0.0f);
    for (int i = tid; i < V; i += NT) {
        float v = x[i];
        if (do_rep || do_pf) {
            int c = cnt[i];
            if (do_rep && (c > 0 || inp[i]))
                v = v > 0.0f ? __fdiv_rn(v, r.repetition_penalty) : __fmul_rn(v, r.repetition_penalty);
            if (do_pf && c > 0)
                v = __fsub_rn(v, __fadd_rn(__fmul_rn(r.frequency_penalty, (float)c), r.presence_penalty));
        }
        w[i] = v;
    }
    __syncthreads();
    if (tid == 0)
        for (int j = 0; j < r.n_bias; j++) {
            int32_t id = bias_ids[r.bias_start + j];
            if (id >= 0 && id < V) w[id] = __fadd_rn(w[id], bias_values[r.bias_start + j]);
        }
    __syncthreads();
    for (int j = tid; j < r.n_supp; j += NT) {
        int32_t id = supp_ids[r.supp_start + j];
        if (id >= 0 && id < V) w[id] = -INFINITY;
    }
    __syncthreads();
    if (r.mask > 0 && masks) { /* constrained decoding: each thread its ids' bits */
        const uint32_t *mrow = masks + (size_t)(r.mask - 1) * mask_words;
        for (int i = tid; i < V; i += NT)
            if (!(__ldg(&mrow[i >> 5]) >> (i & 31) & 1u)) w[i] = -INFINITY;
        __syncthreads();
    }

    int chosen;
    if (r.temperature <= 0.0f) {
        chosen = block_argmax(w, V, &sm);
    } else {
        /* 2. temperature, max */
        float inv_t = __fdiv_rn(1.0f, r.temperature), lm = -INFINITY;
        for (int i = tid; i < V; i += NT) {
            float v = __fmul_rn(w[i], inv_t);
            w[i] = v;
            lm = fmaxf(lm, v);
        }
        float mx = block_max(lm, &sm);
        __syncthreads();
        int need_sort = (r.top_k > 0 && r.top_k < V) || r.top_p < 1.0f || r.min_p > 0.0f;
        double thr = r.min_p > 0.0f ? log((double)r.min_p) : 0.0;
        if (!(mx > -INFINITY)) {
            chosen = 0; /* everything suppressed: the CPU returns 0 too */
        } else if (r.min_p > 0.0f && thr > 0.0) {
            chosen = block_argmax(w, V, &sm); /* min_p > 1 keeps only the first candidate */
            for (int i = tid; i < V; i += NT)
                if (i != chosen) w[i] = -INFINITY; /* work shows the kept set, as the CPU's */
        } else {
            int bl = 0;
            while (bl < 31 && (1 << bl) <= V) bl++;
            double scale = ldexp(1.0, 63 - bl); /* V * scale <= 2^63 */
            u64 rem;
            /* 3. top-k */
            if (r.top_k > 0 && r.top_k < V) {
                uint32_t K = radix_select(w, V, 0, (u64)r.top_k, 1.0f, mx, scale, &rem, &sm);
                keep_threshold(w, w, V, K, rem, 0, &sm);
            }
            /* 4. top-p */
            if (need_sort && r.top_p < 1.0f) {
                uint32_t K = radix_select(w, V, 1, 0, r.top_p, mx, scale, &rem, &sm);
                u64 eK = efix(key_to_float(K), mx, scale);
                u64 m = eK ? (rem + eK - 1) / eK : 1;
                keep_threshold(w, w, V, K, m, 0, &sm);
            }
            /* 5. min-p and the draw in id order */
            int use_minp = need_sort && r.min_p > 0.0f;
            int lo, hi;
            chunk(V, &lo, &hi);
            double loc = 0.0, total;
            for (int i = lo; i < hi; i++) {
                float v = w[i];
                if (v == -INFINITY) continue;
                double d = __dsub_rn((double)v, (double)mx);
                if (use_minp && !(d >= thr)) { w[i] = -INFINITY; continue; } /* work shows the kept set */
                double e = exp(d);
                if (e > 0.0) loc = __dadd_rn(loc, e);
            }
            double acc = scan_f64(loc, &total, &sm);
            double target = __dmul_rn(dev_uniform(r.seed, r.position), total);
            if (tid == 0) { sm.found = INT_MAX; sm.last = -1; }
            __syncthreads();
            int found = INT_MAX, last = -1;
            for (int i = lo; i < hi; i++) {
                double e = ekeep(w[i], mx);
                if (!(e > 0.0)) continue;
                acc = __dadd_rn(acc, e);
                last = i;
                if (target < acc) { found = i; break; }
            }
            if (found != INT_MAX) atomicMin(&sm.found, found);
            if (last >= 0) atomicMax(&sm.last, last);
            __syncthreads();
            chosen = sm.found != INT_MAX ? sm.found : sm.last >= 0 ? sm.last : 0;
        }
    }

    /* 6. raw logprobs */
    int n_top = r.n_top < KILN_CUDA_MAX_TOP ? r.n_top : KILN_CUDA_MAX_TOP;
    if (n_top > V) n_top = V;
    if (!out_top_ids || !out_top_lp) n_top = 0;
    float lp = 0.0f;
    if ((r.want_logprob && out_logprob) || n_top > 0) {
        float lm = -INFINITY;
        for (int i = tid; i < V; i += NT) lm = fmaxf(lm, x[i]);
        float rmx = block_max(lm, &sm);
        double s = 0.0;
        for (int i = tid; i < V; i += NT) s = __dadd_rn(s, exp(__dsub_rn((double)x[i], (double)rmx)));
        double lse = log(block_sum_f64(s, &sm));
        lp = (float)__dsub_rn(__dsub_rn((double)x[chosen], (double)rmx), lse);
        if (n_top > 0) {
            u64 rem;
            if (tid == 0) sm.top_n = 0;
            __syncthreads();
            uint32_t K = radix_select(x, V, 0, (u64)n_top, 1.0f, 0.0f, 1.0, &rem, &sm);
            keep_threshold(NULL, x, V, K, rem, 1, &sm);
            if (tid == 0) {
                int n = sm.top_n < n_top ? sm.top_n : n_top;
                for (int a = 1; a < n; a++) { /* insertion sort: logit desc, id asc */
                    int id = sm.top_id[a];
                    float v = sm.top_v[a];
                    int b = a;
                    while (b > 0 && (sm.top_v[b - 1] < v || (sm.top_v[b - 1] == v && sm.top_id[b - 1] > id))) {
                        sm.top_id[b] = sm.top_id[b - 1];
                        sm.top_v[b] = sm.top_v[b - 1];
                        b--;
                    }
                    sm.top_id[b] = id;
                    sm.top_v[b] = v;
                }
                sm.top_n = n;
            }
            __syncthreads();
            if (tid < KILN_CUDA_MAX_TOP) {
                int ok = tid < sm.top_n;
                out_top_ids[(size_t)row * KILN_CUDA_MAX_TOP + tid] = ok ? sm.top_id[tid] : -1;
                out_top_lp[(size_t)row * KILN_CUDA_MAX_TOP + tid] =
                    ok ? (float)__dsub_rn(__dsub_rn((double)sm.top_v[tid], (double)rmx), lse) : 0.0f;
            }
        }
    }
    if (tid == 0) {
        out_tok[row] = chosen;
        if (out_logprob) out_logprob[row] = lp;
        if (cnt) counts[(size_t)r.slot * V + chosen] += 1;
    }
}

size_t kiln_cuda_sample_work_bytes(int max_rows, int V) { return (size_t)max_rows * V * sizeof(float); }

cudaError_t kiln_cuda_sample(const float *logits, float *work, int n, int V, const kiln_cuda_sample_row *rows,
                             const int32_t *bias_ids, const float *bias_values, const int32_t *supp_ids,
                             const uint32_t *masks, int mask_words, int32_t *counts, const uint8_t *in_prompt,
                             int32_t *out_tok, float *out_logprob, int32_t *out_top_ids, float *out_top_lp,
                             cudaStream_t st) {
    if (n <= 0) return cudaSuccess;
    if (V <= 0 || V > KILN_CUDA_SAMPLE_MAX_VOCAB || (masks && mask_words < (V + 31) / 32)) return cudaErrorInvalidValue;
    sample_kernel<<<n, NT, 0, st>>>(logits, work, V, rows, bias_ids, bias_values, supp_ids, masks, mask_words, counts, in_prompt,
                                    out_tok, out_logprob, out_top_ids, out_top_lp);
    KILN_CUDA_CHECK_LAUNCH();
}

/* one CTA per slot: zero its rows, then mark the prompt ids and count the output ids */
__global__ void penalty_load_kernel(int32_t *counts, uint8_t *in_prompt, int V, const int32_t *slots,
                                    const int32_t *tok_start, const int32_t *n_prompt, const int32_t *tokens) {
    int j = blockIdx.x;
    size_t base = (size_t)slots[j] * V;
    for (int i = threadIdx.x; i < V; i += blockDim.x) { counts[base + i] = 0; in_prompt[base + i] = 0; }
    __syncthreads();
    int a = tok_start[j], np = n_prompt[j], b = tok_start[j + 1];
    for (int i = a + threadIdx.x; i < b; i += blockDim.x) {
        int32_t t = tokens[i];
        if (t < 0 || t >= V) continue;
        if (i < a + np) in_prompt[base + t] = 1;
        else atomicAdd(&counts[base + t], 1);
    }
}

cudaError_t kiln_cuda_penalty_load(int32_t *counts, uint8_t *in_prompt, int V, const int32_t *slots,
                                   const int32_t *tok_start, const int32_t *n_prompt, const int32_t *tokens,
                                   int n_init, cudaStream_t st) {
    if (n_init <= 0) return cudaSuccess;
    penalty_load_kernel<<<n_init, 256, 0, st>>>(counts, in_prompt, V, slots, tok_start, n_prompt, tokens);
    KILN_CUDA_CHECK_LAUNCH();
}
