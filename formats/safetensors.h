/* safetensors: reading (mmap, zero copy, fully validated) and writing
 * (atomic: temporary name, then rename).
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON mapping
 * tensor names to {"dtype","shape","data_offsets":[begin,end]} (offsets
 * relative to the first byte after the header), plus an optional
 * "__metadata__" object of string -> string. */
#ifndef LLMQ_SAFETENSORS_H
#define LLMQ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../src/dtype.h"

#define ST_MAX_DIMS 8

typedef struct {
    const char *name;
    llmq_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* points into the mmap'd file */
    size_t nbytes;
    const char *file; /* path of the file holding it */
} st_tensor;

/* ---- one file ---- */
typedef struct st_file st_file;

/* Open and validate. On any defect (header length over 100 MB or past the
 * end of the file, invalid JSON, unknown dtype, bad shape, offsets outside
 * the data area, overlapping or non-contiguous ranges, byte length not equal
 * to numel x dtype size, duplicate names) returns -1 with a message naming
 * the file and, where there is one, the tensor. */
int st_open(st_file **out, const char *path);
/* The same validation for a file image already in memory (tests, fuzzing).
 * Nothing is copied: data must stay valid until st_close. name is the path
 * used in messages. */
int st_open_buffer(st_file **out, const void *data, size_t len, const char *name);
void st_close(st_file *f);
int st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, int i);            /* in header order */
const st_tensor *st_find(const st_file *f, const char *name); /* NULL if absent */
/* Value of a __metadata__ key, or NULL. */
const char *st_metadata(const st_file *f, const char *key);

/* ---- a model directory: model.safetensors or shards listed in
 * model.safetensors.index.json ("weight_map": name -> file) ---- */
typedef struct st_model st_model;

int st_model_open(st_model **out, const char *dir);
void st_model_close(st_model *m);
int st_model_count(const st_model *m);
/* A __metadata__ value from the first shard that has the key, or NULL. */
const char *st_model_metadata(const st_model *m, const char *key);
const st_tensor *st_model_at(const st_model *m, int i);
const st_tensor *st_model_find(const st_model *m, const char *name);

/* Copy a tensor into a float buffer of numel elements, converting from any
 * float dtype. Returns -1 (naming the tensor) for a non-float dtype. */
int st_read_f32(const st_tensor *t, float *dst);

/* ---- writing ----
 * Tensors are laid out in the order they are added. The data pointers must
 * stay valid until st_writer_commit (nothing is copied), which writes
 * "<path>.tmp.<pid>", fsyncs and renames it onto path. st_writer_free
 * without commit leaves nothing on disk. */
typedef struct st_writer st_writer;

st_writer *st_writer_new(void);
void st_writer_free(st_writer *w);
int st_writer_add(st_writer *w, const char *name, llmq_dtype dt, int ndim, const int64_t *shape,
                  const void *data);
int st_writer_meta(st_writer *w, const char *key, const char *value);
/* Total bytes of tensor data added so far (for sharding decisions). */
size_t st_writer_bytes(const st_writer *w);
int st_writer_commit(st_writer *w, const char *path);

/* Write the writer's tensors into directory dir as a Hugging Face model:
 * dir/model.safetensors when the total is at most max_shard_bytes (or max is
 * 0), else dir/model-00001-of-0000N.safetensors ... (tensors in add order, a
 * shard closing before the tensor that would take it over the limit) plus
 * dir/model.safetensors.index.json. Every file is written atomically and
 * carries the same __metadata__. Files of the other layout left by an
 * earlier write (model.safetensors, or the index and the shards it lists)
 * are removed only after the new files are in place. */
int st_write_sharded(st_writer *w, const char *dir, size_t max_shard_bytes);

#endif
