/* backend.c: backend registry and the step-descriptor check every backend runs (I2).
 *
 * The CUDA backend is a loadable module, libkiln_cuda.so, opened on the first request for it
 * (kiln_backend_cuda_ops), so that `kiln --help` or a CPU run never maps libcudart / libcublas /
 * libcuda, and one kiln binary runs on machines without CUDA (asking for cuda then fails with
 * the reason). Search: the folder of the running program (/proc/self/exe: the build folder, a
 * pack), then the plain name through the loader's path (LD_LIBRARY_PATH, RUNPATH, ld.so.cache).
 * It exports one symbol, kiln_backend_cuda_entry(KILN_BACKEND_ABI) -> its ops table, everything
 * else hidden. It carries no copy of util / format / model / contract / backend: their symbols
 * (kiln_calloc, kiln_error_set, kiln_backend_check_step, ...) resolve at dlopen (RTLD_NOW) to
 * the program's own, which exports them (CMakeLists.txt: kiln_host_exports, -rdynamic with those
 * layers linked whole), so the allocation counter and the log level stay one per process. A
 * program that links the CUDA objects statically (the GPU tests: kiln_cuda_static) defines
 * kiln_backend_cuda_entry itself; the weak reference below then finds it and nothing is loaded.
 */
#include "backend/backend.h"
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "util/error.h"

#define CUDA_MODULE "libkiln_cuda.so"

/* defined when the program links the CUDA backend statically; NULL otherwise */
extern const kiln_backend_ops *kiln_backend_cuda_entry(int abi_version) __attribute__((weak));

/* The loaded module, once per process. Why a static: a dlopen handle and the code it maps are
 * process-wide by nature (the loader keeps one copy whatever we do), the state is written once
 * under pthread_once and only read afterwards, so two engines in one process share it safely;
 * the handle is never closed (the ops table and the CUDA runtime's own state live until exit). */
typedef struct cuda_module {
    const kiln_backend_ops *ops;
    void *handle;
    char why[1024]; /* when ops is NULL: the reason, a full sentence */
} cuda_module;
static cuda_module k_cuda_module;
static pthread_once_t k_cuda_once = PTHREAD_ONCE_INIT;

#ifdef KILN_HAVE_CUDA
/* dlopen path; on failure append the reason (with the path) to tried */
static const kiln_backend_ops *try_module(const char *path, char *tried, size_t n, int *not_found, void **handle) {
    size_t len = strlen(tried);
    const char *sep = len ? "; " : "";
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        if (!e || !strstr(e, "No such file")) *not_found = 0;
        snprintf(tried + len, n - len, "%s%s", sep, e ? e : "dlopen failed"); /* dlerror names the path */
        return NULL;
    }
    *not_found = 0;
    const kiln_backend_ops *(*entry)(int) = NULL;
    *(void **)&entry = dlsym(h, "kiln_backend_cuda_entry");
    const kiln_backend_ops *ops = entry ? entry(KILN_BACKEND_ABI) : NULL;
    if (!ops) {
        snprintf(tried + len, n - len, "%s%s: %s", sep, path,
                 entry ? "built for another kiln (backend ABI mismatch)" : "no kiln_backend_cuda_entry");
        dlclose(h);
        return NULL;
    }
    *handle = h;
    return ops;
}
#endif

static void cuda_module_load(void) {
    cuda_module *m = &k_cuda_module;
#ifndef KILN_HAVE_CUDA
    snprintf(m->why, sizeof m->why, "backend 'cuda' is not available in this build (cpu)");
#else
    if (kiln_backend_cuda_entry) { /* linked in statically */
        m->ops = kiln_backend_cuda_entry(KILN_BACKEND_ABI);
        if (!m->ops) snprintf(m->why, sizeof m->why, "backend 'cuda': backend ABI mismatch");
        return;
    }
    char tried[768] = "", path[PATH_MAX];
    int not_found = 1;
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n > 0) {
        path[n] = 0;
        char *slash = strrchr(path, '/');
        if (slash && (size_t)(slash + 1 - path) + sizeof CUDA_MODULE <= sizeof path) {
            memcpy(slash + 1, CUDA_MODULE, sizeof CUDA_MODULE);
            m->ops = try_module(path, tried, sizeof tried, &not_found, &m->handle);
        }
    }
    if (!m->ops) m->ops = try_module(CUDA_MODULE, tried, sizeof tried, &not_found, &m->handle);
    if (!m->ops)
        snprintf(m->why, sizeof m->why, "backend 'cuda': %s %s (%s)", CUDA_MODULE,
                 not_found ? "not found" : "could not be loaded", tried);
#endif
}

const kiln_backend_ops *kiln_backend_cuda_ops(void) {
    pthread_once(&k_cuda_once, cuda_module_load);
    return k_cuda_module.ops;
}

void kiln_backend_unavailable(const char *name, char *buf, size_t n) {
    if (!n) return;
    buf[0] = 0;
    if (name && strcmp(name, "cuda") == 0) {
        if (!kiln_backend_cuda_ops()) snprintf(buf, n, "%s", k_cuda_module.why);
    } else if (name && *name && strcmp(name, "cpu") != 0) {
#ifdef KILN_HAVE_CUDA
        snprintf(buf, n, "backend '%s' is not available in this build (cpu, cuda)", name);
#else
        snprintf(buf, n, "backend '%s' is not available in this build (cpu)", name);
#endif
    }
}

/* A device_sample step's sampling parameters and penalty-table loads, as the backends' samplers
 * read them (cpu_sample.c, the CUDA sampling descriptor). */
static int check_sampling(const kiln_backend_config *c, int vocab, const kiln_step *s, kiln_error *err) {
    const int64_t max_bias = (int64_t)c->max_seqs * KILN_MAX_LOGIT_BIAS;
    const int64_t max_supp = (int64_t)c->max_seqs * (KILN_MAX_EOS + KILN_MAX_STOP_IDS);
    for (int i = 0; i < s->n_seqs; i++) {
        if (!s->seq_logits[i]) continue;
        const kiln_step_sampling *ss = &s->sampling[i];
        if (ss->pen_slot < -1 || ss->pen_slot >= c->max_seqs || ss->n_logprobs < 0 ||
            ss->n_logprobs > KILN_STEP_MAX_TOP || ss->n_bias < 0 || ss->bias_start < 0 ||
            ss->bias_start + (int64_t)ss->n_bias > max_bias || ss->n_supp < 0 || ss->supp_start < 0 ||
            ss->supp_start + (int64_t)ss->n_supp > max_supp)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d sampling slot %d / top %d / lists out of range", i,
                            ss->pen_slot, ss->n_logprobs);
    }
    if (s->n_pen < 0 || s->n_pen > c->max_seqs)
        return KILN_ERR(err, KILN_ERR_RANGE, "step: %d penalty loads", s->n_pen);
    for (int k = 0; k < s->n_pen; k++) {
        int a = s->pen_start[k], b = s->pen_start[k + 1], np = s->pen_n_prompt[k];
        if (s->pen_slot[k] < 0 || s->pen_slot[k] >= c->max_seqs)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: penalty slot %d out of range", s->pen_slot[k]);
        if (a < 0 || b < a || b > s->cap_pen_tokens || np < 0 || np > b - a)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: penalty load %d spans [%d, %d) with %d prompt ids", k, a, b, np);
        for (int i = a; i < b; i++)
            if (s->pen_tokens[i] < 0 || s->pen_tokens[i] >= vocab)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: penalty token %d outside vocab", s->pen_tokens[i]);
    }
    return KILN_OK;
}

int kiln_backend_check_step(const kiln_backend_config *c, int vocab, int min_rows, const kiln_step *s,
                            kiln_error *err) {
    const kiln_kv_layout *L = &c->kv;
    if (s->n_tokens < min_rows || s->n_tokens > c->max_tokens || s->n_seqs < min_rows || s->n_seqs > c->max_seqs ||
        s->max_blocks_per_seq > c->max_blocks_per_seq)
        return KILN_ERR(err, KILN_ERR_RANGE, "step: %d tokens / %d seqs beyond capacity %d / %d", s->n_tokens,
                        s->n_seqs, c->max_tokens, c->max_seqs);
    if (s->seq_q_start[0] != 0 || s->seq_q_start[s->n_seqs] != s->n_tokens)
        return KILN_ERR(err, KILN_ERR_RANGE, "step: query starts do not cover the %d rows", s->n_tokens);
    if (s->n_prev < 0 || s->n_prev > s->n_tokens)
        return KILN_ERR(err, KILN_ERR_RANGE, "step: %d rows from the previous step, %d rows", s->n_prev, s->n_tokens);
    if (s->n_prev > 0) {
        if (!s->device_sample)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: input tokens from the previous step need device sampling");
        int np = 0;
        for (int t = 0; t < s->n_tokens; t++) {
            if (s->prev_row[t] < -1 || s->prev_row[t] >= c->max_seqs)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: row %d takes previous logits row %d outside [-1, %d)", t,
                                s->prev_row[t], c->max_seqs);
            np += s->prev_row[t] >= 0;
        }
        if (np != s->n_prev)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: n_prev %d but %d rows take a previous token", s->n_prev, np);
    }
    int64_t n_slots = (int64_t)L->n_blocks * L->block_size;
    for (int i = 0; i < s->n_seqs; i++) {
        int ctx = s->seq_ctx_len[i];
        if (s->seq_q_start[i + 1] < s->seq_q_start[i])
            return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d has a negative row count", i);
        if (ctx < 1 || ctx > c->max_model_len || (ctx + L->block_size - 1) / L->block_size > s->max_blocks_per_seq)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d context %d out of range", i, ctx);
        const int32_t *bt = s->block_table + (size_t)i * s->max_blocks_per_seq;
        for (int b = 0; b < (ctx + L->block_size - 1) / L->block_size; b++)
            if (bt[b] < 1 || bt[b] >= L->n_blocks)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d block %d id %d outside [1, %d)", i, b, bt[b],
                                L->n_blocks);
        for (int t = s->seq_q_start[i]; t < s->seq_q_start[i + 1]; t++) {
            if (s->positions[t] < 0 || s->positions[t] >= ctx)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: row %d position %d outside context %d", t, s->positions[t],
                                ctx);
            if (s->token_ids[t] < 0 || s->token_ids[t] >= vocab)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: row %d token id %d outside vocab", t, s->token_ids[t]);
            if (s->slot_mapping[t] < 0 || s->slot_mapping[t] >= n_slots)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: row %d KV slot %lld outside the pool", t,
                                (long long)s->slot_mapping[t]);
        }
    }
    return s->device_sample ? check_sampling(c, vocab, s, err) : KILN_OK;
}

const kiln_backend_ops *kiln_backend_find(const char *name) {
    if (!name || !*name || strcmp(name, "cpu") == 0) return kiln_backend_cpu_ops();
    if (strcmp(name, "cuda") == 0) return kiln_backend_cuda_ops();
    return NULL;
}
