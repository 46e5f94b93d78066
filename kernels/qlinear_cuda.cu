/* The CUDA real-quant linears of src/qlinear.h: adapters from the runner's
 * linear seam to the kernels of wna16.cu (W4A16 / W8A16), nf4_gemv.cu and
 * w8a8.cu. Weights arrive as host arrays (unpacked checkpoint) and are
 * uploaded here in each kernel's layout. */
#include "kernels/cuda_common.cuh"

#include <stdlib.h>
#include <string.h>

extern "C" {
#include "kernels/nf4_gemv.h"
#include "kernels/w8a8.h"
#include "kernels/wna16.h"
#include "quant/pack.h"
#include "src/qlinear.h"
}

static cuda_ctx *cctx(llmq_backend *b) { return (cuda_ctx *)b->impl; }

/* ---- W4A16 / W8A16: the GPTQ v2 packing wna16_prepare reads (with a
 * partly filled last word where K or N is not a multiple of 32/bits) ---- */

extern "C" int qlinear_int_cuda(llmq_linear *lin, llmq_backend *b, const llmq_qweight *q, const qdense *scratch)
{
    const int K = q->in, N = q->out, ng = q->ngroups, pf = 32 / q->bits;
    const size_t rows = (size_t)(K + pf - 1) / pf, zcols = (size_t)(N + pf - 1) / pf;
    int32_t *qweight = (int32_t *)malloc(rows * N * 4), *qzeros = (int32_t *)malloc(ng * zcols * 4);
    uint16_t *scales = (uint16_t *)malloc((size_t)ng * N * 2);
    uint8_t *col = (uint8_t *)malloc((size_t)(K > N ? K : N));
    int rc = -1;
    wna16_weight *w = NULL;
    if (!qweight || !qzeros || !scales || !col) {
        llmq_fail("out of memory");
        goto done;
    }
    for (int n = 0; n < N; n++) { /* column n of qweight: q[n, 0..K) along K */
        pack_bits(q->q + (size_t)n * K, K, q->bits, (uint32_t *)qweight + n, N);
    }
    for (int g = 0; g < ng; g++) {
        for (int n = 0; n < N; n++) {
            float z = q->zeros[(size_t)g * N + n];
            if (z < 0 || z > (1 << q->bits) - 1 || z != (float)(int)z) {
                llmq_fail("zero point %g of group %d, channel %d is not a %d-bit integer", z, g, n, q->bits);
                goto done;
            }
            col[n] = (uint8_t)z;
        }
        pack_bits(col, N, q->bits, (uint32_t *)qzeros + g * zcols, 1);
    }
    gptq_pack_scales(q, scales);
    if (wna16_prepare(&w, b, qweight, qzeros, scales, q->g_idx, q->in, q->out, q->bits, 1))
        goto done;
    if (scratch && scratch->p) /* AUTO: the GEMV kernels up to 64 rows, dequant + cuBLAS beyond */
        wna16_set_scratch(w, scratch->p, scratch->bytes);
    lin->ctx = w, lin->forward = wna16_forward, lin->forward_group = wna16_forward_group, lin->free_ctx = wna16_free_ctx;
    rc = 0;
done:
    free(qweight), free(qzeros), free(scales), free(col);
    return rc;
}

/* ---- NF4 ---- */

/* The GEMV kernel takes up to this many rows per launch. */
enum { NF4_ROWS = 8 };

typedef struct {
    llmq_nf4_gpu w;
    qdense scratch;
} nf4_lin;

static int nf4_forward(llmq_linear *lin, llmq_backend *b, void *y, const void *x, int rows)
{
    nf4_lin *L = (nf4_lin *)lin->ctx;
    const llmq_nf4_gpu *w = &L->w;
    size_t es = llmq_dtype_size(b->dt);
    /* Decode batches of up to 8 rows take one pass over the weight, up to
     * 32 rows up to four. Longer inputs dequantize into the shared scratch
     * and run cuBLAS: the dequantization writes a dense W and cuBLAS reads
     * it, about four passes' worth of bytes, so below 32 rows the repeated
     * GEMV is cheaper (measured on the 7B shape: dequantizing at 16 rows
     * made a decode step 4.5x slower than at 1 row). Without a scratch the
     * GEMV always repeats per 8 rows. */
    if (rows > 4 * NF4_ROWS && L->scratch.p && L->scratch.bytes >= (size_t)lin->out * lin->in * es)
        return llmq_nf4_dequant(cctx(b)->stream, b->dt, L->scratch.p, w) ||
               b->linear(b, y, x, L->scratch.p, lin->bias, rows, lin->in, lin->out);
    for (int r0 = 0; r0 < rows; r0 += NF4_ROWS) {
        int m = rows - r0 < NF4_ROWS ? rows - r0 : NF4_ROWS;
        if (llmq_nf4_gemv(cctx(b)->stream, b->dt, (char *)y + (size_t)r0 * lin->out * es,
                          (const char *)x + (size_t)r0 * lin->in * es, w, m))
            return -1;
    }
    if (lin->bias && cuda_add_bias(cctx(b), b->dt, y, lin->bias, rows, lin->out))
        return -1;
    return 0;
}

static void nf4_free_ctx(llmq_linear *lin, llmq_backend *b)
{
    (void)b;
    nf4_lin *L = (nf4_lin *)lin->ctx;
    if (L)
        llmq_nf4_gpu_free(&L->w);
    free(L);
    lin->ctx = NULL;
}

extern "C" int qlinear_nf4_cuda(llmq_linear *lin, llmq_backend *b, const llmq_nf4 *q, const qdense *scratch)
{
    /* Hopper and K a multiple of 256 (every real model): the slice kernel
     * at every batch, on a repacked copy (the only one kept), and
     * dequantization + cuBLAS for prefill. Elsewhere the GEMV below. */
    if (q->blocksize == 64 && wna16_nf4_supported(b, lin->in)) {
        wna16_weight *w = NULL;
        if (wna16_prepare_nf4(&w, b, q, lin->in, lin->out))
            return -1;
        if (scratch && scratch->p)
            wna16_set_scratch(w, scratch->p, scratch->bytes);
        lin->ctx = w, lin->forward = wna16_forward, lin->forward_group = wna16_forward_group;
        lin->free_ctx = wna16_free_ctx;
        return 0;
    }
    nf4_lin *L = (nf4_lin *)calloc(1, sizeof *L);
    if (!L)
        return llmq_fail("out of memory");
    if (llmq_nf4_gpu_upload(&L->w, q, lin->out, lin->in)) {
        free(L);
        return -1;
    }
    if (scratch)
        L->scratch = *scratch;
    lin->ctx = L, lin->forward = nf4_forward, lin->free_ctx = nf4_free_ctx;
    return 0;
}

/* ---- W8A8 ---- */

/* A linear's int32 product left for its one reader to rescale (qout): the
 * dt tensor y stands for it and has not been written. */
struct w8a8_pending {
    void *y;      /* the output it stands for; NULL: nothing pending */
    int32_t *acc; /* [rows, cols] */
    size_t cap;   /* bytes allocated at acc */
    const float *tok, *ch;
    int rows, cols;
};

/* The CUDA state of a qact (qact.impl), shared by the linears that use it:
 * one cuBLASLt context (handle, workspace, int32 scratch) and one pending
 * product per qout. */
struct qact_gpu {
    llmq_w8a8_ctx *gemm;
    w8a8_pending pend[4]; /* [qout]; [QOUT_ANY] unused */
};

struct w8a8_gpu {
    qact *a;
    int8_t *wq;  /* [out, in] */
    float *s_ch; /* [out] */
    qout out;
};

static qact_gpu *qg(qact *a) { return (qact_gpu *)a->impl; }

/* A deferred product may take this many bytes (three can be alive at once:
 * o, then gate and up); beyond it the linear rescales as usual. */
#define W8A8_PENDING_MAX LLMQ_W8A8_DEFAULT_SCRATCH

static w8a8_pending *pending_of(qact *a, const void *y)
{
    for (w8a8_pending &p : qg(a)->pend)
        if (p.y && p.y == y)
            return &p;
    return NULL;
}

/* Write a pending product out as the dt tensor it stands for: a reader
 * other than its fused producer (not one of model.c's, but cheap to be
 * safe), or one that takes only part of the pair. */
static int pending_flush(llmq_backend *b, w8a8_pending *p)
{
    if (!p || !p->y)
        return 0;
    void *y = p->y;
    p->y = NULL;
    return llmq_w8a8_rescale(cctx(b)->stream, b->dt, y, p->acc, p->tok, p->ch, p->rows, p->cols);
}

/* Every pending product but keep: before a->s, which their token scales
 * are, is overwritten (in model.c's order there are none). */
static int pending_flush_others(qact *a, llmq_backend *b, const w8a8_pending *keep1, const w8a8_pending *keep2)
{
    for (w8a8_pending &p : qg(a)->pend)
        if (&p != keep1 && &p != keep2 && pending_flush(b, &p))
            return -1;
    return 0;
}

/* The int8 form of x in a: made here unless a fused producer (or the
 * linear before, reading the same x) left it. */
static int qact_of(qact *a, llmq_backend *b, const void *x, int rows, int cols)
{
    if (pending_flush(b, pending_of(a, x)))
        return -1;
    if (a->src == x && a->rows == rows && a->cols == cols)
        return 0;
    if (pending_flush_others(a, b, NULL, NULL))
        return -1;
    if (rows > a->max_rows || cols > a->max_cols)
        return llmq_fail("int8 activations: %d x %d exceed the %d x %d allocated", rows, cols, a->max_rows,
                         a->max_cols);
    if (llmq_quant_per_token(cctx(b)->stream, b->dt, a->q, a->s, x, rows, cols))
        return -1;
    a->src = x, a->rows = rows, a->cols = cols;
    return 0;
}

/* The int32 product into the pending slot of g's reader: prefill linears
 * (cuBLASLt; decode batches take the GEMV, whose epilogue rescales) with
 * one fused reader and no bias. 1: not deferred (nothing done). */
static int w8a8_defer(llmq_linear *lin, llmq_backend *b, w8a8_gpu *g, void *y, int rows)
{
    const size_t bytes = (size_t)rows * lin->out * sizeof(int32_t);
    if (g->out == QOUT_ANY || lin->bias || rows <= LLMQ_W8A8_GEMV_MAX_M || bytes > W8A8_PENDING_MAX)
        return 1;
    qact *a = g->a;
    w8a8_pending *p = &qg(a)->pend[g->out];
    if (pending_flush(b, p)) /* its reader did not come: a runner other than model.c's */
        return -1;
    if (bytes > p->cap) {
        CUDA_TRY(cudaStreamSynchronize(cctx(b)->stream)); /* the old buffer may still be read */
        CUDA_TRY(cudaFree(p->acc));
        p->acc = NULL;
        p->cap = 0;
        if (cudaMalloc(&p->acc, bytes) != cudaSuccess) {
            cudaGetLastError();
            return 1; /* no room: rescale as usual */
        }
        p->cap = bytes;
    }
    if (llmq_int8_gemm_i32(qg(a)->gemm, p->acc, a->q, g->wq, rows, lin->out, lin->in))
        return -1;
    *p = w8a8_pending{y, p->acc, p->cap, a->s, g->s_ch, rows, lin->out};
    return 0;
}

static int w8a8_forward(llmq_linear *lin, llmq_backend *b, void *y, const void *x, int rows)
{
    w8a8_gpu *g = (w8a8_gpu *)lin->ctx;
    qact *a = g->a;
    if (qact_of(a, b, x, rows, lin->in))
        return -1;
    if (w8a8_pending *p = pending_of(a, y)) /* overwritten: its reader is gone */
        p->y = NULL;
    const int d = w8a8_defer(lin, b, g, y, rows);
    if (d <= 0)
        return d;
    if (llmq_w8a8_gemm(qg(a)->gemm, b->dt, y, a->q, a->s, g->wq, g->s_ch, rows, lin->out, lin->in))
        return -1;
    if (lin->bias && cuda_add_bias(cctx(b), b->dt, y, lin->bias, rows, lin->out))
        return -1;
    return 0;
}

/* q/k/v or gate/up of a decode batch: one GEMV launch for the group. */
static int w8a8_forward_group(llmq_linear *first, int n, llmq_backend *b, void *const *y, const void *x, int rows)
{
    if (n < 1 || n > LLMQ_W8A8_GEMV_GROUP || rows > LLMQ_W8A8_GEMV_MAX_M)
        return 1;
    const int8_t *w[LLMQ_W8A8_GEMV_GROUP];
    const float *s_ch[LLMQ_W8A8_GEMV_GROUP];
    int N[LLMQ_W8A8_GEMV_GROUP];
    qact *a = ((w8a8_gpu *)first->ctx)->a;
    for (int i = 0; i < n; i++) {
        const w8a8_gpu *g = (const w8a8_gpu *)first[i].ctx;
        if (first[i].forward != w8a8_forward || g->a != a || first[i].in != first->in)
            return 1;
        w[i] = g->wq, s_ch[i] = g->s_ch, N[i] = first[i].out;
    }
    if (qact_of(a, b, x, rows, first->in))
        return -1;
    for (int i = 0; i < n; i++)
        if (w8a8_pending *p = pending_of(a, y[i]))
            p->y = NULL;
    if (llmq_w8a8_gemv_group(cctx(b)->stream, b->dt, n, y, a->q, a->s, w, s_ch, N, rows, first->in))
        return -1;
    for (int i = 0; i < n; i++)
        if (first[i].bias && cuda_add_bias(cctx(b), b->dt, y[i], first[i].bias, rows, first[i].out))
            return -1;
    return 0;
}

static void w8a8_free_ctx(llmq_linear *lin, llmq_backend *b)
{
    w8a8_gpu *g = (w8a8_gpu *)lin->ctx;
    if (g) {
        if (g->wq)
            b->free(b, g->wq);
        if (g->s_ch)
            b->free(b, g->s_ch);
    }
    free(g);
    lin->ctx = NULL;
}

extern "C" int qlinear_w8a8_cuda(llmq_linear *lin, llmq_backend *b, const int8_t *wq, const float *s_ch, qact *a,
                                 qout out)
{
    if (!a->impl) {
        qact_gpu *q = (qact_gpu *)calloc(1, sizeof *q);
        if (!q)
            return llmq_fail("out of memory");
        if (llmq_w8a8_create(&q->gemm, cctx(b)->stream)) {
            free(q);
            return -1;
        }
        a->impl = q;
    }
    w8a8_gpu *g = (w8a8_gpu *)calloc(1, sizeof *g);
    if (!g)
        return llmq_fail("out of memory");
    size_t n = (size_t)lin->out * lin->in;
    g->a = a;
    g->out = out;
    if (!(g->wq = (int8_t *)b->alloc(b, n)) || !(g->s_ch = (float *)b->alloc(b, (size_t)lin->out * 4)) ||
        b->upload_bytes(b, g->wq, wq, n) || b->upload_bytes(b, g->s_ch, s_ch, (size_t)lin->out * 4) || b->sync(b)) {
        lin->ctx = g;
        w8a8_free_ctx(lin, b);
        return -1;
    }
    lin->ctx = g, lin->forward = w8a8_forward, lin->forward_group = w8a8_forward_group, lin->free_ctx = w8a8_free_ctx;
    return 0;
}

extern "C" void qact_release_cuda(qact *a)
{
    qact_gpu *q = qg(a);
    if (!q)
        return;
    llmq_w8a8_destroy(q->gemm);
    for (w8a8_pending &p : q->pend)
        cudaFree(p.acc);
    free(q);
    a->impl = NULL;
}

extern "C" int qact_norm_cuda(qact *a, llmq_backend *b, void *out, void *x, const void *delta, const void *w, int rows,
                              int dim, float eps)
{
    cudaStream_t st = cctx(b)->stream;
    w8a8_pending *p = a->impl && delta ? pending_of(a, delta) : NULL;
    if (a->impl && pending_flush_others(a, b, p, NULL))
        return -1;
    if (p && p->rows == rows && p->cols == dim) { /* o_proj's product, rescaled as it is added */
        p->y = NULL;
        if (llmq_rmsnorm_quant_acc(st, b->dt, a->q, a->s, x, p->acc, p->tok, p->ch, w, rows, dim, eps))
            return -1;
    } else if (pending_flush(b, p) || llmq_rmsnorm_quant(st, b->dt, a->q, a->s, x, delta, w, rows, dim, eps)) {
        return -1;
    }
    a->src = out, a->rows = rows, a->cols = dim;
    return 0;
}

extern "C" int qact_act_cuda(qact *a, llmq_backend *b, void *out, const void *gate, const void *up, int rows, int cols)
{
    cudaStream_t st = cctx(b)->stream;
    w8a8_pending *pg = a->impl ? pending_of(a, gate) : NULL, *pu = a->impl ? pending_of(a, up) : NULL;
    if (a->impl && pending_flush_others(a, b, pg, pu))
        return -1;
    if (pg && pu && pg->rows == rows && pu->rows == rows && pg->cols == cols && pu->cols == cols &&
        pg->tok == pu->tok) { /* gate and up from one x: rescaled on the fly */
        pg->y = pu->y = NULL;
        if (llmq_silu_mul_quant_acc(st, b->dt, a->q, a->s, pg->acc, pg->ch, pu->acc, pu->ch, pg->tok, rows, cols))
            return -1;
    } else if (pending_flush(b, pg) || pending_flush(b, pu) ||
               llmq_silu_mul_quant(st, b->dt, a->q, a->s, gate, up, cols, rows, cols)) {
        return -1;
    }
    a->src = out, a->rows = rows, a->cols = cols;
    return 0;
}
