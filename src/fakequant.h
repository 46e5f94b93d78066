/* Fake quantization in the float path: weights quantized and dequantized
 * when a layer loads, activations quantized and dequantized at every linear
 * input, through the model runner's two seams. This is how the accuracy of
 * a scheme is measured independently of any integer kernel. */
#ifndef LLMQ_FAKEQUANT_H
#define LLMQ_FAKEQUANT_H

#include "model.h"

typedef enum { FQ_ACT_NONE = 0, FQ_ACT_PER_TOKEN, FQ_ACT_PER_TENSOR } fq_act;
typedef enum { FQ_W_NONE = 0, FQ_W_INT8_CHANNEL, FQ_W_RTN, FQ_W_NF4 } fq_weight;

typedef struct {
    fq_weight weight;
    int wbits, group, sym; /* FQ_W_RTN: bits, group (-1 = per channel), symmetric */
    int nf4_double;        /* FQ_W_NF4: double-quantize the block abs-max values */
    fq_act act;
    int abits;              /* activation bits (8) */
    const char *act_scales; /* FQ_ACT_PER_TENSOR: act_scales.safetensors of llmq-calib */
} fq_opts;

typedef struct fq_state fq_state;

/* Install the hooks on m. The state must outlive the model's use. */
int fq_install(llmq_model *m, const fq_opts *o, fq_state **out);
void fq_free(fq_state *st);

/* Quantize-dequantize one weight matrix W [out, in] in place (host fp32). */
int fq_weight_matrix(const fq_opts *o, float *w, int out, int in);

#endif
