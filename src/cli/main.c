/* kiln command line: placeholder until the commands land.
 * TEMPORARY (gguf branch): dispatches `gguf-dump` to kiln_cmd_gguf for testing; the lead wires
 * the real dispatch. */
#include <stdio.h>
#include <string.h>
#include "kiln.h"
int kiln_cmd_gguf(int argc, char **argv);
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "gguf-dump") == 0) return kiln_cmd_gguf(argc - 1, argv + 1);
    printf("kiln %s\n", KILN_VERSION);
    return 0;
}
