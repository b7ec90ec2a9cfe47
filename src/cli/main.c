/* kiln command line: placeholder until the commands land.
 * TEMPORARY (tokenizer branch): dispatches `kiln tokenize` for the tokenizer tests; the lead
 * replaces this file with the real dispatcher. */
#include <stdio.h>
#include <string.h>
#include "kiln.h"
int kiln_cmd_tokenize(int argc, char **argv);
int kiln_cmd_serve(int argc, char **argv); /* TEMPORARY dispatch (server branch) */
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "tokenize") == 0) return kiln_cmd_tokenize(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "serve") == 0) return kiln_cmd_serve(argc - 1, argv + 1);
    printf("kiln %s\n", KILN_VERSION);
    return 0;
}
