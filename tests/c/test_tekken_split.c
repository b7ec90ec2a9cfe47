/* kiln-layer: tokenizer (links only this layer and those below it) */
/* test_tekken_split.c: the hand-written tekken pre-tokenizer (tok_tekken_split.c) cuts text
 * exactly where PCRE2 running the published tekken pattern does, on random strings made of
 * characters whose classes did not change between PCRE2's Unicode (14.0 on Debian 12) and the
 * generated tables (16.0): every class of the pattern (Lu, Lt, Ll, Lm, Lo, M, N, white space incl.
 * \r \n \v \f U+0085 U+00A0 U+2028, punctuation, '/'), in runs and alone, so every alternative
 * and its backtracking is walked. PCRE2 is an oracle nobody here wrote; the characters added in
 * Unicode 15/16 are checked against mistral-common in tests/py/test_tekken_unicode.py. Also the
 * table's classes for a few characters whose Unicode version matters. */
#include "test.h"
#include "tokenizer/tok_hf.h"
#include "tokenizer/tok_tekken_split.h"
#include "tokenizer/unicode_tables.h"
#include "util/error.h"

static const char *POOL[] = {
    "a", "z", "e", "A", "Z", "\xc7\x85" /* U+01C5 Lt */, "\xca\xb0" /* U+02B0 Lm */,
    "\xe4\xb8\xad" /* U+4E2D Lo */, "\xcc\x81" /* U+0301 Mn */, "\xe0\xa4\xbe" /* U+093E Mc */,
    "\xc3\xa9" /* U+00E9 Ll */, "\xc3\x89" /* U+00C9 Lu */, "0", "7", "\xc2\xbd" /* U+00BD No */,
    "\xe2\x85\xa0" /* U+2160 Nl */, " ", " ", " ", "\t", "\n", "\r", "\v", "\f", "\xc2\x85",
    "\xc2\xa0", "\xe2\x80\xa8", "\xe3\x80\x80", ".", ",", "!", "/", "'", "-", "(", "\xe2\x80\x9c",
    "\xf0\x9f\x98\x80" /* U+1F600 So */, "\xe2\x80\x8b" /* U+200B Cf, not space */, "_", "$",
};
#define NPOOL (sizeof POOL / sizeof *POOL)

int main(void) {
    kiln_error err = {0};
    pcre2_code *re = hf_regex_compile(kiln_tekken_pattern, strlen(kiln_tekken_pattern), "test", &err);
    KT_CHECK(re != NULL, "the tekken pattern compiles in PCRE2: %s", err.msg);
    if (!re) return kt_done();
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    unsigned long long rng = 0x5eed7e44e11ull;
    char s[256];
    int mismatches = 0, pieces = 0;
    for (int iter = 0; iter < 200000 && mismatches < 10; iter++) {
        size_t n = 0;
        int len = 1 + (int)(kt_rand_u64(&rng) % 12);
        /* a small alphabet per string makes runs (and long backtracking) likely */
        int sub[4];
        for (int j = 0; j < 4; j++) sub[j] = (int)(kt_rand_u64(&rng) % NPOOL);
        for (int j = 0; j < len; j++) {
            const char *c = POOL[(kt_rand_u64(&rng) % 3) ? (unsigned long long)sub[kt_rand_u64(&rng) % 4] : kt_rand_u64(&rng) % NPOOL];
            size_t l = strlen(c);
            memcpy(s + n, c, l);
            n += l;
        }
        for (size_t pos = 0; pos < n;) {
            int r = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t got = kiln_tekken_split_next(s, n, pos);
            pieces++;
            if (r < 0 || ov[0] != pos || ov[1] != got) {
                mismatches++;
                fprintf(stderr, "  at %zu of \"", pos);
                for (size_t j = 0; j < n; j++) fprintf(stderr, "\\x%02x", (unsigned char)s[j]);
                fprintf(stderr, "\": pcre2 [%zu, %zu), kiln ends at %zu\n", r < 0 ? 0 : (size_t)ov[0],
                        r < 0 ? 0 : (size_t)ov[1], got);
                break;
            }
            pos = got;
        }
    }
    KT_CHECK(mismatches == 0, "%d strings cut differently from PCRE2 (%d pieces compared)", mismatches, pieces);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    /* the tables: Unicode 16.0, with characters from 15.0 / 16.0 in their classes */
    KT_CHECK(strcmp(kiln_uc_version, "16.0.0") == 0, "tables from Unicode %s", kiln_uc_version);
    KT_CHECK(kiln_uc_class(0x11F50) == KILN_UC_NUM, "U+11F50 KAWI DIGIT ZERO (15.0) is N");
    KT_CHECK(kiln_uc_class(0x11F04) == KILN_UC_LMO, "U+11F04 KAWI LETTER A (15.0) is Lo");
    KT_CHECK(kiln_uc_class(0x2EBF0) == KILN_UC_LMO, "U+2EBF0 CJK ext. I (15.1) is Lo");
    KT_CHECK(kiln_uc_class(0x10D40) == KILN_UC_NUM, "U+10D40 GARAY DIGIT ZERO (16.0) is N");
    KT_CHECK(kiln_uc_class(0x105C0) == KILN_UC_LMO, "U+105C0 TODHRI LETTER A (16.0) is Lo");
    KT_CHECK(kiln_uc_class(0x11DE0) == KILN_UC_OTHER, "U+11DE0 (a 17.0 digit) is unassigned in 16.0");
    KT_CHECK(kiln_uc_class(0x1C) == KILN_UC_OTHER && kiln_uc_class(0x85) == KILN_UC_SPACE &&
                 kiln_uc_class(0x200B) == KILN_UC_OTHER && kiln_uc_class(0x3000) == KILN_UC_SPACE,
             "White_Space, not Python's isspace");
    KT_CHECK(kiln_uc_class(0x10FFFF) == KILN_UC_OTHER && kiln_uc_class(0x1C5) == KILN_UC_UPPER,
             "edges");
    printf("%d pieces compared with PCRE2\n", pieces);
    return kt_done();
}
