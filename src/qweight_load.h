/* Reading packed quantized linears (GPTQ v1/v2 checkpoints, llmq's own
 * layout) back into float weights, for the dequantize-to-float evaluation
 * path. */
#ifndef LLMQ_QWEIGHT_LOAD_H
#define LLMQ_QWEIGHT_LOAD_H

#include "../formats/config.h"
#include "../formats/safetensors.h"

/* Dequantize the linear whose tensors start with prefix
 * ("model.layers.0.self_attn.q_proj") into w [out, in] (float32).
 * Fails naming the tensor when neither "<prefix>.weight" nor a supported
 * packed layout is present, or when shapes disagree. */
int qweight_load_dequant(const st_model *st, const llmq_config *cfg, const char *dir, const char *prefix, int out,
                         int in, float *w);

#endif
