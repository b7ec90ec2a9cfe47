#include "util/json.h"
#include <pthread.h>
#include <stdlib.h>
#include "util/alloc.h"

static pthread_once_t k_json_once = PTHREAD_ONCE_INIT;
/* per thread: a jansson allocation failed since the last kiln_json_enter / kiln_json_oom */
static _Thread_local int t_json_failed;

static void *json_alloc(size_t n) {
    void *p = kiln_malloc(n);
    if (!p) t_json_failed = 1;
    return p;
}
static void json_release(void *p) { kiln_free(p); }

static void json_install(void) {
    json_malloc_t m = NULL;
    json_free_t f = NULL;
    json_get_alloc_funcs(&m, &f);
    if (m == malloc && f == free) json_set_alloc_funcs(json_alloc, json_release);
}

void kiln_json_enter(void) {
    pthread_once(&k_json_once, json_install);
    t_json_failed = 0;
}

int kiln_json_oom(const json_error_t *je) {
    int oom = t_json_failed || (je && json_error_code(je) == json_error_out_of_memory);
    t_json_failed = 0;
    return oom;
}
