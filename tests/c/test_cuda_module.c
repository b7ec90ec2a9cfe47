/* kiln-layer: none (runs the kiln binary of KILN_BIN) */
/* test_cuda_module.c: the CUDA backend is a module loaded only when asked for (no GPU needed).
 *   - `kiln --help` and a CPU `kiln generate` (stories260K, 4 tokens) load no CUDA library: the
 *     loader's LD_DEBUG=libs trace names libjansson (so an empty trace cannot pass) and never
 *     libcudart / libcublas / libcuda / libkiln_cuda;
 *   - `--backend cuda` on this GPU-less machine fails with a clear message and exit status 1,
 *     not a signal: beside the module, "no CUDA device"; from a copy of the binary in a folder
 *     without libkiln_cuda.so, "libkiln_cuda.so not found" (or "not available in this build");
 *   - every kiln_ symbol the module leaves undefined is exported by the kiln binary (nm -D),
 *     so the dlopen resolves them to the program's own (backend.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include "test.h"

static char g_out[1 << 20];

/* run cmd through sh with stderr joined; output into g_out; returns the wait status */
static int run(const char *cmd) {
    g_out[0] = 0;
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(g_out, 1, sizeof g_out - 1, p);
    g_out[n] = 0;
    return pclose(p);
}

static int has(const char *s) { return strstr(g_out, s) != NULL; }

/* the LD_DEBUG=libs trace of cmd: some library loaded, no CUDA one */
static void check_no_cuda(const char *what, const char *args, const char *bin) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "LD_DEBUG=libs '%s' %s 2>&1 >/dev/null", bin, args);
    int st = run(cmd);
    KT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: exit status %d: %.2000s", what, st, g_out);
    KT_CHECK(has("calling init:") && has("libjansson"), "%s: the loader trace shows no library loads (%zu bytes)",
             what, strlen(g_out));
    const char *bad[] = {"libcudart", "libcublas", "libcuda.so", "libkiln_cuda", "libnvrtc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        KT_CHECK(!has(bad[i]), "%s: %s was loaded", what, bad[i]);
}

int main(void) {
    const char *bin = getenv("KILN_BIN");
    if (!bin || !kt_exists(bin)) KT_SKIP("KILN_BIN not set or missing");
    const char *model = kt_shared("models/stories260K/stories260K.bin");
    const char *tok = kt_shared("models/stories260K/tok512.bin");
    if (!kt_exists(model) || !kt_exists(tok)) KT_SKIP("fixture %s missing", model);
    char args[3072], cmd[8192];

    check_no_cuda("kiln --help", "--help", bin);
    snprintf(args, sizeof args, "generate --model '%s' --tokenizer '%s' --prompt-ids 1 -n 4 --temperature 0", model,
             tok);
    check_no_cuda("kiln generate (cpu)", args, bin);

    /* the module beside the binary: loads, finds no GPU (or, on a GPU machine, runs) */
    char so[2048];
    snprintf(so, sizeof so, "%s", bin);
    char *slash = strrchr(so, '/');
    snprintf(slash ? slash + 1 : so, sizeof so - (size_t)(slash ? slash + 1 - so : 0), "libkiln_cuda.so");
    int built = kt_exists(so);
    snprintf(cmd, sizeof cmd, "'%s' %s --backend cuda 2>&1", bin, args);
    int st = run(cmd);
    KT_CHECK(WIFEXITED(st), "--backend cuda: killed by a signal (status %d): %.2000s", st, g_out);
    if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
        KT_CHECK(WEXITSTATUS(st) == 1, "--backend cuda: exit status %d", WEXITSTATUS(st));
        KT_CHECK(built ? has("no CUDA device") : has("backend 'cuda'"), "--backend cuda: unclear message: %.2000s",
                 g_out);
        printf("--backend cuda beside the module: %.300s\n", g_out);
    }

    /* the same binary without the module next to it (and none on the loader's path) */
    char dir[] = "/tmp/kiln_cuda_module_XXXXXX";
    KT_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    /* the loader's path without the folders that hold the module (a packed tree finds kiln's
     * other libraries through LD_LIBRARY_PATH, so it cannot simply be cleared) */
    char ldp[2048] = "";
    const char *cur = getenv("LD_LIBRARY_PATH");
    for (const char *p = cur ? cur : ""; *p;) {
        size_t n = strcspn(p, ":");
        char one[1024], probe[1100];
        if (n > 0 && n < sizeof one) {
            memcpy(one, p, n);
            one[n] = 0;
            snprintf(probe, sizeof probe, "%s/libkiln_cuda.so", one);
            if (!kt_exists(probe) && strlen(ldp) + n + 2 < sizeof ldp) {
                if (ldp[0]) strcat(ldp, ":");
                strcat(ldp, one);
            }
        }
        p += n;
        if (*p == ':') p++;
    }
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/kiln' && LD_LIBRARY_PATH='%s' '%s/kiln' %s --backend cuda 2>&1", bin, dir,
             ldp, dir, args);
    st = run(cmd);
    KT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "--backend cuda without the module: status %d: %.2000s", st,
             g_out);
    KT_CHECK(has(built ? "libkiln_cuda.so not found" : "not available in this build"),
             "--backend cuda without the module: unclear message: %.2000s", g_out);
    printf("--backend cuda without the module: %.400s\n", g_out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)run(cmd);

    /* the module's undefined kiln_ symbols against the binary's exports */
    if (built && run("nm --version > /dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd,
                 "nm -D --defined-only '%s' | awk '{print $3}' | sort -u > /tmp/kiln_exports.$$ && "
                 "nm -D --undefined-only '%s' | awk '{print $2}' | grep '^kiln_' | sort -u | "
                 "comm -23 - /tmp/kiln_exports.$$; echo \"n=$(nm -D --undefined-only '%s' | grep -c ' kiln_')\"; "
                 "rm -f /tmp/kiln_exports.$$",
                 bin, so, so);
        st = run(cmd);
        /* the output is the missing names (none), then the count of undefined kiln_ symbols */
        KT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strncmp(g_out, "n=", 2) == 0 && atoi(g_out + 2) > 0,
                 "symbols libkiln_cuda.so needs that kiln does not export: %.2000s", g_out);
        printf("libkiln_cuda.so: %d undefined kiln_ symbols, all exported by kiln\n", atoi(g_out + 2));
        snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s' | awk '$2 == \"T\" {print $3}'", so);
        st = run(cmd);
        KT_CHECK(strcmp(g_out, "kiln_backend_cuda_entry\n") == 0, "libkiln_cuda.so exports more than its entry: %.500s",
                 g_out);
    }
    return kt_done();
}
