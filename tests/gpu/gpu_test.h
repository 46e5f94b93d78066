/* Helpers shared by the GPU test and benchmark programs (one per program,
 * header-only). Before including, a program may define GT_PROG (its name in
 * messages) and GT_SEED (the start of its random stream). */
#ifndef LLMQ_GPU_TEST_H
#define LLMQ_GPU_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "src/backend.h"
#include "src/error.h"

#ifndef GT_PROG
#define GT_PROG "gpu test"
#endif
#ifndef GT_SEED
#define GT_SEED 0x2545F4914F6CDD1Dull
#endif

/* xorshift64*: fast, deterministic, good enough for test data. */
static uint64_t rng = GT_SEED;

static inline uint64_t rng_next(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

/* Uniform in the open interval (0, 1) (safe under log()). */
static inline double urand(void) { return ((double)(rng_next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static inline uint32_t urand32(void) { return (uint32_t)(rng_next() >> 32); }
static inline float urand_pm1(void) { return (float)(2.0 * urand() - 1.0); }

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "%s: out of host memory (%zu bytes)\n", GT_PROG, n);
        exit(2);
    }
    return p;
}

/* An llmq call failed: print its message and stop. */
static inline void die(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", GT_PROG, what, llmq_last_error());
    exit(1);
}

static inline void cuda_ok(cudaError_t e, const char *what)
{
    if (e != cudaSuccess) {
        fprintf(stderr, "%s: %s: %s\n", GT_PROG, what, cudaGetErrorString(e));
        exit(1);
    }
}

/* ---- buffers of a backend (tests comparing the CUDA backend with the CPU) ---- */

/* n floats from the host, in backend g's memory as dt; NULL on failure. */
static inline void *gt_dev_from(llmq_backend *g, const float *h, size_t n, llmq_dtype dt)
{
    void *d = g->alloc(g, (n ? n : 1) * llmq_dtype_size(dt));
    if (d && n && g->upload(g, d, dt, h, LLMQ_F32, n) != 0) {
        g->free(g, d);
        return NULL;
    }
    return d;
}

/* n NaNs as dt: an output buffer in which every unwritten element shows. */
static inline void *gt_dev_nan(llmq_backend *g, size_t n, llmq_dtype dt)
{
    float *h = (float *)xmalloc((n ? n : 1) * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = NAN;
    void *d = gt_dev_from(g, h, n, dt);
    free(h);
    return d;
}

/* n elements of dt back to the host as floats (malloc'd); NULL on failure. */
static inline float *gt_host_from(llmq_backend *g, const void *d, size_t n, llmq_dtype dt)
{
    float *h = (float *)xmalloc((n ? n : 1) * sizeof *h);
    if (g->download_f32(g, h, d, dt, n) != 0) {
        free(h);
        return NULL;
    }
    return h;
}

static inline void gt_dfree(llmq_backend *g, void *d)
{
    if (d)
        g->free(g, d);
}

/* ||got - ref|| / ||ref|| in double (||got - ref|| when ref is all zero);
 * NaN as soon as got holds a non-finite value. */
static inline double gt_rel_l2(const float *got, const float *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return NAN;
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

#endif
