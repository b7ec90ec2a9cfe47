/* gguf_write.h: GGUF v3 writer (the inverse of gguf.h's reader).
 *
 * Metadata entries of every GGUF value type (scalars, strings, arrays of scalars or strings, or
 * any value copied verbatim from a file being read) are kept in order in memory; setting a key
 * that is already there replaces its value in place. Tensors are declared (name, type, shape)
 * up front; kiln_gguf_write then writes the header, the metadata, the tensor infos and, tensor
 * by tensor, the bytes a fill callback produces, each tensor at an offset aligned to 32 bytes
 * (general.alignment is not written: 32 is GGUF's default). Shapes are given outermost first
 * (kiln's / PyTorch's order) and stored reversed (GGML's ne[0] = row length).
 */
#ifndef KILN_FORMAT_GGUF_WRITE_H
#define KILN_FORMAT_GGUF_WRITE_H
#include <stddef.h>
#include <stdint.h>
#include "format/gguf.h"
#include "kiln.h"

typedef struct kiln_gguf_writer kiln_gguf_writer;

kiln_gguf_writer *kiln_gguf_writer_new(void); /* NULL when out of memory */
void kiln_gguf_writer_free(kiln_gguf_writer *w);

/* Metadata. Each returns 0, or -1 when out of memory or the arguments are invalid. */
int kiln_gguf_set_u8(kiln_gguf_writer *w, const char *key, uint8_t v);
int kiln_gguf_set_i8(kiln_gguf_writer *w, const char *key, int8_t v);
int kiln_gguf_set_u16(kiln_gguf_writer *w, const char *key, uint16_t v);
int kiln_gguf_set_i16(kiln_gguf_writer *w, const char *key, int16_t v);
int kiln_gguf_set_u32(kiln_gguf_writer *w, const char *key, uint32_t v);
int kiln_gguf_set_i32(kiln_gguf_writer *w, const char *key, int32_t v);
int kiln_gguf_set_u64(kiln_gguf_writer *w, const char *key, uint64_t v);
int kiln_gguf_set_i64(kiln_gguf_writer *w, const char *key, int64_t v);
int kiln_gguf_set_f32(kiln_gguf_writer *w, const char *key, float v);
int kiln_gguf_set_f64(kiln_gguf_writer *w, const char *key, double v);
int kiln_gguf_set_bool(kiln_gguf_writer *w, const char *key, int v);
int kiln_gguf_set_str(kiln_gguf_writer *w, const char *key, const char *v);
/* An array of n scalars of type et (not STRING or ARRAY), packed little-endian at elems. */
int kiln_gguf_set_arr(kiln_gguf_writer *w, const char *key, kiln_gguf_type et, const void *elems, uint64_t n);
/* An array of n strings; lens NULL: NUL-terminated. */
int kiln_gguf_set_arr_str(kiln_gguf_writer *w, const char *key, const char *const *s, const uint64_t *lens,
                          uint64_t n);
/* A value of type t given as its stored bytes (kiln_gguf_kv_raw). */
int kiln_gguf_set_raw(kiln_gguf_writer *w, const char *key, size_t key_len, kiln_gguf_type t, const void *raw,
                      uint64_t len);
/* 1 when key is set */
int kiln_gguf_has_key(const kiln_gguf_writer *w, const char *key);

/* Declare a tensor: its index (0, 1, ... in declaration order), or -1 (out of memory, a
 * duplicate name, a type GGUF cannot hold, ndim outside 1..4, or a row length that is not a
 * whole number of blocks). */
int kiln_gguf_add_tensor(kiln_gguf_writer *w, const char *name, kiln_dtype dt, int ndim, const int64_t *shape);
/* The GGML type id of a kiln dtype (-1: none). */
int kiln_gguf_ggml_type_of(kiln_dtype dt);

/* Fill dst[nbytes] with tensor i's bytes: KILN_OK or a status (with err set). */
typedef int (*kiln_gguf_fill_fn)(void *ctx, int i, void *dst, size_t nbytes, kiln_error *err);
/* Write the file (to path + ".tmp", renamed to path when complete): KILN_OK or a status. */
int kiln_gguf_write(kiln_gguf_writer *w, const char *path, kiln_gguf_fill_fn fill, void *ctx, kiln_error *err);

#endif
