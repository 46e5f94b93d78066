/* Timing for the GPU benchmarks that rotate through copies of their
 * operands (bench_wna16, bench_kv_cache), header-only, after gpu_test.h:
 * the median time of a pass over the copies, and the device-to-device copy
 * bandwidth every ratio is measured against in the same run. */
#ifndef LLMQ_GPU_BENCH_H
#define LLMQ_GPU_BENCH_H

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The first line of a benchmark's output: program, UTC date, device 0. */
static void gb_print_header(const char *prog, int reps)
{
    struct cudaDeviceProp prop;
    cuda_ok(cudaGetDeviceProperties(&prop, 0), "properties");
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
    printf("%s %s: %s, %d SMs, L2 %d MB, reps %d\n", prog, date, prop.name, prop.multiProcessorCount,
           prop.l2CacheSize >> 20, reps);
}

static int gb_cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* One call of the timed operation on copy i of its operands; 0 or -1. */
typedef int (*gb_call_fn)(void *arg, int i);

/* A pass = fn(arg, i) for i < ncopies on stream st. After three warm-up
 * passes, reps passes timed with events; the median, in ms per call. With
 * use_graph the pass is recorded once as a CUDA graph and replayed, which
 * keeps host launch gaps out of the numbers. */
static float gb_time_calls(cudaStream_t st, gb_call_fn fn, void *arg, int ncopies, int reps, int use_graph)
{
    cudaEvent_t ev[2];
    cudaGraphExec_t exec = NULL;
    float *ms = (float *)xmalloc((size_t)reps * sizeof *ms);
    for (int w = 0; w < 3; w++)
        for (int i = 0; i < ncopies; i++)
            if (fn(arg, i))
                die("warm-up");
    if (use_graph) {
        cudaGraph_t graph;
        cuda_ok(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "capture");
        for (int i = 0; i < ncopies; i++)
            if (fn(arg, i))
                die("capture");
        cuda_ok(cudaStreamEndCapture(st, &graph), "end capture");
        cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
        cudaGraphDestroy(graph);
        cuda_ok(cudaGraphLaunch(exec, st), "graph warm-up");
    }
    cuda_ok(cudaEventCreate(&ev[0]), "event");
    cuda_ok(cudaEventCreate(&ev[1]), "event");
    for (int r = 0; r < reps; r++) {
        cuda_ok(cudaEventRecord(ev[0], st), "record");
        if (exec)
            cuda_ok(cudaGraphLaunch(exec, st), "graph");
        else
            for (int i = 0; i < ncopies; i++)
                if (fn(arg, i))
                    die("run");
        cuda_ok(cudaEventRecord(ev[1], st), "record");
        cuda_ok(cudaEventSynchronize(ev[1]), "sync");
        cuda_ok(cudaEventElapsedTime(&ms[r], ev[0], ev[1]), "elapsed");
        ms[r] /= (float)ncopies;
    }
    cudaEventDestroy(ev[0]);
    cudaEventDestroy(ev[1]);
    if (exec)
        cudaGraphExecDestroy(exec);
    qsort(ms, (size_t)reps, sizeof *ms, gb_cmp_float);
    float med = ms[reps / 2];
    free(ms);
    return med;
}

struct gb_copy {
    void *dst, *src;
    size_t n;
    cudaStream_t st;
};

static int gb_run_copy(void *a, int i)
{
    (void)i;
    struct gb_copy *c = (struct gb_copy *)a;
    return cudaMemcpyAsync(c->dst, c->src, c->n, cudaMemcpyDeviceToDevice, c->st) == cudaSuccess ? 0 : -1;
}

/* Device-to-device copy bandwidth in GB/s (bytes read + written) of a
 * 1 GiB copy on st, launched from the host, median of reps; prints a line. */
static double gb_copy_gbs(cudaStream_t st, int reps)
{
    struct gb_copy c = {.n = (size_t)1 << 30, .st = st};
    cuda_ok(cudaMalloc(&c.src, c.n), "copy source");
    cuda_ok(cudaMalloc(&c.dst, c.n), "copy destination");
    cuda_ok(cudaMemsetAsync(c.src, 0x3C, c.n, st), "memset"); /* not zeros; a copy ignores values anyway */
    const float ms = gb_time_calls(st, gb_run_copy, &c, 1, reps, 0);
    const double gbs = 2.0 * (double)c.n / (ms * 1e-3) / 1e9;
    printf("copy D2D 1 GiB: %.3f ms, %.0f GB/s (read + write)\n\n", ms, gbs);
    cudaFree(c.src);
    cudaFree(c.dst);
    return gbs;
}

#endif
