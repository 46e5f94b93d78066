/* The model runner: a Llama-family decoder executed one layer at a time
 * over a batch of token windows, on any backend (backend.h).
 *
 * The hidden state of all windows of a batch stays resident while the
 * layers run in turn, so only one layer's weights need to be loaded at a
 * time (the rest stay mmap'd): this is what lets calibration and GPTQ run
 * a 70B model on one GPU. Two seams serve the tools:
 *   - on_input: sees (and may modify in place) the input of every group of
 *     linears sharing an input: q/k/v, o, gate/up, down. Calibration
 *     statistics, Hessians and activation fake-quant hook in here.
 *   - on_layer: called when a layer's weights have been loaded; it may
 *     rewrite the weights (fake quant) or install a replacement forward for
 *     any linear (real-quant kernels). */
#ifndef LLMQ_MODEL_H
#define LLMQ_MODEL_H

#include <stdint.h>

#include "../formats/config.h"
#include "../formats/safetensors.h"
#include "backend.h"

typedef struct llmq_linear llmq_linear;
struct llmq_linear {
    int in, out;
    void *w;    /* backend buffer [out, in] of backend dt */
    void *bias; /* backend buffer [out] or NULL */
    /* Replacement implementation: when set, called instead of b->linear. */
    int (*forward)(llmq_linear *self, llmq_backend *b, void *y, const void *x, int rows);
    /* Optional, the same on every linear of a group that reads one input
     * (q/k/v, gate/up; first[0..n) consecutive in llmq_layer.lin): the n
     * products in one call, y[i] = first[i]'s output. Returns 1 when it
     * does not take these rows or linears (nothing done; the runner then
     * calls each forward), else 0 or -1. */
    int (*forward_group)(llmq_linear *first, int n, llmq_backend *b, void *const *y, const void *x, int rows);
    void *ctx; /* for forward's use; freed by free_ctx when the layer unloads */
    void (*free_ctx)(llmq_linear *self, llmq_backend *b);
    size_t wbytes; /* bytes of the weight (and its scales) one product reads */
};

typedef struct {
    void *attn_norm, *ffn_norm; /* backend buffers [hidden] */
    llmq_linear lin[LIN_COUNT];
    int loaded;
} llmq_layer;

/* Groups of linears that read the same input. */
typedef enum { IN_QKV, IN_O, IN_GATEUP, IN_DOWN, IN_COUNT } llmq_input;

typedef struct {
    void *ctx;
    /* x: backend buffer [rows, cols], the input of the group; may be modified. */
    int (*on_input)(void *ctx, llmq_backend *b, int layer, llmq_input which, void *x, int rows, int cols);
    int (*on_layer)(void *ctx, llmq_backend *b, int layer, llmq_layer *L);
    /* Called before a linear's float weight is read: setting L->forward
     * (and L->ctx / L->free_ctx) takes the linear over, and the float
     * weight is then never loaded (real-quant kernels on packed weights). */
    int (*on_linear)(void *ctx, llmq_backend *b, int layer, llmq_lin which, llmq_linear *L);
    /* Replacements for the two producers of linear inputs, for kernels that
     * fuse them with activation quantization (W8A8). norm: "x += delta
     * (when delta != NULL); out = RMSNorm(x) * w" before group which
     * (IN_QKV or IN_GATEUP); act: "out = silu(gate) * up" before down_proj.
     * They must leave what the group's linears read where those expect it. */
    int (*norm)(void *ctx, llmq_backend *b, int layer, llmq_input which, void *out, void *x, const void *delta,
                const void *w, int rows, int dim, float eps);
    int (*act)(void *ctx, llmq_backend *b, int layer, void *out, const void *gate, const void *up, int rows,
               int cols);
} llmq_hooks;

/* How keys and values reach attention. */
typedef enum {
    KV_FLOAT = 0, /* in the storage type, as computed */
    KV_INT8_FAKE, /* quantized and dequantized in place (backend.h's int8 KV grid), then as KV_FLOAT */
    KV_INT8,      /* stored as int8 codes + scales, dequantized inside attention (kv_store, attention_kv) */
} llmq_kv_mode;

typedef struct llmq_model llmq_model;

/* Open DIR (config.json + safetensors) for running on backend b.
 * max_rows: the largest number of rows (windows x seq) one pass will see;
 * scratch buffers are sized from it. */
int model_open(llmq_model **out, const char *dir, llmq_backend *b, int max_rows);
void model_close(llmq_model *m);

const llmq_config *model_config(const llmq_model *m);
llmq_backend *model_backend(const llmq_model *m);
const st_model *model_weights(const llmq_model *m);
const char *model_dir(const llmq_model *m);
/* The most rows one pass takes (model_open's max_rows). */
int model_max_rows(const llmq_model *m);
void model_set_hooks(llmq_model *m, const llmq_hooks *hooks);
/* Keep every layer's weights resident once loaded (evaluation), instead of
 * unloading each after use (layer-streaming calibration). */
void model_keep_weights(llmq_model *m, int keep);
/* on (the default): a group of linears that read one input (q/k/v,
 * gate/up) runs as one call where their forward_group takes it; off: each
 * linear alone (to compare the two). */
void model_group_linears(llmq_model *m, int on);
/* Rows per internal chunk inside a layer (bounds the scratch memory). */
void model_set_chunk_rows(llmq_model *m, int rows);

int model_load_layer(llmq_model *m, int layer);
/* Load every layer now (evaluation: weights resident, upload timed apart). */
int model_load_all(llmq_model *m);
void model_unload_layer(llmq_model *m, int layer);
llmq_layer *model_layer(llmq_model *m, int layer);
/* HF tensor name of a linear's weight: "model.layers.3.mlp.up_proj". */
void model_lin_prefix(int layer, llmq_lin which, char *buf, size_t n);

/* x[rows, hidden] = embedding of ids (host int32). */
int model_embed(llmq_model *m, void *x, const int32_t *ids, int rows);
/* Run one decoder layer in place on x [nwin*seq, hidden]. Loads the layer if
 * needed (and unloads it afterwards unless kept). */
int model_layer_forward(llmq_model *m, int layer, void *x, int nwin, int seq);
/* Final norm + lm_head over x [rows, hidden]; adds the NLL of host targets
 * (< 0 = not scored) to *nll. If logits is not NULL, also copies the fp32
 * logits [rows, vocab] to the host. */
int model_head(llmq_model *m, const void *x, const int32_t *targets, int rows, double *nll, float *logits);

/* Whole forward of nwin windows of seq tokens (ids host [nwin*seq]);
 * every position but the last of each window is scored against the next
 * token. */
int model_forward(llmq_model *m, const int32_t *ids, int nwin, int seq, double *nll, float *logits);

/* A backend buffer for the hidden state of rows tokens. */
void *model_alloc_hidden(llmq_model *m, int rows);

/* Bytes of weights one token's forward reads once: every loaded layer's
 * linears and norms, the final norm and lm_head (the decode roofline). */
size_t model_weight_bytes(const llmq_model *m);

/* KV handling of every forward (default KV_FLOAT). */
void model_set_kv_mode(llmq_model *m, llmq_kv_mode mode);

/* ---- decoding with a KV cache ----
 * model_cache_open allocates, for every layer, a key and a value cache of
 * cap positions for each of batch sequences (int8 with scales when the KV
 * mode is KV_INT8, else the storage type). model_step then runs n new
 * tokens of every sequence (ids host [batch*n], sequence-major) at positions
 * pos..pos+n-1, attending to the cached positions 0..pos-1 and to each
 * other causally, appends their keys and values to the cache, and scores
 * targets (host [batch*n], < 0 = not scored) into *nll like model_head
 * (logits host [batch*n, vocab] when not NULL). Weights stay resident
 * (model_keep_weights is implied). Prefill is a step with n = prompt
 * length at pos 0; decoding is steps with n = 1. */
int model_cache_open(llmq_model *m, int batch, int cap);
/* Record single-token steps once as a graph and replay it (backends with
 * graph_begin; default off): the step's hundreds of launches then cost one. */
void model_set_graphs(llmq_model *m, int on);
void model_cache_close(llmq_model *m);
/* Bytes of the caches (codes + scales) over all layers. */
size_t model_cache_bytes(const llmq_model *m);
int model_step(llmq_model *m, const int32_t *ids, int n, int pos, const int32_t *targets, double *nll,
               float *logits);

#endif
