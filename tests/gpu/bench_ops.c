/* Timings of the CUDA backend at Llama-7B shapes.
 *
 * Each measurement: 3 warm-up runs, then REPS runs each bracketed by
 * cudaEvents on the backend's stream; the median is printed. Inputs are
 * random (never zeros) and larger than L2 where the real ones are.
 *
 *   linear     rows 8192 at 4096->4096, 4096->11008, 11008->4096 (TFLOP/s)
 *   attention  batch 4, seq 2048, 32 heads, hd 128, MHA and GQA 32:8
 *              (TFLOP/s counting the causal half: 2*2*b*h*hd*seq*(seq+1)/2)
 *   rmsnorm, rope, add, silu_mul, fq_*, act_stats at rows 8192 (GB/s)
 *   layer      one decoder layer's ops vs its 7 GEMMs alone: the ratio
 *              gemm/layer is the share of the forward spent in GEMMs
 *   col_absmax 262144 x 4096, nll 8192 x 32000 (GB/s read)
 *   upload     1 GiB of f32 -> dt and of dt -> dt from pageable host memory
 *
 * Usage: bench_ops [bf16|f16]   (default bf16) */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend_cuda.h"
#include "src/backend.h"
#include "src/dtype.h"
#include "src/error.h"

#define GT_PROG "bench_ops"
#define GT_SEED 0x2545F4914F6CDD1Dull
#include "tests/gpu/gpu_test.h"

#define REPS 20

static llmq_backend *g;
static cudaStream_t stream;

/* A device buffer of n elements of type dt filled with uniform values in
 * [-scale, scale] (a random block repeated; never zeros). */
static void *dev_rand(size_t n, llmq_dtype dt, float scale)
{
    enum { BLOCK = 1 << 22 };
    static float *host;
    if (!host) {
        host = malloc(BLOCK * sizeof *host);
        for (size_t i = 0; i < BLOCK; i++)
            host[i] = urand_pm1();
    }
    void *d = g->alloc(g, n * llmq_dtype_size(dt));
    if (!d)
        die("alloc");
    float *tmp = malloc(BLOCK * sizeof *tmp);
    for (size_t off = 0; off < n; off += BLOCK) {
        size_t cnt = n - off < BLOCK ? n - off : BLOCK, shift = (off / BLOCK * 7919) % BLOCK;
        for (size_t i = 0; i < cnt; i++)
            tmp[i] = host[(i + shift) % BLOCK] * scale;
        if (g->upload(g, (char *)d + off * llmq_dtype_size(dt), dt, tmp, LLMQ_F32, cnt))
            die("upload");
    }
    free(tmp);
    if (g->sync(g))
        die("sync");
    return d;
}

typedef int (*op_fn)(void *arg);

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median milliseconds of fn over REPS timed runs after 3 warm-ups. */
static float time_op(op_fn fn, void *arg)
{
    cudaEvent_t ev[REPS + 1];
    float ms[REPS];
    for (int i = 0; i < 3; i++)
        if (fn(arg))
            die("warm-up");
    for (int i = 0; i <= REPS; i++)
        cuda_ok(cudaEventCreate(&ev[i]), "event");
    cuda_ok(cudaEventRecord(ev[0], stream), "record");
    for (int i = 0; i < REPS; i++) {
        if (fn(arg))
            die("run");
        cuda_ok(cudaEventRecord(ev[i + 1], stream), "record");
    }
    cuda_ok(cudaEventSynchronize(ev[REPS]), "sync");
    for (int i = 0; i < REPS; i++)
        cuda_ok(cudaEventElapsedTime(&ms[i], ev[i], ev[i + 1]), "elapsed");
    for (int i = 0; i <= REPS; i++)
        cudaEventDestroy(ev[i]);
    qsort(ms, REPS, sizeof ms[0], cmp_float);
    return ms[REPS / 2];
}

/* ---- linear ---- */

struct lin {
    void *y, *x, *w;
    int rows, in, out;
};
static int run_lin(void *a)
{
    struct lin *l = a;
    return g->linear(g, l->y, l->x, l->w, NULL, l->rows, l->in, l->out);
}

/* ---- attention ---- */

struct att {
    void *o, *q, *k, *v;
    int batch, seq, heads, kv, hd;
};
static int run_att(void *a)
{
    struct att *t = a;
    return g->attention(g, t->o, t->q, t->k, t->v, t->batch, t->seq, t->heads, t->kv, t->hd);
}

/* ---- one decoder layer ---- */

struct layer {
    int rows, seq, D, F, heads, kv, hd;
    void *x, *h, *q, *k, *v, *a, *gt, *up, *wq, *wk, *wv, *wo, *wg, *wu, *wd, *n1, *n2;
    float *cs;
};

static int gemms(struct layer *L, int with_rest)
{
    const int R = L->rows, D = L->D, F = L->F, KV = L->kv * L->hd;
    if (with_rest && g->rmsnorm(g, L->h, L->x, L->n1, R, D, 1e-5f))
        return -1;
    if (g->linear(g, L->q, L->h, L->wq, NULL, R, D, D) || g->linear(g, L->k, L->h, L->wk, NULL, R, D, KV) ||
        g->linear(g, L->v, L->h, L->wv, NULL, R, D, KV))
        return -1;
    if (with_rest && (g->rope(g, L->q, L->cs, R, L->seq, L->heads, L->hd) ||
                      g->rope(g, L->k, L->cs, R, L->seq, L->kv, L->hd) ||
                      g->attention(g, L->a, L->q, L->k, L->v, R / L->seq, L->seq, L->heads, L->kv, L->hd)))
        return -1;
    if (g->linear(g, L->h, L->a, L->wo, NULL, R, D, D))
        return -1;
    if (with_rest && (g->add(g, L->x, L->h, (size_t)R * D) || g->rmsnorm(g, L->h, L->x, L->n2, R, D, 1e-5f)))
        return -1;
    if (g->linear(g, L->gt, L->h, L->wg, NULL, R, D, F) || g->linear(g, L->up, L->h, L->wu, NULL, R, D, F))
        return -1;
    if (with_rest && g->silu_mul(g, L->gt, L->gt, L->up, (size_t)R * F))
        return -1;
    if (g->linear(g, L->h, L->gt, L->wd, NULL, R, F, D))
        return -1;
    if (with_rest && g->add(g, L->x, L->h, (size_t)R * D))
        return -1;
    return 0;
}
static int run_layer(void *a) { return gemms(a, 1); }
static int run_gemms(void *a) { return gemms(a, 0); }

static void bench_layer(llmq_dtype dt, int batch, int kv)
{
    struct layer L = {.rows = batch * 2048, .seq = 2048, .D = 4096, .F = 11008, .heads = 32, .kv = kv, .hd = 128};
    const size_t R = L.rows, D = L.D, F = L.F, KV = (size_t)kv * L.hd;
    const float ws = 1.0f / 64.0f;
    L.x = dev_rand(R * D, dt, 1.0f);
    L.h = dev_rand(R * D, dt, 1.0f);
    L.q = dev_rand(R * D, dt, 1.0f);
    L.k = dev_rand(R * KV, dt, 1.0f);
    L.v = dev_rand(R * KV, dt, 1.0f);
    L.a = dev_rand(R * D, dt, 1.0f);
    L.gt = dev_rand(R * F, dt, 1.0f);
    L.up = dev_rand(R * F, dt, 1.0f);
    L.wq = dev_rand(D * D, dt, ws);
    L.wk = dev_rand(KV * D, dt, ws);
    L.wv = dev_rand(KV * D, dt, ws);
    L.wo = dev_rand(D * D, dt, ws);
    L.wg = dev_rand(F * D, dt, ws);
    L.wu = dev_rand(F * D, dt, ws);
    L.wd = dev_rand(D * F, dt, 1.0f / 105.0f);
    L.n1 = dev_rand(D, dt, 1.0f);
    L.n2 = dev_rand(D, dt, 1.0f);
    L.cs = dev_rand((size_t)L.seq * L.hd, LLMQ_F32, 1.0f);
    float tg = time_op(run_gemms, &L), tl = time_op(run_layer, &L);
    double flops = 2.0 * R * D * (2.0 * D + 2.0 * KV) + 2.0 * R * D * F * 3.0;
    printf("layer      %-4s batch=%d rows=%zu kv=%d: gemms %.3f ms (%.0f TFLOP/s), layer %.3f ms, gemm/layer %.3f\n",
           llmq_dtype_name(dt), batch, R, kv, tg, flops / tg * 1e-9, tl, tg / tl);
    void *bufs[] = {L.x,  L.h,  L.q,  L.k,  L.v,  L.a,  L.gt, L.up, L.wq,
                    L.wk, L.wv, L.wo, L.wg, L.wu, L.wd, L.n1, L.n2, L.cs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        g->free(g, bufs[i]);
}

/* ---- memory-bound operations at the 7B layer shapes (rows 8192) ---- */

struct ew {
    int which, rows, D, F;
    void *x, *y, *big1, *big2, *big3, *w;
    float *cs, *s1, *s2, *s3;
};
static int run_ew(void *a)
{
    struct ew *e = a;
    const size_t n = (size_t)e->rows * e->D, nf = (size_t)e->rows * e->F;
    switch (e->which) {
    case 0: return g->rmsnorm(g, e->y, e->x, e->w, e->rows, e->D, 1e-5f);
    case 1: return g->rope(g, e->x, e->cs, e->rows, 2048, 32, 128);
    case 2: return g->add(g, e->x, e->y, n);
    case 3: return g->silu_mul(g, e->big3, e->big1, e->big2, nf);
    case 4: return g->fq_per_token(g, e->x, e->rows, e->D, 127);
    case 5: return g->fq_tensor(g, e->x, n, 0.01f, 127);
    case 6: return g->act_stats(g, e->s1, e->s2, e->s3, e->x, e->rows, e->D);
    default: return g->col_absmax(g, e->s1, e->x, e->rows, e->D);
    }
}

static void bench_elementwise(llmq_dtype dt)
{
    struct ew e = {.rows = 8192, .D = 4096, .F = 11008};
    const size_t n = (size_t)e.rows * e.D, nf = (size_t)e.rows * e.F, es = llmq_dtype_size(dt);
    e.x = dev_rand(n, dt, 1.0f);
    e.y = dev_rand(n, dt, 1.0f);
    e.big1 = dev_rand(nf, dt, 1.0f);
    e.big2 = dev_rand(nf, dt, 1.0f);
    e.big3 = dev_rand(nf, dt, 1.0f);
    e.w = dev_rand(e.D, dt, 1.0f);
    e.cs = dev_rand((size_t)2048 * 128, LLMQ_F32, 1.0f);
    e.s1 = dev_rand(e.D, LLMQ_F32, 0.0f);
    e.s2 = dev_rand(e.D, LLMQ_F32, 0.0f);
    e.s3 = dev_rand(e.rows, LLMQ_F32, 0.0f);
    static const char *names[] = {"rmsnorm", "rope", "add", "silu_mul", "fq_per_token", "fq_tensor", "act_stats",
                                  "col_absmax"};
    /* bytes moved at minimum: reads + writes */
    const double bytes[] = {2.0 * n * es, 2.0 * n * es, 3.0 * n * es, 3.0 * nf * es,
                            2.0 * n * es, 2.0 * n * es, 1.0 * n * es, 1.0 * n * es};
    for (int i = 0; i < 8; i++) {
        e.which = i;
        float ms = time_op(run_ew, &e);
        printf("%-10s rows=%d %s: %.3f ms, %.0f GB/s\n", names[i], e.rows, i == 3 ? "cols=11008" : "cols=4096", ms,
               bytes[i] / ms * 1e-6);
        if (i == 2 || i == 4 || i == 5) { /* in place, growing or lossy: fresh inputs */
            g->free(g, e.x);
            e.x = dev_rand(n, dt, 1.0f);
        }
    }
    void *bufs[] = {e.x, e.y, e.big1, e.big2, e.big3, e.w, e.cs, e.s1, e.s2, e.s3};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        g->free(g, bufs[i]);
}

/* ---- observers and loss ---- */

struct cam {
    float *amax;
    void *x;
    int rows, cols;
};
static int run_cam(void *a)
{
    struct cam *c = a;
    return g->col_absmax(g, c->amax, c->x, c->rows, c->cols);
}

struct nl {
    void *l;
    int32_t *t;
    int rows, vocab;
};
static int run_nll(void *a)
{
    struct nl *n = a;
    double v;
    return g->nll(g, &v, n->l, n->t, n->rows, n->vocab);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    llmq_dtype dt = LLMQ_BF16;
    if (argc > 1 && strcmp(argv[1], "f16") == 0)
        dt = LLMQ_F16;
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 0;
    }
    if (llmq_backend_cuda(&g, 0, dt))
        die("backend");
    stream = (cudaStream_t)llmq_cuda_stream(g);
    struct cudaDeviceProp prop;
    cuda_ok(cudaGetDeviceProperties(&prop, 0), "properties");
    printf("device: %s, %d SMs, storage %s, median of %d\n", prop.name, prop.multiProcessorCount,
           llmq_dtype_name(dt), REPS);

    static const int shapes[][2] = {{4096, 4096}, {4096, 11008}, {11008, 4096}};
    for (int i = 0; i < 3; i++) {
        struct lin l = {.rows = 8192, .in = shapes[i][0], .out = shapes[i][1]};
        l.x = dev_rand((size_t)l.rows * l.in, dt, 1.0f);
        l.w = dev_rand((size_t)l.out * l.in, dt, 1.0f / 64.0f);
        l.y = dev_rand((size_t)l.rows * l.out, dt, 1.0f);
        float ms = time_op(run_lin, &l);
        printf("linear     rows=%d in=%d out=%d: %.3f ms, %.0f TFLOP/s\n", l.rows, l.in, l.out, ms,
               2.0 * l.rows * l.in * l.out / ms * 1e-9);
        g->free(g, l.x), g->free(g, l.w), g->free(g, l.y);
    }

    static const int kvs[] = {32, 8};
    for (int i = 0; i < 2; i++) {
        struct att t = {.batch = 4, .seq = 2048, .heads = 32, .kv = kvs[i], .hd = 128};
        size_t nq = (size_t)t.batch * t.seq * t.heads * t.hd, nk = (size_t)t.batch * t.seq * t.kv * t.hd;
        t.q = dev_rand(nq, dt, 1.0f);
        t.k = dev_rand(nk, dt, 1.0f);
        t.v = dev_rand(nk, dt, 1.0f);
        t.o = dev_rand(nq, dt, 1.0f);
        float ms = time_op(run_att, &t);
        double flops = 4.0 * t.batch * t.heads * t.hd * (double)t.seq * (t.seq + 1) / 2.0;
        printf("attention  batch=%d seq=%d heads=%d kv=%d hd=%d: %.3f ms, %.0f TFLOP/s (causal)\n", t.batch, t.seq,
               t.heads, t.kv, t.hd, ms, flops / ms * 1e-9);
        g->free(g, t.q), g->free(g, t.k), g->free(g, t.v), g->free(g, t.o);
    }

    bench_elementwise(dt);
    bench_layer(dt, 4, 32);
    bench_layer(dt, 8, 32);
    bench_layer(dt, 4, 8);

    {
        struct cam c = {.rows = 262144, .cols = 4096};
        c.x = dev_rand((size_t)c.rows * c.cols, dt, 1.0f);
        c.amax = dev_rand(c.cols, LLMQ_F32, 0.0f);
        float ms = time_op(run_cam, &c);
        double bytes = (double)c.rows * c.cols * llmq_dtype_size(dt);
        printf("col_absmax rows=%d cols=%d: %.3f ms, %.0f GB/s\n", c.rows, c.cols, ms, bytes / ms * 1e-6);
        g->free(g, c.x), g->free(g, c.amax);
    }
    {
        struct nl n = {.rows = 8192, .vocab = 32000};
        n.l = dev_rand((size_t)n.rows * n.vocab, dt, 3.0f);
        int32_t *t = malloc(n.rows * sizeof *t);
        for (int r = 0; r < n.rows; r++)
            t[r] = (r * 7919) % n.vocab;
        n.t = g->alloc(g, n.rows * sizeof *t);
        if (!n.t || g->upload_bytes(g, n.t, t, n.rows * sizeof *t))
            die("targets");
        float ms = time_op(run_nll, &n);
        double bytes = (double)n.rows * n.vocab * llmq_dtype_size(dt);
        printf("nll        rows=%d vocab=%d: %.3f ms, %.0f GB/s (includes the host round trip)\n", n.rows, n.vocab, ms,
               bytes / ms * 1e-6);
        g->free(g, n.l), g->free(g, n.t);
        free(t);
    }
    {
        const size_t n = (size_t)1 << 28; /* 1 GiB of f32 */
        float *h = malloc(n * sizeof *h);
        for (size_t i = 0; i < n; i++)
            h[i] = (float)(i % 1000) * 1e-3f - 0.5f;
        void *d = g->alloc(g, n * llmq_dtype_size(dt));
        if (!d || g->upload(g, d, dt, h, LLMQ_F32, n) || g->sync(g)) /* warm-up: page in, first-touch */
            die("upload");
        double t0 = now_s();
        if (g->upload(g, d, dt, h, LLMQ_F32, n) || g->sync(g))
            die("upload");
        double t1 = now_s();
        printf("upload     f32->%s %zu MiB: %.3f s, %.1f GB/s of source\n", llmq_dtype_name(dt),
               n * sizeof *h >> 20, t1 - t0, n * sizeof *h / (t1 - t0) * 1e-9);
        llmq_convert(h, dt, h, LLMQ_F32, n); /* in place: the first half now holds n 16-bit values */
        t0 = now_s();
        if (g->upload(g, d, dt, h, dt, n) || g->sync(g))
            die("upload");
        t1 = now_s();
        printf("upload     %s->%s %zu MiB: %.3f s, %.1f GB/s\n", llmq_dtype_name(dt), llmq_dtype_name(dt),
               n * llmq_dtype_size(dt) >> 20, t1 - t0, n * llmq_dtype_size(dt) / (t1 - t0) * 1e-9);
        g->free(g, d);
        free(h);
    }
    g->destroy(g);
    return 0;
}
