/* Row-parallel loops on POSIX threads, for CPU work whose rows are
 * independent (the GPTQ solver's output rows, the per-channel int8
 * quantization of a W8A8 weight at load). Each thread takes one contiguous
 * range, so a result that depends only on its row is the same bytes
 * whatever the thread count. */
#ifndef LLMQ_SRC_PARALLEL_H
#define LLMQ_SRC_PARALLEL_H

/* The online CPUs (1 if unknown). */
int llmq_cpu_count(void);

/* fn(ctx, r0, r1) over [0, n) in nthreads contiguous ranges (clamped to
 * 1..64 and to n): the calling thread takes the first, and a thread that
 * fails to start has its range run inline. Returns when all are done. */
void llmq_parallel_rows(int n, int nthreads, void (*fn)(void *ctx, int r0, int r1), void *ctx);

#endif
