/* gguf.h: GGUF v2/v3 reader (header, typed metadata, tensor infos, aligned data; mmapped).
 * Every length and offset is checked against the file size: malformed files are refused with
 * a message naming the file and the problem. */
#ifndef KILN_FORMAT_GGUF_H
#define KILN_FORMAT_GGUF_H
#include <stddef.h>
#include <stdint.h>
#include "kiln.h"
#include "format/dtype.h"
#include "util/mapfile.h"

typedef enum kiln_gguf_type {
    KILN_GGUF_UINT8 = 0, KILN_GGUF_INT8 = 1, KILN_GGUF_UINT16 = 2, KILN_GGUF_INT16 = 3,
    KILN_GGUF_UINT32 = 4, KILN_GGUF_INT32 = 5, KILN_GGUF_FLOAT32 = 6, KILN_GGUF_BOOL = 7,
    KILN_GGUF_STRING = 8, KILN_GGUF_ARRAY = 9, KILN_GGUF_UINT64 = 10, KILN_GGUF_INT64 = 11,
    KILN_GGUF_FLOAT64 = 12
} kiln_gguf_type;

typedef struct kiln_gguf kiln_gguf;

typedef struct kiln_gguf_str { const char *ptr; uint64_t len; } kiln_gguf_str; /* not NUL-terminated */

typedef struct kiln_gguf_tensor_info {
    kiln_gguf_str name;
    uint32_t ggml_type;     /* raw GGML type id */
    kiln_dtype dtype;       /* mapped; KILN_DT_COUNT when unsupported */
    uint32_t n_dims;
    uint64_t ne[4];         /* GGML order: ne[0] is the innermost (row length) */
    const void *data;       /* into the mapping */
    size_t nbytes;
} kiln_gguf_tensor_info;

int kiln_gguf_open(kiln_gguf **out, const char *path, kiln_error *err);
void kiln_gguf_close(kiln_gguf *g);
uint32_t kiln_gguf_version(const kiln_gguf *g);
const char *kiln_gguf_path(const kiln_gguf *g);
/* The file's read-only mapping (the tensors' data lie in it). */
const kiln_mapfile *kiln_gguf_mapping(const kiln_gguf *g);

/* Metadata lookup by key; -1 when absent. */
int64_t kiln_gguf_find_key(const kiln_gguf *g, const char *key);
kiln_gguf_type kiln_gguf_kv_type(const kiln_gguf *g, int64_t i);
/* Iteration over metadata (dumps): count and the i-th key. */
uint64_t kiln_gguf_n_kv(const kiln_gguf *g);
kiln_gguf_str kiln_gguf_kv_key(const kiln_gguf *g, int64_t i);
/* The i-th value's bytes as stored in the file (after its u32 type; arrays: element type, count
 * and elements), *len bytes: what a writer copies to keep an entry verbatim. */
const void *kiln_gguf_kv_raw(const kiln_gguf *g, int64_t i, uint64_t *len);
/* Element type of an array entry (KILN_GGUF_ARRAY for nested arrays, whose elements are
 * skipped: none of the getters reads them). */
kiln_gguf_type kiln_gguf_kv_arr_type(const kiln_gguf *g, int64_t i, uint64_t *n);
/* Scalars (converted from any integer/float type); return 0 on success, -1 if absent/wrong type. */
int kiln_gguf_get_u64(const kiln_gguf *g, const char *key, uint64_t *v);
int kiln_gguf_get_i64(const kiln_gguf *g, const char *key, int64_t *v);
int kiln_gguf_get_f64(const kiln_gguf *g, const char *key, double *v);
int kiln_gguf_get_bool(const kiln_gguf *g, const char *key, int *v);
int kiln_gguf_get_str(const kiln_gguf *g, const char *key, kiln_gguf_str *v);
/* Arrays: element type and count; elements via the typed getters below. */
int kiln_gguf_get_arr(const kiln_gguf *g, const char *key, kiln_gguf_type *elem_type, uint64_t *n);
int kiln_gguf_arr_str(const kiln_gguf *g, const char *key, uint64_t i, kiln_gguf_str *v);
int kiln_gguf_arr_f64(const kiln_gguf *g, const char *key, uint64_t i, double *v);
int kiln_gguf_arr_i64(const kiln_gguf *g, const char *key, uint64_t i, int64_t *v);

uint64_t kiln_gguf_n_tensors(const kiln_gguf *g);
const kiln_gguf_tensor_info *kiln_gguf_tensor(const kiln_gguf *g, uint64_t i);
const kiln_gguf_tensor_info *kiln_gguf_find_tensor(const kiln_gguf *g, const char *name);
/* GGML type name ("q4_K", "type 7" style for unknown ones) for messages and dumps. */
const char *kiln_gguf_ggml_type_name(uint32_t ggml_type);
/* bytes of one scalar metadata value of GGUF value type t (kiln_gguf_type); 0 for strings,
 * arrays and unknown types (the reader and the writer share it) */
int kiln_gguf_scalar_size(uint32_t t);

#endif
