/* kiln command line: placeholder until the commands land. */
#include <stdio.h>
#include "kiln.h"
int main(int argc, char **argv) {
    (void)argc; (void)argv;
    printf("kiln %s\n", KILN_VERSION);
    return 0;
}
