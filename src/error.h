/* Error reporting for llmq.
 *
 * Functions that can fail return an int status: 0 on success, -1 on failure.
 * The failing function records a human-readable message naming the file,
 * tensor or line with llmq_fail(); callers up the stack may add context with
 * llmq_wrap(). Tools print llmq_last_error() and exit non-zero. The message
 * buffer is thread-local, so worker threads do not clobber each other. */
#ifndef LLMQ_ERROR_H
#define LLMQ_ERROR_H

#if defined(__GNUC__)
#define LLMQ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LLMQ_PRINTF(a, b)
#endif

/* Record a message (replacing any previous one). Always returns -1, so a
 * failure path reads `return llmq_fail("%s: bad header", path);`. */
int llmq_fail(const char *fmt, ...) LLMQ_PRINTF(1, 2);

/* Prepend context to the current message: "context: previous message".
 * Always returns -1. */
int llmq_wrap(const char *fmt, ...) LLMQ_PRINTF(1, 2);

/* The last recorded message ("" if none). */
const char *llmq_last_error(void);

void llmq_clear_error(void);

/* Print "prog: error: <message>" to stderr. */
void llmq_print_error(const char *prog);

#endif
