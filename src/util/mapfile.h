/* mapfile.h: read-only memory maps of checkpoint files (weights are used in place). */
#ifndef KILN_UTIL_MAPFILE_H
#define KILN_UTIL_MAPFILE_H
#include <stddef.h>
#include "kiln.h"

typedef struct kiln_mapfile {
    char *path;
    const unsigned char *data;
    size_t size;
} kiln_mapfile;

int kiln_mapfile_open(kiln_mapfile *m, const char *path, kiln_error *err);
void kiln_mapfile_close(kiln_mapfile *m);
/* Whole file read into a NUL-terminated heap buffer (small text files: config.json ...). */
int kiln_read_file(const char *path, char **data, size_t *size, kiln_error *err);
int kiln_file_exists(const char *path);
int kiln_is_dir(const char *path);
/* path joined: dst = a + "/" + b; returns 0, or -1 when it does not fit. */
int kiln_path_join(char *dst, size_t cap, const char *a, const char *b);

#endif
