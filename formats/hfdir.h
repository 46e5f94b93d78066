/* Helpers for writing Hugging Face model directories. */
#ifndef LLMQ_HFDIR_H
#define LLMQ_HFDIR_H

#include <stddef.h>

#include "safetensors.h"

/* Shard like the input: a sharded input gives its largest shard's size as
 * the limit; a single file gives 0 (stay a single file). */
size_t hfdir_shard_bytes(const st_model *m, const char *dir);

/* Copy config.json, generation_config.json and the tokenizer files that
 * exist in src to dst (atomically each). */
int hfdir_copy_side_files(const char *src, const char *dst);

#endif
