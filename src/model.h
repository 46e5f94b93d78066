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
    void *ctx; /* for forward's use; freed by free_ctx when the layer unloads */
    void (*free_ctx)(llmq_linear *self, llmq_backend *b);
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
} llmq_hooks;

typedef struct llmq_model llmq_model;

/* Open DIR (config.json + safetensors) for running on backend b.
 * max_rows: the largest number of rows (windows x seq) one pass will see;
 * scratch buffers are sized from it. */
int model_open(llmq_model **out, const char *dir, llmq_backend *b, int max_rows);
void model_close(llmq_model *m);

const llmq_config *model_config(const llmq_model *m);
llmq_backend *model_backend(const llmq_model *m);
const st_model *model_weights(const llmq_model *m);
void model_set_hooks(llmq_model *m, const llmq_hooks *hooks);
/* Keep every layer's weights resident once loaded (evaluation), instead of
 * unloading each after use (layer-streaming calibration). */
void model_keep_weights(llmq_model *m, int keep);
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

#endif
