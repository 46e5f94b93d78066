/* Helpers for writing Hugging Face model directories. */
#include "hfdir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "../src/fileio.h"

/* Files of a Hugging Face directory besides the weights (copied as they are). */
static const char *const g_copy_files[] = {
    "config.json",     "generation_config.json",  "tokenizer.json",    "tokenizer_config.json",
    "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt",      NULL,
};

/* Shard like the input: a sharded input gives its largest shard's size as
 * the limit; a single file stays a single file. */
size_t hfdir_shard_bytes(const st_model *m, const char *dir)
{
    char *index = llmq_path_join(dir, "model.safetensors.index.json");
    int sharded = index && llmq_file_exists(index);
    free(index);
    if (!sharded)
        return 0;
    size_t best = 0;
    int n = st_model_count(m);
    for (int i = 0; i < n; i++) {
        const char *file = st_model_at(m, i)->file;
        int seen = 0;
        for (int k = 0; k < i && !seen; k++)
            seen = strcmp(st_model_at(m, k)->file, file) == 0;
        if (seen)
            continue;
        size_t bytes = 0;
        for (int k = i; k < n; k++)
            if (strcmp(st_model_at(m, k)->file, file) == 0)
                bytes += st_model_at(m, k)->nbytes;
        if (bytes > best)
            best = bytes;
    }
    return best;
}

int hfdir_copy_side_files(const char *src, const char *dst)
{
    for (int i = 0; g_copy_files[i]; i++) {
        char *from = llmq_path_join(src, g_copy_files[i]), *to = llmq_path_join(dst, g_copy_files[i]);
        int rc = from && to ? 0 : llmq_fail("out of memory");
        if (!rc && llmq_file_exists(from))
            rc = llmq_copy_file(from, to);
        free(from);
        free(to);
        if (rc)
            return -1;
    }
    return 0;
}

