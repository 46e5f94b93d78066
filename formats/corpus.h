/* Streaming readers for calibration and evaluation corpora:
 *  - plain text (anything not below): one record per line, the line's
 *    "\n" included (the last line may lack it);
 *  - JSON Lines (.jsonl): one object per line, the record is its string
 *    field (default "text"); blank lines are skipped;
 *  - either compressed with zstd (.zst suffix: .jsonl.zst, .txt.zst),
 *    decompressed in a stream with a bounded buffer, never whole.
 * Errors name the file and the 1-based line: invalid JSON, a record that is
 * not an object, a missing or non-string field, a corrupt or truncated zstd
 * frame, a read error. */
#ifndef LLMQ_CORPUS_H
#define LLMQ_CORPUS_H

#include <stddef.h>

typedef struct llmq_corpus llmq_corpus;

typedef enum { CORPUS_AUTO = 0, CORPUS_TEXT, CORPUS_JSONL } llmq_corpus_kind;

/* kind CORPUS_AUTO picks by file name (.jsonl / .jsonl.zst / .json.zst /
 * .ndjson / .ndjson.zst -> JSONL, else text). Compression is detected by the
 * .zst suffix or by the zstd magic at the start of the file, for any kind.
 * field: JSON key of the text (NULL = "text"). */
int corpus_open(llmq_corpus **out, const char *path, llmq_corpus_kind kind, const char *field);
void corpus_close(llmq_corpus *c);

/* Next record. Returns 1 with *text (NUL-terminated, owned by the reader,
 * valid until the next call) and *len, 0 at the end, -1 on error. */
int corpus_next(llmq_corpus *c, const char **text, size_t *len);

/* 1-based line number of the record last returned (for messages). */
long corpus_line(const llmq_corpus *c);

/* Lower (or, with 0, restore) the longest line accepted, 1 GiB by default;
 * a longer line is an error naming the file and line rather than an attempt
 * to buffer it. Call before the first corpus_next(). */
void corpus_set_max_line(llmq_corpus *c, size_t max_bytes);

/* Read every record of a (small) corpus into malloc'd NUL-terminated copies:
 * (*records)[i] with length (*lens)[i] (lens may be NULL). On error nothing
 * is left allocated and *count is 0. Free with corpus_free_records(). */
int corpus_read_all(const char *path, llmq_corpus_kind kind, const char *field,
                    char ***records, size_t **lens, size_t *count);
void corpus_free_records(char **records, size_t *lens, size_t count);

#endif
