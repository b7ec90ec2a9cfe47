/* kiln-layer: none (links only this layer and those below it) */
/* test_layers.c: runs scripts/check_layers.sh over src/ (the layering rule: no include from a
 * lower layer to a higher one, no getenv outside src/cli) and checks that the script can fail:
 * planted files with an upward include and with a getenv in a temporary tree must be refused. */
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "test.h"

static int run(const char *cmd) {
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int plant(const char *dir, const char *sub, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    fclose(f);
    return 0;
}

int main(void) {
    if (!kt_exists("scripts/check_layers.sh")) KT_SKIP("scripts/check_layers.sh not found (run from the repo root)");
    KT_CHECK(run("bash scripts/check_layers.sh src") == 0, "src/ breaks the layering rule (see the output above)");
    char dir[] = "/tmp/kiln_layers_XXXXXX";
    if (!mkdtemp(dir)) KT_SKIP("mkdtemp failed");
    char sub[600], cmd[700];
    const char *folders[] = {"backend", "engine", "cli"};
    for (int i = 0; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, folders[i]);
        mkdir(sub, 0700);
    }
    snprintf(cmd, sizeof cmd, "bash scripts/check_layers.sh %s > /dev/null", dir);
    KT_CHECK(plant(dir, "engine/ok.c", "#include \"backend/backend.h\"\n#include \"kiln.h\"\n") == 0, "write");
    KT_CHECK(run(cmd) == 0, "the lint refused a downward include");
    KT_CHECK(plant(dir, "backend/bad.h", "#include \"engine/engine_internal.h\"\n") == 0, "write");
    KT_CHECK(run(cmd) == 1, "the lint accepted backend including engine");
    snprintf(sub, sizeof sub, "%s/backend/bad.h", dir);
    remove(sub);
    KT_CHECK(plant(dir, "engine/env.c", "int f(void) { return getenv (\"X\") != 0; }\n") == 0, "write");
    KT_CHECK(run(cmd) == 1, "the lint accepted a getenv in engine/");
    snprintf(sub, sizeof sub, "%s/engine/env.c", dir);
    remove(sub);
    KT_CHECK(plant(dir, "cli/env.c", "int f(void) { return getenv(\"X\") != 0; }\n") == 0, "write");
    KT_CHECK(run(cmd) == 0, "the lint refused a getenv in cli/");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run(cmd);
    return kt_done();
}
