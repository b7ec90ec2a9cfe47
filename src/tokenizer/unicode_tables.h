/* unicode_tables.h: character classes for the tekken pre-tokenizer (tok_tekken_split.c), from
 * unicode_tables.c, which scripts/gen_unicode_tables.py generates from a pinned Unicode database
 * (the version the reference tokenizer's regex engine uses; kiln_uc_version names it).
 * One class per code point; the classes are exclusive. */
#ifndef KILN_UNICODE_TABLES_H
#define KILN_UNICODE_TABLES_H
#include <stdint.h>

enum {
    KILN_UC_OTHER = 0, /* punctuation, symbols, controls other than white space, unassigned */
    KILN_UC_UPPER,     /* Lu, Lt */
    KILN_UC_LOWER,     /* Ll */
    KILN_UC_LMO,       /* Lm, Lo */
    KILN_UC_MARK,      /* Mn, Mc, Me */
    KILN_UC_NUM,       /* Nd, Nl, No */
    KILN_UC_SPACE      /* White_Space: Zs, Zl, Zp, U+0009..000D, U+0085 */
};

extern const char kiln_uc_version[];
extern const uint16_t kiln_uc_stage1[0x110000 >> 7];
extern const uint8_t kiln_uc_stage2[];

/* class of code point cp (cp < 0x110000) */
static inline int kiln_uc_class(uint32_t cp) {
    uint8_t two = kiln_uc_stage2[(uint32_t)kiln_uc_stage1[cp >> 7] * 64 + ((cp & 127) >> 1)];
    return (cp & 1) ? two >> 4 : two & 15;
}
#endif
