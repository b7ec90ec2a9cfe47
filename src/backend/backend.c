/* backend.c: backend registry and the step-descriptor check every backend runs (I2, through
 * step/step_check.c).
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

int kiln_backend_check_step(const kiln_backend_config *c, int vocab, int min_rows, const kiln_step *s,
                            kiln_error *err) {
    kiln_step_limits lim = {
        .max_tokens = c->max_tokens,
        .max_seqs = c->max_seqs,
        .max_blocks_per_seq = c->max_blocks_per_seq,
        .max_model_len = c->max_model_len,
        .vocab = vocab,
        .kv = c->kv,
        .min_rows = min_rows,
        .max_logits_per_seq = c->max_logits_per_seq,
        .sample_rows = c->sample_rows,
        .masks = c->masks,
        .kv_window = c->kv_window,
    };
    return kiln_step_check(&lim, s, err);
}

const kiln_backend_ops *kiln_backend_find(const char *name) {
    if (!name || !*name || strcmp(name, "cpu") == 0) return kiln_backend_cpu_ops();
    if (strcmp(name, "cuda") == 0) return kiln_backend_cuda_ops();
    return NULL;
}

int kiln_backend_check_model(const kiln_backend_ops *ops, const kiln_model *m, kiln_error *err) {
    unsigned missing = kiln_model_features(m) & ~ops->features;
    if (!missing) return KILN_OK;
    char names[256];
    kiln_model_feature_names(m, missing, names, sizeof names);
    int cpu_runs = !(kiln_model_features(m) & ~kiln_backend_cpu_ops()->features);
    return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s backend: %s not supported yet (model %s)%s", ops->name, names,
                    m->path, cpu_runs && ops != kiln_backend_cpu_ops() ? "; --backend cpu runs it" : "");
}
