#include <stdio.h>
#include "cli/cli.h"
int kiln_cmd_validate(int argc, char **argv) { (void)argc; (void)argv; return 2; }
