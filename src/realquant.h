/* Real-quant evaluation: the model runner with integer kernels in place of
 * float weights (src/qlinear.h), installed through the runner's seams.
 *
 *   RQ_PACKED  a quantized checkpoint (GPTQ v1/v2, llmq int or NF4): every
 *              packed linear runs W4A16 / W8A16 / NF4 on its codes; modules
 *              the checkpoint keeps in float (skipped, "dynamic") stay float.
 *   RQ_W8A8    a float model (typically SmoothQuant-smoothed): weights
 *              quantized to int8 per output channel at load (SmoothQuant's
 *              grid, from the weights rounded to the storage type, as the
 *              fake-quant path sees them), activations per token, quantized
 *              inside the producers (residual add + RMSNorm, SiLU * up) and
 *              once per group of linears sharing an input. */
#ifndef LLMQ_REALQUANT_H
#define LLMQ_REALQUANT_H

#include "model.h"

typedef enum { RQ_PACKED = 1, RQ_W8A8 } rq_scheme;

typedef struct rq_state rq_state;

/* Install on m (before its layers load). dequant_prefill (GPU): inputs
 * longer than a decode batch dequantize the weight into a shared dense
 * scratch and run the dense GEMM; 0 runs every product on the integer
 * kernels. The state must outlive the model's use; free it after
 * model_close. */
int rq_install(llmq_model *m, rq_scheme scheme, int dequant_prefill, rq_state **out);
void rq_free(rq_state *st);

/* What was installed: linears on kernels and linears left in float. */
void rq_counts(const rq_state *st, int *kernels, int *floats);

#endif
