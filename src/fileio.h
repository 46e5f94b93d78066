/* Whole-file reads and atomic writes.
 *
 * Every output llmq writes goes to "<path>.tmp.<pid>" first and is renamed
 * into place only when complete, so a crash, a full disk or Ctrl-C never
 * leaves a file that looks whole but is not. */
#ifndef LLMQ_FILEIO_H
#define LLMQ_FILEIO_H

#include <stddef.h>
#include <stdio.h>

/* Read a whole file into a NUL-terminated malloc'd buffer. */
int llmq_read_file(const char *path, char **data, size_t *len);

typedef struct {
    FILE *fp;
    char *path;
    char *tmp;
} llmq_atomic;

/* Open a temporary sibling of path for writing. */
int llmq_atomic_open(llmq_atomic *a, const char *path);
/* Flush, fsync, close and rename onto path; on any error removes the
 * temporary and returns -1 with a message naming path (e.g. disk full). */
int llmq_atomic_commit(llmq_atomic *a);
/* Close and remove the temporary (no-op if already committed). */
void llmq_atomic_abort(llmq_atomic *a);

/* Write len bytes to path atomically. */
int llmq_write_file(const char *path, const void *data, size_t len);

/* Copy a file atomically (config / tokenizer files into an output dir). */
int llmq_copy_file(const char *src, const char *dst);

/* mkdir -p; ok if it exists. */
int llmq_mkdirs(const char *path);

/* "dir/name" in a malloc'd string. */
char *llmq_path_join(const char *dir, const char *name);

int llmq_file_exists(const char *path);

/* rm -r that never follows symbolic links (a link inside the tree is
 * removed, not what it points to); removes as much as it can. */
void llmq_remove_tree(const char *path);

#endif
