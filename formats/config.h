/* config.json of a Hugging Face dense Llama-family decoder (model_type
 * llama, mistral or qwen2), plus the quantization_config of a GPTQ
 * checkpoint when present. Anything llmq cannot run correctly (another
 * architecture, another activation, an unknown rope_scaling type, a
 * sliding window) is refused by name at load time. */
#ifndef LLMQ_CONFIG_H
#define LLMQ_CONFIG_H

#include "../src/dtype.h"

typedef struct {
    char model_type[32];
    int hidden;       /* hidden_size */
    int ffn;          /* intermediate_size */
    int n_layers;     /* num_hidden_layers */
    int n_heads;      /* num_attention_heads */
    int n_kv;         /* num_key_value_heads (= n_heads when absent) */
    int head_dim;     /* head_dim (= hidden / n_heads when absent) */
    int vocab;        /* vocab_size */
    int max_pos;      /* max_position_embeddings */
    float eps;        /* rms_norm_eps */
    float rope_theta; /* rope_theta (10000 when absent) */
    /* rope_scaling {"rope_type": "llama3", ...} (Llama-3.1) */
    int rope_llama3;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    int sliding_window; /* 0 = none; Mistral's window (refused only if ctx exceeds it) */
    int tied;           /* tie_word_embeddings */
    int attn_bias;      /* q/k/v bias: qwen2 always, llama when attention_bias */
    int o_bias;         /* o_proj bias: llama attention_bias */
    llmq_dtype dtype;   /* torch_dtype (F32 when absent) */
    int bos_id, eos_id; /* -1 when absent */

    /* quantization_config (GPTQ checkpoints); quant_method[0] == 0 if none */
    char quant_method[32];
    int q_bits, q_group, q_sym, q_desc_act;
    char q_checkpoint_format[16]; /* "gptq" (v1) or "gptq_v2" */
} llmq_config;

/* Parse dir/config.json. */
int config_load(llmq_config *c, const char *dir);

/* Linear module names, in the order llmq processes them inside a layer. */
typedef enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_COUNT } llmq_lin;

/* "self_attn.q_proj", ..., "mlp.down_proj" */
const char *config_lin_name(llmq_lin which);
/* in / out features of a linear under this config. */
void config_lin_shape(const llmq_config *c, llmq_lin which, int *in, int *out);

#endif
