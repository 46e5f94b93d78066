/* Timings of the W4A16 / W8A16 linears (kernels/wna16.h) on Llama-7B shapes
 * in fp16, against cuBLAS on the dense fp16 weight at the same M.
 *
 *   copy      cudaMemcpy device to device of 1 GiB: the bandwidth ceiling
 *             (bytes read + written), measured in this run
 *   decode    M = 1, 4, 16, 32, 64 on K->N = 4096->4096, 4096->11008, 11008->4096:
 *             w4 g128, w4 g128 act-order (with a scratch of N * K * 2
 *             bytes attached, as the model runner attaches its prefill
 *             scratch: the slice path sorts x into it), w8 g128 (sym), w8
 *             per channel (one group over K), through AUTO's choice (graph
 *             replay, then "launch": call by call), then each path forced
 *             (the stream, slice and ring GEMVs, the first MMA kernel;
 *             "nan": the path does not take the weight). GB/s = bytes the kernel must read
 *             (repacked codes + scales/zeros) / time, and as a % of the
 *             copy bandwidth; cuBLAS fp16 on the dense weight at the same M
 *             (its GB/s counts the fp16 weight); speedup = cuBLAS / AUTO,
 *             cuBLAS / ring
 *   prefill   M = 128, 512, w4 g128: the MMA kernel, the dequantization
 *             alone, the SCRATCH path (dequantize to fp16 + cuBLAS per
 *             call) and cuBLAS alone (what the DENSE path costs), TFLOP/s
 *
 * Timing: 3 warm-up passes, then REPS passes each bracketed by cudaEvents
 * on the backend's stream; one pass runs the product once on each of
 * several copies of the weight (together > 512 MB, so that the weight comes
 * from DRAM, not the 50-60 MB L2); per-call time = pass / copies, median
 * over passes. A pass is captured once into a CUDA graph and replayed, so
 * that the host's launch cost (a few us per call, more than a 4096x4096
 * product now takes) does not hide the kernels; "launch us" is the same
 * pass launched call by call from the host, as a model's loop would
 * without graphs. cuBLAS is timed the same way. Weights random (codes,
 * zeros fixed at 2^(b-1), scales 0.002..0.02), x random: never zeros.
 *
 *   nf4       ("nf4" mode) M = 1, 4, 8, 16, 32, 64 on the same shapes: NF4
 *             (blocks of 64, double-quantized) on the slice kernel
 *             (wna16_prepare_nf4, AUTO), the NF4 GEMV of kernels/nf4_gemv.h
 *             (bitsandbytes' layout; above 8 rows one launch per 8 rows,
 *             what the runner did up to 32 rows), w4g128 through AUTO, and
 *             cuBLAS fp16 on the dense weight; GB/s of the NF4 bytes (codes
 *             + fp32 absmax, as the slice copy holds them)
 *
 * Usage: bench_wna16 [reps] [auto | sweep | groups | slices | nf4 | profile [slice]]   (default 30 reps;
 * "auto" times AUTO alone (and cuBLAS fp16) at M = 1, 4, 8, 16, 32, 64, a
 * line per timing with the slice kernel's split: the quick table for
 * comparing builds (BENCH_KN=K,N restricts it to one shape);
 * "sweep" times the tuning knobs (wna16_gemv_tune) of both decode kernels
 * on the g128 shapes instead; "groups" q/k/v and gate/up at M = 1 in one
 * launch (wna16_linear_group) against one launch per linear; "slices"
 * every split of the slice kernel at M = 4, 8, 16 against its plan (BENCH_KN=K,N
 * and BENCH_M=M restrict it to one shape and M);
 * "profile" only makes a few GEMV calls, for ncu) */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend_cuda.h"
#include "kernels/nf4_gemv.h"
#include "kernels/wna16.h"
#include "src/backend.h"
#include "src/dtype.h"
#include "src/error.h"

#define GT_PROG "bench_wna16"
#define GT_SEED 0x2545F4914F6CDD1Dull
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/gpu_bench.h"

#define MAXC 64             /* copies of a weight at most */
#define ROT_BYTES (512u << 20) /* bytes of weight copies rotated through */

/* The Llama-7B linear shapes, K -> N: 4096->4096 (q/k/v/o), 4096->11008
 * (gate/up), 11008->4096 (down). */
static const int shapes[3][2] = {{4096, 4096}, {4096, 11008}, {11008, 4096}};

/* BENCH_KN=K,N into *k, *n (left as they are when unset). */
static void bench_kn(int *k, int *n)
{
    if (getenv("BENCH_KN") && sscanf(getenv("BENCH_KN"), "%d,%d", k, n) != 2)
        die("BENCH_KN=K,N");
}

static llmq_backend *g;
static cudaStream_t stream;
static int reps = 30;

/* ---- products ---- */

struct bench {
    int K, N, M, path;
    wna16_weight *q[MAXC];
    int nq;
    void *dense[MAXC];
    int nd;
    void *scratch; /* act-order: N * K * 2 bytes attached to every copy, as the model runner attaches its own */
    void *x, *y;
};

static int run_q(void *a, int i)
{
    struct bench *B = a;
    return wna16_linear_path(B->q[i], g, B->y, B->x, B->M, B->path);
}

static int run_dense(void *a, int i)
{
    struct bench *B = a;
    return g->linear(g, B->y, B->x, B->dense[i], NULL, B->M, B->K, B->N);
}

static int run_dequant(void *a, int i)
{
    struct bench *B = a;
    return wna16_dequant(B->q[i], g, B->dense[0]);
}

/* Whether B's path takes its weight at B->M (one call; a refusal is not
 * an error here). */
static int path_takes(struct bench *B)
{
    if (run_q(B, 0) == 0)
        return 1;
    llmq_clear_error();
    return 0;
}

static void *dev_rand(size_t n, float scale)
{
    float *h = xmalloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = (2.0f * urand() - 1.0f) * scale;
    void *d = g->alloc(g, n * 2);
    if (!d || g->upload(g, d, LLMQ_F16, h, LLMQ_F32, n))
        die("upload");
    free(h);
    return d;
}

/* Random sym GPTQ tensors of a [N, K] linear; act: a random g_idx order. */
static wna16_weight *make_weight(int K, int N, int bits, int G, int act)
{
    const int pf = 32 / bits, ng = (K + G - 1) / G;
    int32_t *qw = xmalloc((size_t)K / pf * N * 4), *qz = xmalloc((size_t)ng * N / pf * 4), *gi = xmalloc((size_t)K * 4);
    uint16_t *sc = xmalloc((size_t)ng * N * 2);
    for (size_t i = 0; i < (size_t)K / pf * N; i++)
        qw[i] = (int32_t)urand32();
    const uint32_t f = (1u << (bits - 1)) - 1; /* v1 field of zero 2^(b-1) */
    uint32_t word = 0;
    for (int j = 0; j < pf; j++)
        word |= f << (bits * j);
    for (size_t i = 0; i < (size_t)ng * N / pf; i++)
        qz[i] = (int32_t)word;
    for (size_t i = 0; i < (size_t)ng * N; i++)
        sc[i] = llmq_f32_to_f16(0.002f + 0.018f * urand());
    int *P = xmalloc((size_t)K * sizeof *P);
    for (int k = 0; k < K; k++)
        P[k] = k;
    for (int k = K - 1; act && k > 0; k--) {
        int j = (int)(urand32() % (uint32_t)(k + 1)), t = P[k];
        P[k] = P[j];
        P[j] = t;
    }
    for (int i = 0; i < K; i++)
        gi[P[i]] = i / G;
    wna16_weight *w = NULL;
    if (wna16_prepare(&w, g, qw, qz, sc, gi, K, N, bits, 0))
        die("prepare");
    free(qw);
    free(qz);
    free(gi);
    free(sc);
    free(P);
    return w;
}

static int copies_for(size_t bytes)
{
    size_t n = (ROT_BYTES + bytes - 1) / bytes;
    return n < 2 ? 2 : n > MAXC ? MAXC : (int)n;
}

static void load(struct bench *B, int bits, int G, int act, int with_dense)
{
    size_t cb, pb;
    B->q[0] = make_weight(B->K, B->N, bits, G, act);
    wna16_info(B->q[0], NULL, NULL, NULL, &cb, &pb);
    B->nq = copies_for(cb + pb);
    for (int i = 1; i < B->nq; i++)
        if (wna16_clone(&B->q[i], g, B->q[0]))
            die("clone");
    B->nd = 0;
    B->scratch = NULL;
    if (act) {
        if (!(B->scratch = g->alloc(g, (size_t)B->N * B->K * 2)))
            die("scratch");
        for (int i = 0; i < B->nq; i++)
            wna16_set_scratch(B->q[i], B->scratch, (size_t)B->N * B->K * 2);
    }
    if (with_dense) {
        const size_t db = (size_t)B->N * B->K * 2;
        B->nd = copies_for(db);
        for (int i = 0; i < B->nd; i++) {
            B->dense[i] = g->alloc(g, db);
            if (!B->dense[i] || wna16_dequant(B->q[0], g, B->dense[i]))
                die("dense");
        }
    }
}

static void unload(struct bench *B)
{
    for (int i = 0; i < B->nq; i++)
        wna16_free(B->q[i]);
    for (int i = 0; i < B->nd; i++)
        g->free(g, B->dense[i]);
    if (B->scratch)
        g->free(g, B->scratch);
    B->scratch = NULL;
    B->nq = B->nd = 0;
}

/* ---- NF4: the slice kernel's copy against the NF4 GEMV ---- */

struct nf4b {
    int K, N, M, nq;
    wna16_weight *q[MAXC];
    llmq_nf4_gpu old[MAXC];
    void *x, *y;
};

static int run_nf4_slice(void *a, int i)
{
    struct nf4b *B = a;
    return wna16_linear(B->q[i], g, B->y, B->x, B->M);
}

static int run_nf4_gemv(void *a, int i) /* per 8 rows */
{
    struct nf4b *B = a;
    for (int r0 = 0; r0 < B->M; r0 += 8)
        if (llmq_nf4_gemv(stream, LLMQ_F16, (uint16_t *)B->y + (size_t)r0 * B->N,
                          (const uint16_t *)B->x + (size_t)r0 * B->K, &B->old[i], B->M - r0 < 8 ? B->M - r0 : 8))
            return -1;
    return 0;
}

static void bench_nf4(double copy_gbs)
{
    static const int Ms[] = {1, 4, 8, 16, 32, 64};
    printf("\nNF4 (double-quantized, blocks of 64), fp16, copy %.0f GB/s: us per call; slice = wna16_prepare_nf4's "
           "copy\nthrough AUTO (GB/s of its codes + absmax, %% of copy), gemv = kernels/nf4_gemv.h per 8 rows, w4g128 "
           "AUTO,\ncuBLAS fp16 on the dense weight; speedups = cuBLAS / slice, gemv / slice\n",
           copy_gbs);
    printf("%-13s %3s | %8s %7s %5s | %8s | %8s | %8s | %7s %7s\n", "K->N", "M", "slice", "GB/s", "%copy", "gemv",
           "w4g128", "cuBLAS", "speedup", "vs gemv");
    for (int s = 0; s < 3; s++) {
        struct nf4b B = {.K = shapes[s][0], .N = shapes[s][1]};
        const size_t nk = (size_t)B.N * B.K;
        float *W = xmalloc(nk * sizeof *W);
        for (size_t i = 0; i < nk; i++)
            W[i] = (2.0f * urand() - 1.0f) * 0.02f;
        llmq_nf4 q;
        if (nf4_quantize(W, nk, 64, 1, &q))
            die("nf4_quantize");
        free(W);
        size_t cb, pb;
        if (wna16_prepare_nf4(&B.q[0], g, &q, B.K, B.N))
            die("prepare_nf4");
        wna16_info(B.q[0], NULL, NULL, NULL, &cb, &pb);
        B.nq = copies_for(cb + pb);
        for (int i = 0; i < B.nq; i++)
            if ((i && wna16_clone(&B.q[i], g, B.q[0])) || llmq_nf4_gpu_upload(&B.old[i], &q, B.N, B.K))
                die("nf4 copies");
        nf4_free(&q);
        struct bench W4 = {.K = B.K, .N = B.N, .path = WNA16_AUTO};
        B.x = W4.x = dev_rand((size_t)64 * B.K, 1.0f);
        B.y = W4.y = g->alloc(g, (size_t)64 * B.N * 2);
        if (!B.y)
            die("alloc");
        load(&W4, 4, 128, 0, 1);
        char sh[32];
        snprintf(sh, sizeof sh, "%d->%d", B.K, B.N);
        for (int mi = 0; mi < 6; mi++) {
            B.M = W4.M = Ms[mi];
            const float tsl = gb_time_calls(stream, run_nf4_slice, &B, B.nq, reps, 1);
            const float tgv = gb_time_calls(stream, run_nf4_gemv, &B, B.nq, reps, 1);
            const float tw4 = gb_time_calls(stream, run_q, &W4, W4.nq, reps, 1);
            const float td = gb_time_calls(stream, run_dense, &W4, W4.nd, reps, 1);
            const double gbs = (double)(cb + pb) / (tsl * 1e-3) / 1e9;
            printf("%-13s %3d | %8.2f %7.0f %5.1f | %8.2f | %8.2f | %8.2f | %6.2fx %6.2fx\n", sh, B.M, tsl * 1e3, gbs,
                   100.0 * gbs / copy_gbs, tgv * 1e3, tw4 * 1e3, td * 1e3, td / tsl, tgv / tsl);
            fflush(stdout);
        }
        unload(&W4);
        for (int i = 0; i < B.nq; i++) {
            wna16_free(B.q[i]);
            llmq_nf4_gpu_free(&B.old[i]);
        }
        g->free(g, B.x);
        g->free(g, B.y);
    }
}

/* ---- q/k/v and gate/up in one launch (wna16_linear_group) ---- */

struct grp {
    int n, K, M;
    struct bench B[WNA16_GROUP_MAX];
    void *y[WNA16_GROUP_MAX];
};

static int run_members(void *a, int i) /* each linear on its own (AUTO) */
{
    struct grp *G = a;
    for (int j = 0; j < G->n; j++)
        if (wna16_linear(G->B[j].q[i % G->B[j].nq], g, G->y[j], G->B[0].x, G->M))
            return -1;
    return 0;
}

static int run_group(void *a, int i)
{
    struct grp *G = a;
    wna16_weight *ws[WNA16_GROUP_MAX];
    for (int j = 0; j < G->n; j++)
        ws[j] = G->B[j].q[i % G->B[j].nq];
    return wna16_linear_group(ws, G->n, g, G->y, G->B[0].x, G->M) ? -1 : 0;
}

static void bench_groups(double copy_gbs)
{
    static const struct {
        const char *name;
        int n, N[WNA16_GROUP_MAX];
    } groups[] = {{"q/k/v", 3, {4096, 4096, 4096}}, {"q/k/v GQA 32:8", 3, {4096, 1024, 1024}}, {"gate/up", 2, {11008, 11008}}};
    printf("\ngroups at M = 1, K = 4096 (the linears that read one x): one launch (wna16_linear_group) vs one per linear\n");
    printf("%-16s %-7s | %9s %6s | %9s %6s | %7s\n", "group", "weight", "group us", "%copy", "apart us", "%copy", "speedup");
    for (int gi = 0; gi < 3; gi++)
        for (int bits = 4; bits <= 8; bits += 4) {
            struct grp G = {.n = groups[gi].n, .K = 4096, .M = 1};
            size_t bytes = 0;
            for (int j = 0; j < G.n; j++) {
                G.B[j] = (struct bench){.K = G.K, .N = groups[gi].N[j]};
                load(&G.B[j], bits, 128, 0, 0);
                size_t cb, pb;
                wna16_info(G.B[j].q[0], NULL, NULL, NULL, &cb, &pb);
                bytes += cb + pb;
                G.y[j] = g->alloc(g, (size_t)G.B[j].N * 2);
            }
            G.B[0].x = dev_rand(G.K, 1.0f);
            int nq = G.B[0].nq;
            for (int j = 1; j < G.n; j++)
                nq = G.B[j].nq < nq ? G.B[j].nq : nq;
            wna16_weight *ws[WNA16_GROUP_MAX];
            for (int j = 0; j < G.n; j++)
                ws[j] = G.B[j].q[0];
            const int rc = wna16_linear_group(ws, G.n, g, G.y, G.B[0].x, G.M);
            if (rc < 0)
                die("wna16_linear_group");
            const float ta = gb_time_calls(stream, run_members, &G, nq, reps, 1);
            if (rc == 1) { /* not taken: each weight fills the GPU alone */
                printf("%-16s w%dg128 | %16s | %9.2f %6.1f | (not grouped)\n", groups[gi].name, bits, "declined",
                       ta * 1e3, 100 * bytes / (ta * 1e-3) / 1e9 / copy_gbs);
                goto next;
            }
            const float tg = gb_time_calls(stream, run_group, &G, nq, reps, 1);
            const double gg = bytes / (tg * 1e-3) / 1e9, ga = bytes / (ta * 1e-3) / 1e9;
            printf("%-16s w%dg128 | %9.2f %6.1f | %9.2f %6.1f | %6.2fx\n", groups[gi].name, bits, tg * 1e3,
                   100 * gg / copy_gbs, ta * 1e3, 100 * ga / copy_gbs, ta / tg);
        next:
            fflush(stdout);
            for (int j = 0; j < G.n; j++) {
                unload(&G.B[j]);
                g->free(g, G.y[j]);
            }
            g->free(g, G.B[0].x);
        }
}

/* The tuning sweep: GEMV per-call time under each knob setting on the
 * 4-bit g128 (and 8-bit) shapes, against the copy bandwidth. */
static void sweep(double copy_gbs)
{
    static const struct {
        const char *name;
        wna16_gemv_tuning t;
    } var[] = {
        {"default", {.ring = 1}},                  {"exact-deq", {.exact_dequant = 1}},
        {"S:plan", {0}},                           {"S:w=2", {.stream_warps = 2}},
        {"S:w=3", {.stream_warps = 3}},            {"S:w=4", {.stream_warps = 4}},
        {"S:w=6", {.stream_warps = 6}},            {"S:w=8", {.stream_warps = 8}},
        {"S:w=16", {.stream_warps = 16}},          {"S:no-pdl", {.no_pdl = 1}},
        {"S:exact", {.exact_dequant = 1}},         {"S:nofold", {.stream_nofold = 1}},
        {"S:no-xs", {.stream_no_xs = 1}},          {"S:no-xs,w=8", {.stream_no_xs = 1, .stream_warps = 8}},
        {"S:pf=8", {.stream_prefetch = 8}},        {"S:dry", {.stream_dry = 1}},
        {"S:dry,w=16", {.stream_dry = 1, .stream_warps = 16}},
    };
    const int nvar = (int)(sizeof var / sizeof var[0]);
    static const int Ms[] = {1, 16};
    static const int bitsv[] = {4, 8};
    float res[3][2][2][32];
    for (int s = 0; s < 3; s++) {
        struct bench B = {.K = shapes[s][0], .N = shapes[s][1], .path = WNA16_GEMV};
        B.x = dev_rand((size_t)64 * B.K, 1.0f);
        B.y = g->alloc(g, (size_t)64 * B.N * 2);
        if (!B.y)
            die("alloc");
        for (int bi = 0; bi < 2; bi++) {
            load(&B, bitsv[bi], 128, 0, 0);
            size_t cb, pb;
            wna16_info(B.q[0], NULL, NULL, NULL, &cb, &pb);
            for (int mi = 0; mi < 2; mi++) {
                B.M = Ms[mi];
                for (int v = 0; v < nvar; v++) {
                    wna16_gemv_tune(&var[v].t);
                    B.path = strncmp(var[v].name, "S:", 2) == 0 ? WNA16_STREAM : WNA16_GEMV;
                    res[s][bi][mi][v] = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                    const double gbs = (double)(cb + pb) / (res[s][bi][mi][v] * 1e-3) / 1e9;
                    printf("sweep %5d->%-5d w%d M=%-2d %-12s %8.2f us %6.0f GB/s %5.1f%%\n", B.K, B.N, bitsv[bi], B.M,
                           var[v].name, res[s][bi][mi][v] * 1e3, gbs, 100.0 * gbs / copy_gbs);
                }
                wna16_gemv_tune(NULL);
            }
            unload(&B);
        }
        g->free(g, B.x);
        g->free(g, B.y);
    }
    printf("\nsweep summary (us, graph replay, g128; S: = the stream kernel, else round 2's ring GEMV):\n%-12s",
           "variant");
    for (int s = 0; s < 3; s++)
        for (int bi = 0; bi < 2; bi++)
            for (int mi = 0; mi < 2; mi++)
                printf(" %c%d/w%d/M%-2d", "abc"[s], s, bitsv[bi], Ms[mi]);
    printf("\n");
    for (int v = 0; v < nvar; v++) {
        printf("%-12s", var[v].name);
        for (int s = 0; s < 3; s++)
            for (int bi = 0; bi < 2; bi++)
                for (int mi = 0; mi < 2; mi++)
                    printf(" %11.2f", res[s][bi][mi][v] * 1e3);
        printf("\n");
    }
    printf("(a0 = 4096->4096, b1 = 4096->11008, c2 = 11008->4096)\n");
}

/* The slice kernel's splits: every tiles x warps-per-tile x K-slices plan
 * it takes on the g128 shapes at M = 4, 8, 16, against its own plan, the
 * ring GEMV and cuBLAS fp16 in the same run. One line per timing, then a
 * summary per shape. */
static void slice_sweep(double copy_gbs)
{
    static const int Ms[] = {4, 8, 16}, bitsv[] = {4, 8};
    char sum[3 * 2 * 3][240];
    int ns = 0, only_k = 0, only_n = 0, only_m = 0; /* BENCH_KN=K,N and BENCH_M=M: one shape, one M */
    bench_kn(&only_k, &only_n);
    if (getenv("BENCH_M"))
        only_m = atoi(getenv("BENCH_M"));
    for (int s = 0; s < 3; s++) {
        struct bench B = {.K = shapes[s][0], .N = shapes[s][1]};
        if (only_k && (B.K != only_k || B.N != only_n))
            continue;
        float tdm[3] = {0}; /* cuBLAS fp16 per M, timed with the 4-bit weight's dense copy */
        B.x = dev_rand((size_t)16 * B.K, 1.0f);
        B.y = g->alloc(g, (size_t)16 * B.N * 2);
        if (!B.y)
            die("alloc");
        for (int bi = 0; bi < 2; bi++) {
            load(&B, bitsv[bi], 128, 0, bi == 0);
            size_t cb, pb;
            wna16_info(B.q[0], NULL, NULL, NULL, &cb, &pb);
            for (int mi = 0; mi < 3; mi++) {
                B.M = Ms[mi];
                if (only_m && B.M != only_m)
                    continue;
                wna16_gemv_tune(NULL);
                B.path = WNA16_GEMV;
                const float tr = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                if (B.nd)
                    tdm[mi] = gb_time_calls(stream, run_dense, &B, B.nd, reps, 1);
                const float td = tdm[mi];
                B.path = WNA16_SLICE;
                const float tp = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                float best = tp;
                int bt = 0, bw = 0, bk = 0;
                int pt = 0, pw = 0, pk = 0;
                wna16_slice_plan_ran(B.q[0], B.M, &pt, &pw, &pk);
                static const int tbs[] = {1, 2, 4, 6, 8, 9, 10, 12, 16, 18, 20, 24, 32}, kss[] = {1, 2, 3, 4, 6, 8};
                for (int ti = 0; ti < 13; ti++)
                    for (int wpt = 1; tbs[ti] * wpt <= 32; wpt *= 2)
                        for (int ki = 0; ki < 6; ki++) {
                            const int tb = tbs[ti], ks = kss[ki];
                            wna16_gemv_tuning t = {.slice_tb = tb, .slice_wpt = wpt, .slice_ks = ks};
                            wna16_gemv_tune(&t);
                            int rt, rw, rk; /* forced values no plan has fall back to the planned split */
                            if (!path_takes(&B) || wna16_slice_plan_ran(B.q[0], B.M, &rt, &rw, &rk) || rt != tb ||
                                rw != wpt || rk != ks)
                                continue;
                            const float tt = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                            const double gbs = (double)(cb + pb) / (tt * 1e-3) / 1e9;
                            printf("slices %5d->%-5d w%d M=%-2d tb %2d wpt %d ks %d %8.2f us %5.1f%% copy\n", B.K, B.N,
                                   bitsv[bi], B.M, tb, wpt, ks, tt * 1e3, 100.0 * gbs / copy_gbs);
                            if (tt < best) {
                                best = tt;
                                bt = tb;
                                bw = wpt;
                                bk = ks;
                            }
                        }
                wna16_gemv_tune(NULL);
                const double gbs = (double)(cb + pb) / (tp * 1e-3) / 1e9;
                snprintf(sum[ns++], sizeof sum[0],
                         "%5d->%-5d w%d M=%-2d | %7.2f %5.1f%% (tb %2d wpt %2d ks %d) | %7.2f (tb %2d wpt %2d ks %d) | "
                         "%7.2f | %7.2f | %5.2fx %5.2fx",
                         B.K, B.N, bitsv[bi], B.M, tp * 1e3, 100.0 * gbs / copy_gbs, pt, pw, pk, best * 1e3, bt, bw,
                         bk, tr * 1e3, td * 1e3, td / tp, tr / tp);
                fflush(stdout);
            }
            unload(&B);
        }
        g->free(g, B.x);
        g->free(g, B.y);
    }
    printf("\nslice summary (us, graph replay, g128, copy %.0f GB/s): planned (%% of copy, its split) | best forced "
           "split (tb 0: none beat the plan) | ring | cuBLAS fp16 | cuBLAS / planned, ring / "
           "planned\n",
           copy_gbs);
    for (int i = 0; i < ns; i++)
        printf("%s\n", sum[i]);
}

/* For a profiler: 4096->11008 w4g128 (BENCH_KN=K,N another shape), 20
 * calls at M = 1, then 20 at M = 16 (BENCH_M=M another; BENCH_BITS=8: w8g128), launched one by one (ncu
 * --launch-skip picks one), through the stream kernel, or with "slice" the
 * slice kernel. */
static void profile(int path)
{
    struct bench B = {.K = 4096, .N = 11008, .path = path};
    bench_kn(&B.K, &B.N);
    wna16_gemv_tuning t = {0}; /* BENCH_SLICE=tb,wpt,ks forces a slice plan */
    if (getenv("BENCH_SLICE") &&
        sscanf(getenv("BENCH_SLICE"), "%d,%d,%d", &t.slice_tb, &t.slice_wpt, &t.slice_ks) == 3)
        wna16_gemv_tune(&t);
    B.x = dev_rand((size_t)16 * B.K, 1.0f);
    B.y = g->alloc(g, (size_t)16 * B.N * 2);
    if (!B.y)
        die("alloc");
    load(&B, getenv("BENCH_BITS") ? atoi(getenv("BENCH_BITS")) : 4, 128, 0, 0); /* BENCH_BITS=8: w8g128 */
    const int m2 = getenv("BENCH_M") ? atoi(getenv("BENCH_M")) : 16; /* the second M */
    for (int mi = 0; mi < 2; mi++) {
        B.M = mi ? m2 : 1;
        for (int i = 0; i < 20; i++)
            if (run_q(&B, i % B.nq))
                die("profile");
    }
    cuda_ok(cudaStreamSynchronize(stream), "sync");
    unload(&B);
    g->free(g, B.x);
    g->free(g, B.y);
}

/* AUTO alone (and cuBLAS fp16 on the dense weight) at M = 1..64 on the g128
 * shapes, a line per timing: the quick table for comparing builds or
 * launch settings (BENCH_KN=K,N restricts it to one shape). */
static void bench_auto(void)
{
    static const int Ms[] = {1, 4, 8, 16, 32, 64};
    static const struct {
        const char *name;
        int bits, act;
    } cfgs[] = {{"w4g128", 4, 0}, {"w8g128", 8, 0}, {"w4g128act", 4, 1}};
    int only_k = 0, only_n = 0;
    bench_kn(&only_k, &only_n);
    for (int s = 0; s < 3; s++) {
        struct bench B = {.K = shapes[s][0], .N = shapes[s][1], .path = WNA16_AUTO};
        if (only_k && (B.K != only_k || B.N != only_n))
            continue;
        float td[6] = {0};
        B.x = dev_rand((size_t)64 * B.K, 1.0f);
        B.y = g->alloc(g, (size_t)64 * B.N * 2);
        if (!B.y)
            die("alloc");
        for (int c = 0; c < 3; c++) {
            load(&B, cfgs[c].bits, 128, cfgs[c].act, c == 0);
            for (int mi = 0; mi < 6; mi++) {
                B.M = Ms[mi];
                const float ta = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                if (c == 0)
                    td[mi] = gb_time_calls(stream, run_dense, &B, B.nd, reps, 1);
                int tb = 0, wpt = 0, ks = 0;
                wna16_slice_plan_ran(B.q[0], B.M, &tb, &wpt, &ks);
                printf("auto %c%d %-9s M=%-2d %8.2f us  cuBLAS %8.2f  %5.2fx  plan %d,%d,%d\n", "abc"[s], s,
                       cfgs[c].name, B.M, ta * 1e3, td[mi] * 1e3, td[mi] / ta, tb, wpt, ks);
                fflush(stdout);
            }
            unload(&B);
        }
        g->free(g, B.x);
        g->free(g, B.y);
    }
}

int main(int argc, char **argv)
{
    int do_sweep = 0, do_auto = 0, do_profile = 0, do_groups = 0, do_slices = 0, do_nf4 = 0, prof_path = WNA16_STREAM;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "sweep") == 0)
            do_sweep = 1;
        else if (strcmp(argv[i], "groups") == 0)
            do_groups = 1;
        else if (strcmp(argv[i], "slices") == 0)
            do_slices = 1;
        else if (strcmp(argv[i], "nf4") == 0)
            do_nf4 = 1;
        else if (strcmp(argv[i], "auto") == 0)
            do_auto = 1;
        else if (strcmp(argv[i], "profile") == 0)
            do_profile = 1;
        else if (strcmp(argv[i], "slice") == 0)
            prof_path = WNA16_SLICE;
        else
            reps = atoi(argv[i]) > 2 ? atoi(argv[i]) : 3;
    }
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 77;
    }
    if (llmq_backend_cuda(&g, 0, LLMQ_F16))
        die("backend");
    stream = (cudaStream_t)llmq_cuda_stream(g);
    if (do_profile) {
        profile(prof_path);
        g->destroy(g);
        return 0;
    }
    gb_print_header("bench_wna16", reps);

    const double copy_gbs = gb_copy_gbs(stream, reps);
    if (do_sweep || do_groups || do_slices || do_nf4 || do_auto) {
        if (do_auto)
            bench_auto();
        else if (do_nf4)
            bench_nf4(copy_gbs);
        else if (do_sweep)
            sweep(copy_gbs);
        else if (do_slices)
            slice_sweep(copy_gbs);
        else
            bench_groups(copy_gbs);
        g->destroy(g);
        return 0;
    }

    static const struct {
        const char *name;
        int bits, G, act;
    } cfgs[] = {{"w4g128", 4, 128, 0}, {"w4g128act", 4, 128, 1}, {"w8g128", 8, 128, 0}, {"w8perch", 8, 0, 0}};
    enum { NCFG = sizeof cfgs / sizeof cfgs[0] };
    enum { NDM = 5 };
    static const int decode_M[NDM] = {1, 4, 16, 32, 64}, prefill_M[] = {128, 512};
    char lines[3][NCFG][NDM][224];

    for (int s = 0; s < 3; s++) {
        struct bench B = {.K = shapes[s][0], .N = shapes[s][1], .path = WNA16_AUTO};
        float td[NDM] = {0};
        char sh[32];
        snprintf(sh, sizeof sh, "%d->%d", B.K, B.N);
        B.x = dev_rand((size_t)512 * B.K, 1.0f);
        B.y = g->alloc(g, (size_t)512 * B.N * 2);
        if (!B.y)
            die("alloc");
        for (int c = 0; c < NCFG; c++) {
            load(&B, cfgs[c].bits, cfgs[c].G ? cfgs[c].G : B.K, cfgs[c].act, c == 0); /* G 0: one group */
            size_t cb, pb;
            wna16_info(B.q[0], NULL, NULL, NULL, &cb, &pb);
            for (int mi = 0; mi < NDM; mi++) {
                B.M = decode_M[mi];
                B.path = WNA16_AUTO;
                const float ta = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                const float tl = gb_time_calls(stream, run_q, &B, B.nq, reps, 0); /* host launches */
                B.path = WNA16_STREAM;
                const float ts = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                B.path = WNA16_SLICE;
                const float tsl = path_takes(&B) ? gb_time_calls(stream, run_q, &B, B.nq, reps, 1) : NAN;
                B.path = WNA16_GEMV;
                const float tg = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                B.path = WNA16_MMA;
                const float tm = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                const double gbs = (double)(cb + pb) / (ta * 1e-3) / 1e9;
                if (c == 0)
                    td[mi] = gb_time_calls(stream, run_dense, &B, B.nd, reps, 1);
                const double dgbs = (double)B.N * B.K * 2 / (td[mi] * 1e-3) / 1e9;
                snprintf(lines[s][c][mi], sizeof lines[s][c][mi],
                         "%-13s %-10s %3d | %8.2f %7.0f %5.1f | %8.2f | %8.2f | %8.2f | %8.2f | %8.2f | %8.2f %7.0f | "
                         "%6.2fx %6.2fx",
                         sh, cfgs[c].name, B.M, ta * 1e3, gbs, 100.0 * gbs / copy_gbs, tl * 1e3, ts * 1e3, tsl * 1e3,
                         tg * 1e3, tm * 1e3, td[mi] * 1e3, dgbs, td[mi] / ta, td[mi] / tg);
                printf("%s\n", lines[s][c][mi]);
                fflush(stdout);
            }
            if (c == 0) {
                /* Prefill on the same weight: MMA, dequantize alone, SCRATCH
                 * (dequantize + cuBLAS), cuBLAS on the dense weight. */
                void *scratch = g->alloc(g, (size_t)B.N * B.K * 2);
                if (!scratch)
                    die("alloc");
                for (int i = 0; i < B.nq; i++)
                    wna16_set_scratch(B.q[i], scratch, (size_t)B.N * B.K * 2);
                B.path = WNA16_AUTO;
                const float tq = gb_time_calls(stream, run_dequant, &B, B.nq, reps, 1);
                printf("%-13s dequantize to fp16: %.1f us (%.0f GB/s written + read)\n", sh, tq * 1e3,
                       ((double)B.N * B.K * 2 + (double)(cb + pb)) / (tq * 1e-3) / 1e9);
                for (int mi = 0; mi < 2; mi++) {
                    B.M = prefill_M[mi];
                    const double flop = 2.0 * B.M * B.K * B.N;
                    B.path = WNA16_MMA;
                    const float tm = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                    B.path = WNA16_SCRATCH;
                    const float ts = gb_time_calls(stream, run_q, &B, B.nq, reps, 1);
                    const float tdd = gb_time_calls(stream, run_dense, &B, B.nd, reps, 1);
                    printf("%-13s prefill M=%d: mma %.1f us (%.0f TFLOP/s), scratch %.1f us (%.0f), "
                           "cuBLAS fp16 %.1f us (%.0f); speedup mma %.2fx, scratch %.2fx\n",
                           sh, B.M, tm * 1e3, flop / (tm * 1e-3) / 1e12, ts * 1e3, flop / (ts * 1e-3) / 1e12, tdd * 1e3,
                           flop / (tdd * 1e-3) / 1e12, tdd / tm, tdd / ts);
                }
                g->free(g, scratch);
            }
            unload(&B);
        }
        g->free(g, B.x);
        g->free(g, B.y);
    }
    printf("\ndecode (fp16), copy %.0f GB/s: us per call (graph replay) of AUTO's choice; GB/s of weight bytes\n"
           "read (codes + scales/zeros) and %% of copy; launch = the same calls launched one by one from the host;\n"
           "stream, slice (nan: not taken), ring = round 2's GEMV, mma = the first kernel, each forced; cuBLAS on\n"
           "the dense fp16 weight (GB/s of its fp16 bytes); speedup = cuBLAS / auto, cuBLAS / ring\n",
           copy_gbs);
    printf("%-13s %-10s %3s | %8s %7s %5s | %8s | %8s | %8s | %8s | %8s | %8s %7s | %7s %7s\n", "K->N", "weight", "M",
           "auto", "GB/s", "%copy", "launch", "stream", "slice", "ring us", "mma us", "cuBLAS", "GB/s", "speedup",
           "ring");
    for (int s = 0; s < 3; s++)
        for (int c = 0; c < NCFG; c++)
            for (int mi = 0; mi < NDM; mi++)
                printf("%s\n", lines[s][c][mi]);
    g->destroy(g);
    return 0;
}
