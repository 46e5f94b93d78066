/* GPTQ's Hessians H = 2/n sum x x^T of every linear input of a layer (n =
 * calibration samples, as the reference normalises), accumulated on the
 * backend through the model runner's on_input seam. q/k/v share one H, as
 * do gate/up. */
#ifndef LLMQ_CALIB_HESSIAN_H
#define LLMQ_CALIB_HESSIAN_H

#include "../src/model.h"

typedef struct calib_hessian calib_hessian;

int hessian_new(calib_hessian **out, llmq_model *m);
void hessian_free(calib_hessian *h);
llmq_hooks hessian_hooks(calib_hessian *h);

/* Start collecting, from zero, the inputs in mask (bit 1 << IN_*) of layer. */
int hessian_begin(calib_hessian *h, int layer, unsigned mask);
/* Host copy of H of input g, [cols, cols] fp32, scaled by 2 / nsamples. */
int hessian_get(calib_hessian *h, llmq_input g, int nsamples, float *out);
int hessian_cols(const calib_hessian *h, llmq_input g);

#endif
