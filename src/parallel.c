#include "src/parallel.h"

#include <pthread.h>
#include <unistd.h>

int llmq_cpu_count(void)
{
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

typedef struct {
    void (*fn)(void *ctx, int r0, int r1);
    void *ctx;
    int r0, r1;
} rows_job;

static void *rows_worker(void *arg)
{
    rows_job *j = arg;
    j->fn(j->ctx, j->r0, j->r1);
    return NULL;
}

void llmq_parallel_rows(int n, int nthreads, void (*fn)(void *ctx, int r0, int r1), void *ctx)
{
    enum { MAX_THREADS = 64 };
    pthread_t tid[MAX_THREADS];
    rows_job jobs[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    if (n <= 0)
        return;
    if (nthreads > MAX_THREADS)
        nthreads = MAX_THREADS;
    if (nthreads > n)
        nthreads = n;
    if (nthreads < 1)
        nthreads = 1;
    for (int t = 0; t < nthreads; t++)
        jobs[t] = (rows_job){fn, ctx, (int)((long)n * t / nthreads), (int)((long)n * (t + 1) / nthreads)};
    for (int t = 1; t < nthreads; t++)
        started[t] = pthread_create(&tid[t], NULL, rows_worker, &jobs[t]) == 0;
    fn(ctx, jobs[0].r0, jobs[0].r1);
    for (int t = 1; t < nthreads; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            fn(ctx, jobs[t].r0, jobs[t].r1);
    }
}
