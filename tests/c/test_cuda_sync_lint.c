/* kiln-layer: none (links only this layer and those below it) */
/* test_cuda_sync_lint.c: runs scripts/check_cuda_sync.sh (invariant I1: every synchronising
 * CUDA call of src/backend/cuda goes through sync.c) and checks that the script can fail: a
 * planted file with a direct cudaStreamSynchronize call in a temporary folder must be refused.
 * Needs no GPU (CI). */
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "test.h"

static int run(const char *cmd) {
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void) {
    if (!kt_exists("scripts/check_cuda_sync.sh")) KT_SKIP("scripts/check_cuda_sync.sh not found (run from the repo root)");
    if (!kt_exists("src/backend/cuda")) KT_SKIP("no src/backend/cuda in this checkout");
    KT_CHECK(run("bash scripts/check_cuda_sync.sh src/backend/cuda") == 0, "direct synchronising CUDA calls found");
    char dir[] = "/tmp/kiln_sync_lint_XXXXXX";
    if (!mkdtemp(dir)) KT_SKIP("mkdtemp failed");
    char path[256], cmd[512];
    snprintf(path, sizeof path, "%s/bad.cu", dir);
    FILE *f = fopen(path, "w");
    KT_CHECK(f != NULL, "cannot write %s", path);
    if (f) {
        fputs("void f(void *s) { cudaStreamSynchronize (s); }\n", f);
        fclose(f);
        snprintf(cmd, sizeof cmd, "bash scripts/check_cuda_sync.sh %s 2>/dev/null", dir);
        KT_CHECK(run(cmd) == 1, "the lint accepted a direct cudaStreamSynchronize");
        /* the wrapper file itself is allowed */
        char ok[256];
        snprintf(ok, sizeof ok, "%s/sync.c", dir);
        rename(path, ok);
        KT_CHECK(run(cmd) == 0, "the lint refused sync.c");
        remove(ok);
    }
    rmdir(dir);
    return kt_done();
}
