/* Decode attention over the KV cache (attention_kv, n = 1) on Llama-7B
 * heads: head_dim 128, 32 query heads, 32 kv heads; fp16 storage type,
 * cache in fp16 or int8 (+ fp32 scales).
 *
 *   copy      cudaMemcpy device to device of 1 GiB: the bandwidth ceiling
 *             (bytes read + written), measured in this run
 *   decode    batch 1, 16, 64 x context 1024, 4096, 8192 (the query at
 *             position ctx-1 attends to all ctx positions). MB = cache bytes
 *             the call must read: K and V once (+ their int8 scales); GB/s =
 *             MB / time, and as a % of the copy bandwidth; speedup = fp16
 *             time / int8 time at the same shape. Two GQA shapes (32:8)
 *             follow for information.
 *
 * Timing: 3 warm-up passes, then REPS passes each bracketed by cudaEvents
 * on the backend's stream; one pass runs the call once on each of several
 * copies of the cache (together >= 512 MB, so that the cache comes from
 * DRAM, not the 50-60 MB L2); per-call time = pass / copies, median over
 * passes. Cache contents: random fp16 N(0,1) values, or random int8 codes
 * in [-127, 127] with scales in [0.005, 0.02]; q random. After timing, each
 * output is checked to be finite.
 *
 * Usage: bench_kv_cache [reps]   (default 30) */
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

#define GT_PROG "bench_kv_cache"
#define GT_SEED 0x94D049BB133111EBull
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/gpu_bench.h"

#define MAXC 64                   /* cache copies at most */
#define ROT_BYTES ((size_t)512 << 20) /* bytes of cache copies rotated through */
#define HD 128
#define HEADS 32
#define FILL_BYTES ((size_t)16 << 20) /* random block replicated over the caches */

static llmq_backend *g;
static cudaStream_t stream;
static int reps = 30;

/* ---- caches ---- */

struct bench {
    int batch, ctx, n_kv, kv8;
    int ncopies;
    void *k[MAXC], *v[MAXC];
    float *ks[MAXC], *vs[MAXC];
    void *q, *out;
};

static int run_attn(void *a, int i)
{
    struct bench *B = a;
    return g->attention_kv(g, B->out, B->q, B->k[i], B->ks[i], B->v[i], B->vs[i], B->batch, 1, B->ctx - 1, B->ctx,
                           HEADS, B->n_kv, HD, B->kv8, NULL);
}

static size_t cache_bytes(const struct bench *B) /* one of K, V */
{
    return (size_t)B->batch * B->ctx * B->n_kv * HD * (B->kv8 ? 1 : 2);
}

static size_t scale_bytes(const struct bench *B)
{
    return B->kv8 ? (size_t)B->batch * B->ctx * B->n_kv * sizeof(float) : 0;
}

/* Fill nbytes at dst by replicating the device block src (FILL_BYTES). */
static void fill(void *dst, size_t nbytes, const void *src)
{
    for (size_t off = 0; off < nbytes; off += FILL_BYTES) {
        size_t cnt = nbytes - off < FILL_BYTES ? nbytes - off : FILL_BYTES;
        cuda_ok(cudaMemcpyAsync((char *)dst + off, src, cnt, cudaMemcpyDeviceToDevice, stream), "fill");
    }
}

static void *dalloc(size_t n)
{
    void *p = g->alloc(g, n);
    if (!p)
        die("alloc");
    return p;
}

/* Random blocks on the device: fp16 values, int8 codes, fp32 scales. */
static void *blk_f16, *blk_i8, *blk_scale;

static void make_blocks(void)
{
    uint16_t *h16 = xmalloc(FILL_BYTES);
    int8_t *h8 = xmalloc(FILL_BYTES);
    float *hs = xmalloc(FILL_BYTES);
    for (size_t i = 0; i < FILL_BYTES / 2; i++) {
        double u1 = urand(), u2 = urand();
        h16[i] = llmq_f32_to_f16((float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2)));
    }
    for (size_t i = 0; i < FILL_BYTES; i++)
        h8[i] = (int8_t)((int)(urand32() % 255u) - 127);
    for (size_t i = 0; i < FILL_BYTES / 4; i++)
        hs[i] = 0.005f + 0.015f * (float)urand();
    blk_f16 = dalloc(FILL_BYTES);
    blk_i8 = dalloc(FILL_BYTES);
    blk_scale = dalloc(FILL_BYTES);
    if (g->upload_bytes(g, blk_f16, h16, FILL_BYTES) || g->upload_bytes(g, blk_i8, h8, FILL_BYTES) ||
        g->upload_bytes(g, blk_scale, hs, FILL_BYTES))
        die("upload");
    free(h16);
    free(h8);
    free(hs);
}

static void load(struct bench *B)
{
    const size_t cb = cache_bytes(B), sb = scale_bytes(B), per = 2 * (cb + sb);
    size_t n = (ROT_BYTES + per - 1) / per;
    B->ncopies = n < 1 ? 1 : n > MAXC ? MAXC : (int)n;
    for (int i = 0; i < B->ncopies; i++) {
        B->k[i] = dalloc(cb);
        B->v[i] = dalloc(cb);
        fill(B->k[i], cb, B->kv8 ? blk_i8 : blk_f16);
        fill(B->v[i], cb, B->kv8 ? blk_i8 : blk_f16);
        B->ks[i] = B->vs[i] = NULL;
        if (B->kv8) {
            B->ks[i] = dalloc(sb);
            B->vs[i] = dalloc(sb);
            fill(B->ks[i], sb, blk_scale);
            fill(B->vs[i], sb, blk_scale);
        }
    }
    const size_t nq = (size_t)B->batch * HEADS * HD;
    B->q = dalloc(nq * 2);
    B->out = dalloc(nq * 2);
    fill(B->q, nq * 2, blk_f16);
    cuda_ok(cudaStreamSynchronize(stream), "fill");
}

static void unload(struct bench *B)
{
    for (int i = 0; i < B->ncopies; i++) {
        g->free(g, B->k[i]);
        g->free(g, B->v[i]);
        if (B->kv8) {
            g->free(g, B->ks[i]);
            g->free(g, B->vs[i]);
        }
    }
    g->free(g, B->q);
    g->free(g, B->out);
    B->ncopies = 0;
}

/* Every output finite (the caches hold real numbers, so NaN means a bug). */
static void check_out(const struct bench *B)
{
    const size_t nq = (size_t)B->batch * HEADS * HD;
    float *h = xmalloc(nq * sizeof *h);
    if (g->download_f32(g, h, B->out, LLMQ_F16, nq))
        die("download");
    for (size_t i = 0; i < nq; i++)
        if (!isfinite(h[i])) {
            fprintf(stderr, "%s: output %zu is %g (batch %d ctx %d kv8 %d)\n", GT_PROG, i, h[i], B->batch, B->ctx,
                    B->kv8);
            exit(1);
        }
    free(h);
}

struct result {
    int batch, ctx, n_kv;
    float us[2];  /* fp16, int8 */
    double pct[2];
};

static struct result measure(int batch, int ctx, int n_kv, double copy_gbs)
{
    struct result R = {.batch = batch, .ctx = ctx, .n_kv = n_kv};
    for (int kv8 = 0; kv8 <= 1; kv8++) {
        struct bench B = {.batch = batch, .ctx = ctx, .n_kv = n_kv, .kv8 = kv8};
        load(&B);
        const float ms = gb_time_calls(stream, run_attn, &B, B.ncopies, reps, 0);
        check_out(&B);
        const double bytes = 2.0 * (double)(cache_bytes(&B) + scale_bytes(&B));
        const double gbs = bytes / (ms * 1e-3) / 1e9;
        R.us[kv8] = ms * 1e3f;
        R.pct[kv8] = 100.0 * gbs / copy_gbs;
        printf("%5d %5d %5d:%-2d %-5s | %9.2f %9.1f %7.0f %6.1f | %6d", batch, ctx, HEADS, n_kv, kv8 ? "int8" : "fp16",
               ms * 1e3, bytes / 1e6, gbs, R.pct[kv8], B.ncopies);
        if (kv8)
            printf(" | %6.2fx", R.us[0] / R.us[1]);
        printf("\n");
        fflush(stdout);
        unload(&B);
    }
    return R;
}

int main(int argc, char **argv)
{
    /* usage: bench_kv_cache [REPS [KV8_MODE]] (KV8_MODE: llmq_kv8_tune) */
    if (argc > 1)
        reps = atoi(argv[1]) > 2 ? atoi(argv[1]) : 3;
    if (argc > 2 && llmq_kv8_tune(atoi(argv[2])))
        die("kv8 mode");
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 77;
    }
    if (llmq_backend_cuda(&g, 0, LLMQ_F16))
        die("backend");
    stream = (cudaStream_t)llmq_cuda_stream(g);
    gb_print_header("bench_kv_cache", reps);

    const double copy_gbs = gb_copy_gbs(stream, reps);

    make_blocks();
    printf("decode attention_kv, n = 1, head_dim %d, fp16 q/out; us per call, MB of cache read (K + V + scales),\n"
           "GB/s and %% of the copy bandwidth, copies rotated, int8 speedup over the fp16 cache\n",
           HD);
    printf("%5s %5s %8s %-5s | %9s %9s %7s %6s | %6s | %7s\n", "batch", "ctx", "heads", "cache", "us", "MB", "GB/s",
           "%copy", "copies", "speedup");
    static const int batches[] = {1, 16, 64}, ctxs[] = {1024, 4096, 8192};
    struct result res[9 + 2];
    int nres = 0;
    for (int b = 0; b < 3; b++)
        for (int c = 0; c < 3; c++)
            res[nres++] = measure(batches[b], ctxs[c], HEADS, copy_gbs);
    res[nres++] = measure(16, 4096, 8, copy_gbs); /* GQA 4 */
    res[nres++] = measure(64, 4096, 8, copy_gbs);

    printf("\nsummary (copy %.0f GB/s):\n", copy_gbs);
    printf("%5s %5s %6s | %9s %6s | %9s %6s | %7s\n", "batch", "ctx", "heads", "fp16 us", "%copy", "int8 us", "%copy",
           "speedup");
    for (int i = 0; i < nres; i++)
        printf("%5d %5d %3d:%-2d | %9.2f %6.1f | %9.2f %6.1f | %6.2fx\n", res[i].batch, res[i].ctx, HEADS,
               res[i].n_kv, res[i].us[0], res[i].pct[0], res[i].us[1], res[i].pct[1], res[i].us[0] / res[i].us[1]);
    g->free(g, blk_f16);
    g->free(g, blk_i8);
    g->free(g, blk_scale);
    g->destroy(g);
    return 0;
}
