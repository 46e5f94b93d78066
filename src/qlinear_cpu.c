/* The CPU references of the real-quant linears (src/qlinear.h). Buffers are
 * host float32 (the CPU backend's storage). */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "../quant/nf4_gemv_ref.h"
#include "../quant/w8a8_ref.h"
#include "error.h"
#include "qlinear.h"

static void add_bias(const llmq_linear *lin, float *y, int rows)
{
    if (!lin->bias)
        return;
    for (int r = 0; r < rows; r++)
        for (int n = 0; n < lin->out; n++)
            y[(size_t)r * lin->out + n] += ((const float *)lin->bias)[n];
}

static void free_host_ctx(llmq_linear *lin, llmq_backend *b)
{
    (void)b;
    free(lin->ctx);
    lin->ctx = NULL;
}

/* ---- W4A16 / W8A16: W = s * (q - z) formed in fp32 once (exact there:
 * quant/wna16_ref.h), products in fp32 ---- */

static int int_forward(llmq_linear *lin, llmq_backend *b, void *y, const void *x, int rows)
{
    (void)b;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, lin->out, lin->in, 1.0f, x, lin->in, lin->ctx, lin->in,
                0.0f, y, lin->out);
    add_bias(lin, y, rows);
    return 0;
}

int qlinear_int_cpu(llmq_linear *lin, const llmq_qweight *q)
{
    float *w = malloc((size_t)q->out * q->in * sizeof *w);
    if (!w)
        return llmq_fail("out of memory");
    qweight_dequant(q, w);
    lin->ctx = w, lin->forward = int_forward, lin->free_ctx = free_host_ctx;
    return 0;
}

/* ---- NF4 ---- */

static int nf4_forward(llmq_linear *lin, llmq_backend *b, void *y, const void *x, int rows)
{
    (void)b;
    if (nf4_gemv_ref(lin->ctx, lin->out, lin->in, x, rows, y))
        return -1;
    add_bias(lin, y, rows);
    return 0;
}

static void nf4_free_ctx(llmq_linear *lin, llmq_backend *b)
{
    (void)b;
    nf4_free(lin->ctx);
    free(lin->ctx);
    lin->ctx = NULL;
}

/* A copy of q that this linear owns. */
static int nf4_copy(const llmq_nf4 *q, llmq_nf4 *d)
{
    *d = *q;
    d->codes = NULL, d->absmax = NULL, d->qabsmax = NULL, d->absmax2 = NULL;
    if (!(d->codes = malloc(q->n)))
        goto oom;
    memcpy(d->codes, q->codes, q->n);
    if (q->double_quant) {
        if (!(d->qabsmax = malloc(q->nblocks)) || !(d->absmax2 = malloc(q->nblocks2 * sizeof(float))))
            goto oom;
        memcpy(d->qabsmax, q->qabsmax, q->nblocks);
        memcpy(d->absmax2, q->absmax2, q->nblocks2 * sizeof(float));
    } else {
        if (!(d->absmax = malloc(q->nblocks * sizeof(float))))
            goto oom;
        memcpy(d->absmax, q->absmax, q->nblocks * sizeof(float));
    }
    return 0;
oom:
    nf4_free(d);
    return llmq_fail("out of memory");
}

int qlinear_nf4_cpu(llmq_linear *lin, const llmq_nf4 *q)
{
    llmq_nf4 *d = malloc(sizeof *d);
    if (!d)
        return llmq_fail("out of memory");
    if (nf4_copy(q, d)) {
        free(d);
        return -1;
    }
    lin->ctx = d, lin->forward = nf4_forward, lin->free_ctx = nf4_free_ctx;
    return 0;
}

/* ---- W8A8 ---- */

typedef struct {
    qact *a;
    float *s_ch;  /* [out] */
    int8_t wq[];  /* [out, in] */
} w8a8_cpu;

static int w8a8_forward(llmq_linear *lin, llmq_backend *b, void *y, const void *x, int rows)
{
    (void)b;
    w8a8_cpu *c = lin->ctx;
    qact *a = c->a;
    if (a->src != x || a->rows != rows || a->cols != lin->in) {
        if (rows > a->max_rows || lin->in > a->max_cols)
            return llmq_fail("int8 activations: %d x %d exceed the %d x %d allocated", rows, lin->in, a->max_rows,
                             a->max_cols);
        quant_per_token_ref(x, rows, lin->in, a->q, a->s);
        a->src = x, a->rows = rows, a->cols = lin->in;
    }
    int8_gemm_ref(a->q, a->s, c->wq, c->s_ch, rows, lin->out, lin->in, NULL, y, LLMQ_F32);
    add_bias(lin, y, rows);
    return 0;
}

static void w8a8_free_ctx(llmq_linear *lin, llmq_backend *b)
{
    (void)b;
    w8a8_cpu *c = lin->ctx;
    if (c)
        free(c->s_ch);
    free(c);
    lin->ctx = NULL;
}

int qlinear_w8a8_cpu(llmq_linear *lin, const int8_t *wq, const float *s_ch, qact *a)
{
    size_t n = (size_t)lin->out * lin->in;
    w8a8_cpu *c = malloc(sizeof *c + n);
    float *s = malloc((size_t)lin->out * sizeof *s);
    if (!c || !s) {
        free(c), free(s);
        return llmq_fail("out of memory");
    }
    memcpy(c->wq, wq, n);
    memcpy(s, s_ch, (size_t)lin->out * sizeof *s);
    c->a = a, c->s_ch = s;
    lin->ctx = c, lin->forward = w8a8_forward, lin->free_ctx = w8a8_free_ctx;
    return 0;
}

int qact_norm_cpu(qact *a, void *out, void *x, const void *delta, const void *w, int rows, int dim, float eps)
{
    rmsnorm_quant_ref(LLMQ_F32, x, delta, w, rows, dim, eps, a->q, a->s);
    a->src = out, a->rows = rows, a->cols = dim;
    return 0;
}

int qact_act_cpu(qact *a, void *out, const void *gate, const void *up, int rows, int cols)
{
    silu_mul_quant_ref(LLMQ_F32, gate, up, cols, rows, cols, a->q, a->s);
    a->src = out, a->rows = rows, a->cols = cols;
    return 0;
}
