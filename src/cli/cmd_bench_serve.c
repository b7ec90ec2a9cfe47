/* placeholder while written */
#include <stdio.h>
#include "cli/cli.h"
int kiln_cmd_bench_serve(int argc, char **argv) { (void)argc; (void)argv; return 2; }
