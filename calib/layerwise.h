/* Running a calibration set through a model one layer at a time.
 *
 * The hidden states of every sample stay resident in backend memory while
 * the layers run in turn: each layer's weights are loaded once, used on all
 * samples, then dropped. This is what lets calibration (and GPTQ, which
 * quantizes a layer between observing it and running it for the next) fit
 * models much larger than the device. */
#ifndef LLMQ_CALIB_LAYERWISE_H
#define LLMQ_CALIB_LAYERWISE_H

#include "../src/model.h"
#include "sampling.h"

typedef struct {
    llmq_model *m;
    const calib_set *set;
    void *state; /* [total tokens, hidden] */
} calib_pass;

/* Embed every sample. */
int calib_pass_begin(calib_pass *p, llmq_model *m, const calib_set *set);
/* Run `layer` in place over samples [first, first + count); the layer's
 * weights stay loaded (the caller unloads with model_unload_layer). */
int calib_pass_layer(calib_pass *p, int layer, int first, int count);
/* The same on another buffer laid out like p->state (a scratch copy: GPTQ
 * observes a layer on a copy, then runs the quantized layer on the state). */
int calib_pass_layer_on(calib_pass *p, void *state, int layer, int first, int count);
/* A backend buffer the size of the state. */
void *calib_pass_alloc_like(calib_pass *p);
size_t calib_pass_bytes(const calib_pass *p);
void calib_pass_end(calib_pass *p);

/* Rows per runner chunk for a set: whole samples, about `target` rows. */
int calib_chunk_rows(const calib_set *set, int target);

#endif
