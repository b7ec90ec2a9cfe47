/* cmd_bench.c: placeholder, replaced below. */
#include <stdio.h>
#include "cli/cli.h"
int kiln_cmd_bench(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "kiln bench: not yet\n"); return 2; }
