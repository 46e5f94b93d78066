/* Reading packed quantized linears (GPTQ v1/v2 checkpoints, llmq's own
 * layout) back into float weights, for the dequantize-to-float evaluation
 * path. */
#ifndef LLMQ_QWEIGHT_LOAD_H
#define LLMQ_QWEIGHT_LOAD_H

#include "../formats/config.h"
#include "../formats/safetensors.h"
#include "../quant/nf4.h"
#include "../quant/qweight.h"

/* Where the packed tensors come from: a model directory (every shard) or a
 * single safetensors file (llmq-gptq's per-layer saves when resuming). */
typedef struct {
    const st_model *model; /* one of the two */
    const st_file *file;
    const char *where; /* directory or file, for messages */
} qw_source;

/* One linear as the checkpoint holds it, unpacked but not dequantized:
 * an integer grid (GPTQ or llmq int) in q, or NF4 blocks in nf4. */
typedef struct {
    int is_nf4;
    llmq_qweight q;
    llmq_nf4 nf4;
} qw_packed;

/* Read the linear's packed tensors from src (cfg as below) into p; free
 * with qw_packed_free (also safe after a failure). */
int qweight_load_packed(const qw_source *src, const llmq_config *cfg, const char *prefix, int out, int in,
                        qw_packed *p);
void qw_packed_free(qw_packed *p);

/* Dequantize from src; cfg supplies quant_method ("gptq" / "llmq") and,
 * for GPTQ, bits, group_size, sym and checkpoint_format. */
int qweight_load_from(const qw_source *src, const llmq_config *cfg, const char *prefix, int out, int in, float *w);

/* Dequantize the linear whose tensors start with prefix
 * ("model.layers.0.self_attn.q_proj") into w [out, in] (float32).
 * Fails naming the tensor when neither "<prefix>.weight" nor a supported
 * packed layout is present, or when shapes disagree. */
int qweight_load_dequant(const st_model *st, const llmq_config *cfg, const char *dir, const char *prefix, int out,
                         int in, float *w);

#endif
