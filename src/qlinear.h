/* Real-quant linears: src/model.h's linear seam (llmq_linear.forward)
 * filled with integer kernels instead of a float weight, one installer per
 * scheme and backend. The CPU versions are the references of the CUDA
 * ones: the same arithmetic in plain C (quant/wna16_ref.h, quant/nf4_gemv_ref.h,
 * quant/w8a8_ref.h), so the whole real-quant evaluation runs in CI.
 *
 * Each installer sets lin->forward, lin->ctx and lin->free_ctx (lin->in,
 * lin->out and lin->bias are the runner's) and copies what it needs: the
 * host arrays may be freed on return. All return 0, or -1 with llmq_fail(). */
#ifndef LLMQ_QLINEAR_H
#define LLMQ_QLINEAR_H

#include <stdint.h>

#include "../quant/nf4.h"
#include "../quant/qweight.h"
#include "model.h"

/* W8A8's int8 activations, shared by the linears of a layer: the per-token
 * codes and scales of one float buffer (src, rows x cols), written by a
 * fused producer (qact_norm / qact_act below) or by the first linear that
 * reads src, and reused by the others that read the same buffer (q/k/v,
 * gate/up). Buffers live in the backend. */
typedef struct {
    int8_t *q;  /* [max_rows, max_cols] */
    float *s;   /* [max_rows] */
    int max_rows, max_cols;
    const void *src; /* the float buffer q holds the int8 form of, or NULL */
    int rows, cols;
    void *impl; /* backend state (CUDA: the cuBLASLt int8 GEMM context) */
} qact;

int qact_alloc(qact *a, llmq_backend *b, int max_rows, int max_cols);
void qact_free(qact *a, llmq_backend *b);

/* The fused producers for llmq_hooks.norm / .act: x += delta (if delta),
 * then int8 of RMSNorm(x) * w recorded as the int8 form of out; and int8 of
 * silu(gate) * up recorded as the int8 form of out. out itself is not
 * written: only W8A8 linears may read it. */
int qact_norm(qact *a, llmq_backend *b, void *out, void *x, const void *delta, const void *w, int rows, int dim,
              float eps);
int qact_act(qact *a, llmq_backend *b, void *out, const void *gate, const void *up, int rows, int cols);

/* A dense scratch weight in the backend, shared by the weight-only
 * linears: long inputs (prefill) dequantize into it and run the dense GEMM,
 * as the GEMV kernels are built for decode batches. NULL / 0 bytes: every
 * product on the integer kernels. */
typedef struct {
    void *p;
    size_t bytes;
} qdense;

/* Integer grid of 4 or 8 bits (GPTQ / llmq int checkpoints): W4A16 / W8A16. */
int qlinear_int(llmq_linear *lin, llmq_backend *b, const llmq_qweight *q, const qdense *scratch);
/* NF4 blocks (blocksize 64, plain or double-quantized absmax). */
int qlinear_nf4(llmq_linear *lin, llmq_backend *b, const llmq_nf4 *q, const qdense *scratch);
/* Who reads a W8A8 linear's output. QOUT_ANY: anything (the output is
 * written in dt). The others name the one fused producer the runner feeds
 * it to (model.c's layer_chunk): the gate and up inputs of qact_act, the
 * delta of qact_norm (o_proj's output, added to the residual). For those
 * the CUDA linear may leave its int32 product and scales pending instead
 * (prefill through cuBLASLt), and the producer rescales on the fly; the dt
 * output is then never written. */
typedef enum { QOUT_ANY, QOUT_ACT_GATE, QOUT_ACT_UP, QOUT_NORM_DELTA } qout;

/* W8A8: int8 weight [out, in] with per-channel scales; activations through a. */
int qlinear_w8a8(llmq_linear *lin, llmq_backend *b, const int8_t *wq, const float *s_ch, qact *a, qout out);

/* The same, one implementation per backend (the dispatchers above pick by
 * b->name); the CUDA ones exist only when built with CUDA. */
int qlinear_int_cpu(llmq_linear *lin, const llmq_qweight *q);
int qlinear_nf4_cpu(llmq_linear *lin, const llmq_nf4 *q);
int qlinear_w8a8_cpu(llmq_linear *lin, const int8_t *wq, const float *s_ch, qact *a);
int qact_norm_cpu(qact *a, void *out, void *x, const void *delta, const void *w, int rows, int dim, float eps);
int qact_act_cpu(qact *a, void *out, const void *gate, const void *up, int rows, int cols);
#ifdef LLMQ_HAVE_CUDA
int qlinear_int_cuda(llmq_linear *lin, llmq_backend *b, const llmq_qweight *q, const qdense *scratch);
int qlinear_nf4_cuda(llmq_linear *lin, llmq_backend *b, const llmq_nf4 *q, const qdense *scratch);
int qlinear_w8a8_cuda(llmq_linear *lin, llmq_backend *b, const int8_t *wq, const float *s_ch, qact *a, qout out);
int qact_norm_cuda(qact *a, llmq_backend *b, void *out, void *x, const void *delta, const void *w, int rows, int dim,
                   float eps);
int qact_act_cuda(qact *a, llmq_backend *b, void *out, const void *gate, const void *up, int rows, int cols);
void qact_release_cuda(qact *a);
#endif

#endif
