/* curl_lazy.c: libcurl on first use (curl_lazy.h). */
#ifdef KILN_HAVE_CURL
#include "cli/curl_lazy.h"
#include <dlfcn.h>
#include <stdio.h>

static kiln_curl_api g_api;
static int g_loaded;

/* a function pointer from a symbol: dlsym returns void *, stored through *(void **)& (the
 * idiom of POSIX's dlsym page; ISO C has no conversion between object and function pointers) */
#define SYM(field, name)                                                                                  \
    do {                                                                                                  \
        void *p_ = dlsym(lib, name);                                                                      \
        if (!p_) {                                                                                        \
            snprintf(msg, n, "libcurl: no %s in %s", name, soname);                                       \
            return NULL;                                                                                  \
        }                                                                                                 \
        *(void **)(&api.field) = p_;                                                                      \
    } while (0)

const kiln_curl_api *kiln_curl_load(char *msg, size_t n) {
    if (g_loaded) return &g_api;
    static const char *const names[] = {"libcurl.so.4", "libcurl.so"};
    const char *soname = NULL;
    void *lib = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++) lib = dlopen(soname = names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(msg, n, "cannot load libcurl (libcurl.so.4): %s", dlerror());
        return NULL;
    }
    kiln_curl_api api;
    SYM(global_init, "curl_global_init");
    SYM(global_cleanup, "curl_global_cleanup");
    SYM(easy_init, "curl_easy_init");
    SYM(easy_setopt, "curl_easy_setopt");
    SYM(easy_perform, "curl_easy_perform");
    SYM(easy_getinfo, "curl_easy_getinfo");
    SYM(easy_cleanup, "curl_easy_cleanup");
    SYM(easy_reset, "curl_easy_reset");
    SYM(easy_strerror, "curl_easy_strerror");
    SYM(slist_append, "curl_slist_append");
    SYM(slist_free_all, "curl_slist_free_all");
    g_api = api;
    g_loaded = 1;
    return &g_api;
}
#else
typedef int kiln_curl_lazy_unused; /* (an empty translation unit is not ISO C) */
#endif
