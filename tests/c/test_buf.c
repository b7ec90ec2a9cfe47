/* kiln-layer: util (links only this layer and those below it) */
/* test_buf.c: the growable byte buffer: appends across many doublings against a plain copy,
 * printf appends short and long, take / clear, and an out-of-memory append that leaves the
 * buffer as it was (through the allocation hook's fault injection). */
#include <string.h>
#include "test.h"
#include "util/alloc.h"
#include "util/buf.h"

int main(void) {
    kiln_buf b = {0};
    static char want[100000];
    size_t n = 0;
    for (int i = 0; n + 40 < sizeof want; i++) {
        char piece[40];
        int k = snprintf(piece, sizeof piece, "%d:", i * 7919);
        KT_CHECK(kiln_buf_add(&b, piece, (size_t)k) == 0, "add");
        memcpy(want + n, piece, (size_t)k);
        n += (size_t)k;
    }
    KT_CHECK(b.len == n && memcmp(b.p, want, n) == 0 && b.p[n] == 0, "content after %zu bytes", n);
    KT_CHECK(b.cap >= b.len + 1, "capacity");
    kiln_buf_clear(&b);
    KT_CHECK(b.len == 0 && b.p[0] == 0, "clear");
    KT_CHECK(kiln_buf_addf(&b, "%s-%05d", "x", 42) == 0 && strcmp(b.p, "x-00042") == 0, "addf short: %s", b.p);
    char big[1000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    KT_CHECK(kiln_buf_addf(&b, "[%s]", big) == 0 && b.len == 7 + 1000 + 1 && b.p[8] == 'a' && b.p[b.len - 1] == ']',
             "addf longer than the stack buffer");
    KT_CHECK(kiln_buf_addc(&b, 'z') == 0 && kiln_buf_adds(&b, "end") == 0 && strcmp(b.p + b.len - 4, "zend") == 0,
             "addc / adds");
    /* out of memory: the failed append changes nothing */
    size_t len0 = b.len, cap0 = b.cap;
    kiln_alloc_fail_after(0);
    char *huge = NULL;
    int rc = kiln_buf_reserve(&b, cap0 * 4);
    kiln_alloc_fail_after(-1);
    KT_CHECK(rc == -1 && b.len == len0 && b.cap == cap0 && b.p[len0] == 0, "OOM leaves the buffer intact");
    (void)huge;
    size_t tl;
    char *t = kiln_buf_take(&b, &tl);
    KT_CHECK(t && tl == len0 && t[tl] == 0 && b.p == NULL && b.len == 0, "take");
    kiln_free(t);
    kiln_buf e = {0};
    t = kiln_buf_take(&e, &tl);
    KT_CHECK(t && tl == 0 && t[0] == 0, "take of an empty buffer gives an empty string");
    kiln_free(t);
    kiln_buf_free(&b);
    return kt_done();
}
