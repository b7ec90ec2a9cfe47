#include "util/mapfile.h"
#include "util/alloc.h"
#include "util/error.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int kiln_mapfile_open(kiln_mapfile *m, const char *path, kiln_error *err) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return KILN_ERR(err, KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return KILN_ERR(err, KILN_ERR_IO, "%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return KILN_ERR(err, KILN_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
        }
        m->data = p;
    }
    close(fd);
    m->path = kiln_strdup(path);
    if (!m->path) {
        kiln_mapfile_close(m);
        return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    }
    return KILN_OK;
}

void kiln_mapfile_close(kiln_mapfile *m) {
    if (!m) return;
    if (m->data && m->size) munmap((void *)m->data, m->size);
    kiln_free(m->path);
    memset(m, 0, sizeof *m);
}

int kiln_read_file(const char *path, char **data, size_t *size, kiln_error *err) {
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return KILN_ERR(err, KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = kiln_malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = kiln_realloc(buf, cap * 2);
            if (!nb) { kiln_free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    if (bad) {
        kiln_free(buf);
        return KILN_ERR(err, KILN_ERR_IO, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    if (size) *size = n;
    return KILN_OK;
}

int kiln_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
int kiln_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
int kiln_path_join(char *dst, size_t cap, const char *a, const char *b) {
    int n = snprintf(dst, cap, "%s/%s", a, b);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}
