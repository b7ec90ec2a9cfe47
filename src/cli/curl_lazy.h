/* curl_lazy.h: libcurl loaded on first use (dlopen), for `kiln bench serve` alone.
 *
 * Why: linked at start-up, libcurl brings ~25 shared libraries (TLS, Kerberos, LDAP, SSH,
 * HTTP/2, ...) whose relocations every kiln process paid before main, for a command few runs
 * (bench/startup.sh: the dynamic loader's symbol lookups were the largest single cost of a
 * whole tiny-model `kiln generate`). The headers still come from the build's libcurl (types,
 * option constants); the functions are looked up in libcurl.so.4 (the ABI's soname since 7.16)
 * when the command starts. */
#ifndef KILN_CLI_CURL_LAZY_H
#define KILN_CLI_CURL_LAZY_H
#include <stddef.h>
#define CURL_DISABLE_TYPECHECK /* the calls below go through pointers, not curl's checked macros */
#include <curl/curl.h>

typedef struct kiln_curl_api {
    CURLcode (*global_init)(long flags);
    void (*global_cleanup)(void);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *h, CURLoption opt, ...);
    CURLcode (*easy_perform)(CURL *h);
    CURLcode (*easy_getinfo)(CURL *h, CURLINFO info, ...);
    void (*easy_cleanup)(CURL *h);
    void (*easy_reset)(CURL *h);
    const char *(*easy_strerror)(CURLcode c);
    struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
    void (*slist_free_all)(struct curl_slist *l);
} kiln_curl_api;

/* The functions, loaded once (the library stays loaded until exit); NULL with a message in
 * msg[n] when libcurl or one of its functions cannot be found. Not thread-safe: call it before
 * starting threads. */
const kiln_curl_api *kiln_curl_load(char *msg, size_t n);

#endif
