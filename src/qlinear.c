/* The backend-independent half of src/qlinear.h: the shared int8
 * activations and the choice between the CPU reference and CUDA. */
#include "qlinear.h"

#include <string.h>

#include "error.h"

static int is_cuda(const llmq_backend *b) { return strcmp(b->name, "cuda") == 0; }

#ifdef LLMQ_HAVE_CUDA
#define PICK(cuda_call, cpu_call) return is_cuda(b) ? (cuda_call) : (cpu_call)
#else
#define PICK(cuda_call, cpu_call)                                                                                   \
    do {                                                                                                            \
        if (is_cuda(b))                                                                                             \
            return llmq_fail("real-quant kernels: llmq was built without CUDA");                                    \
        return (cpu_call);                                                                                          \
    } while (0)
#endif

int qact_alloc(qact *a, llmq_backend *b, int max_rows, int max_cols)
{
    memset(a, 0, sizeof *a);
    a->max_rows = max_rows, a->max_cols = max_cols;
    if (!(a->q = b->alloc(b, (size_t)max_rows * max_cols)) || !(a->s = b->alloc(b, (size_t)max_rows * sizeof(float)))) {
        qact_free(a, b);
        return llmq_wrap("int8 activations for %d x %d", max_rows, max_cols);
    }
    return 0;
}

void qact_free(qact *a, llmq_backend *b)
{
#ifdef LLMQ_HAVE_CUDA
    if (a->impl)
        qact_release_cuda(a);
#endif
    if (a->q)
        b->free(b, a->q);
    if (a->s)
        b->free(b, a->s);
    memset(a, 0, sizeof *a);
}

int qact_norm(qact *a, llmq_backend *b, void *out, void *x, const void *delta, const void *w, int rows, int dim,
              float eps)
{
    if (rows > a->max_rows || dim > a->max_cols)
        return llmq_fail("int8 activations: %d x %d exceed the %d x %d allocated", rows, dim, a->max_rows,
                         a->max_cols);
    PICK(qact_norm_cuda(a, b, out, x, delta, w, rows, dim, eps), qact_norm_cpu(a, out, x, delta, w, rows, dim, eps));
}

int qact_act(qact *a, llmq_backend *b, void *out, const void *gate, const void *up, int rows, int cols)
{
    if (rows > a->max_rows || cols > a->max_cols)
        return llmq_fail("int8 activations: %d x %d exceed the %d x %d allocated", rows, cols, a->max_rows,
                         a->max_cols);
    PICK(qact_act_cuda(a, b, out, gate, up, rows, cols), qact_act_cpu(a, out, gate, up, rows, cols));
}

int qlinear_int(llmq_linear *lin, llmq_backend *b, const llmq_qweight *q, const qdense *scratch)
{
    if (q->out != lin->out || q->in != lin->in)
        return llmq_fail("packed weight [%d, %d] in a [%d, %d] linear", q->out, q->in, lin->out, lin->in);
    if (q->bits != 4 && q->bits != 8)
        return llmq_fail("the integer kernels take 4 or 8 bits, not %d (evaluate %d-bit weights without --real)",
                         q->bits, q->bits);
    /* What the format stores: the codes, an fp16 scale and a zero point of
     * `bits` per group and channel (GPTQ's packing). */
    lin->wbytes = ((size_t)q->out * q->in * q->bits + (size_t)q->ngroups * q->out * (16 + q->bits)) / 8;
    PICK(qlinear_int_cuda(lin, b, q, scratch), ((void)scratch, qlinear_int_cpu(lin, q)));
}

int qlinear_nf4(llmq_linear *lin, llmq_backend *b, const llmq_nf4 *q, const qdense *scratch)
{
    if (q->n != (size_t)lin->out * lin->in || q->blocksize != 64)
        return llmq_fail("NF4 weight of %zu values (blocks of %d) in a [%d, %d] linear", q->n, q->blocksize, lin->out,
                         lin->in);
    lin->wbytes = (q->n + 1) / 2 + (q->double_quant ? q->nblocks + q->nblocks2 * 4 : q->nblocks * 4);
    PICK(qlinear_nf4_cuda(lin, b, q, scratch), ((void)scratch, qlinear_nf4_cpu(lin, q)));
}

int qlinear_w8a8(llmq_linear *lin, llmq_backend *b, const int8_t *wq, const float *s_ch, qact *a, qout out)
{
    lin->wbytes = (size_t)lin->out * lin->in + (size_t)lin->out * sizeof(float);
    PICK(qlinear_w8a8_cuda(lin, b, wq, s_ch, a, out), ((void)out, qlinear_w8a8_cpu(lin, wq, s_ch, a)));
}
