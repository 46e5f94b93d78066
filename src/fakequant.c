#include "fakequant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/safetensors.h"
#include "../quant/nf4.h"
#include "../quant/rtn.h"
#include "error.h"

struct fq_state {
    fq_opts o;
    st_file *scales; /* per-tensor activation scales */
    int n_layers;
    float *tensor_scale; /* [n_layers][IN_COUNT] static activation scales */
};

/* SmoothQuant's quantize_weight_per_channel_absmax: s = max(|w_row|max, 1e-5)/127. */
static void int8_per_channel(float *w, int out, int in)
{
    for (int r = 0; r < out; r++) {
        float *row = w + (size_t)r * in, mx = 0.0f;
        for (int k = 0; k < in; k++)
            mx = fabsf(row[k]) > mx ? fabsf(row[k]) : mx;
        float s = (mx < 1e-5f ? 1e-5f : mx) / 127.0f;
        for (int k = 0; k < in; k++)
            row[k] = rintf(row[k] / s) * s;
    }
}

int fq_weight_matrix(const fq_opts *o, float *w, int out, int in)
{
    switch (o->weight) {
    case FQ_W_NONE: return 0;
    case FQ_W_INT8_CHANNEL: int8_per_channel(w, out, in); return 0;
    case FQ_W_RTN: {
        llmq_qweight qw;
        if (rtn_quantize(w, out, in, o->wbits, o->group, o->sym, 0, &qw))
            return -1;
        qweight_dequant(&qw, w);
        qweight_free(&qw);
        return 0;
    }
    case FQ_W_NF4: {
        /* bitsandbytes: blocks of 64 consecutive weights of the row-major matrix. */
        llmq_nf4 q;
        if (nf4_quantize(w, (size_t)out * in, 64, o->nf4_double, &q))
            return -1;
        int rc = nf4_dequantize(&q, w);
        nf4_free(&q);
        return rc;
    }
    }
    return llmq_fail("unknown weight quantization");
}

static int on_layer(void *ctx, llmq_backend *b, int layer, llmq_layer *L)
{
    fq_state *st = ctx;
    if (st->o.weight == FQ_W_NONE)
        return 0;
    for (int i = 0; i < LIN_COUNT; i++) {
        llmq_linear *lin = &L->lin[i];
        size_t n = (size_t)lin->out * lin->in;
        float *w = malloc(n * sizeof(float));
        if (!w)
            return llmq_fail("out of memory");
        int rc = b->download_f32(b, w, lin->w, b->dt, n) || fq_weight_matrix(&st->o, w, lin->out, lin->in) ||
                 b->upload(b, lin->w, b->dt, w, LLMQ_F32, n);
        free(w);
        if (rc)
            return llmq_wrap("layer %d %s", layer, config_lin_name((llmq_lin)i));
    }
    return 0;
}

static int on_input(void *ctx, llmq_backend *b, int layer, llmq_input which, void *x, int rows, int cols)
{
    fq_state *st = ctx;
    int qmax = (1 << (st->o.abits - 1)) - 1;
    if (st->o.act == FQ_ACT_PER_TOKEN)
        return b->fq_per_token(b, x, rows, cols, qmax);
    if (st->o.act == FQ_ACT_PER_TENSOR)
        return b->fq_tensor(b, x, (size_t)rows * cols, st->tensor_scale[layer * IN_COUNT + which], qmax);
    return 0;
}

/* Static per-tensor scales: the abs-max over channels of each input's
 * calibration abs-max, over qmax. The file must match the model. */
static int load_tensor_scales(fq_state *st, const llmq_config *c)
{
    if (st_open(&st->scales, st->o.act_scales))
        return -1;
    st->tensor_scale = calloc((size_t)c->n_layers * IN_COUNT, sizeof(float));
    if (!st->tensor_scale)
        return llmq_fail("out of memory");
    static const llmq_lin first_of[IN_COUNT] = {LIN_Q, LIN_O, LIN_GATE, LIN_DOWN};
    int qmax = (1 << (st->o.abits - 1)) - 1;
    for (int l = 0; l < c->n_layers; l++)
        for (int g = 0; g < IN_COUNT; g++) {
            char name[128];
            int in, out;
            model_lin_prefix(l, first_of[g], name, sizeof name);
            config_lin_shape(c, first_of[g], &in, &out);
            const st_tensor *t = st_find(st->scales, name);
            if (!t)
                return llmq_fail("%s: no activation scales for '%s' (made for another model?)", st->o.act_scales,
                                 name);
            if (t->numel != in || t->dtype != LLMQ_F32)
                return llmq_fail("%s: '%s' has %lld values, the model's input has %d channels", st->o.act_scales,
                                 name, (long long)t->numel, in);
            float mx = 0.0f, v;
            for (int j = 0; j < in; j++) {
                memcpy(&v, (const char *)t->data + 4 * (size_t)j, 4);
                mx = v > mx ? v : mx;
            }
            st->tensor_scale[l * IN_COUNT + g] = (mx < 1e-5f ? 1e-5f : mx) / (float)qmax;
        }
    return 0;
}

int fq_install(llmq_model *m, const fq_opts *o, fq_state **out)
{
    fq_state *st = calloc(1, sizeof *st);
    if (!st)
        return llmq_fail("out of memory");
    st->o = *o;
    if (st->o.abits == 0)
        st->o.abits = 8;
    const llmq_config *c = model_config(m);
    st->n_layers = c->n_layers;
    if (o->act == FQ_ACT_PER_TENSOR && load_tensor_scales(st, c)) {
        fq_free(st);
        return -1;
    }
    llmq_hooks h = {.ctx = st, .on_layer = on_layer, .on_input = o->act ? on_input : NULL};
    model_set_hooks(m, &h);
    *out = st;
    return 0;
}

void fq_free(fq_state *st)
{
    if (!st)
        return;
    st_close(st->scales);
    free(st->tensor_scale);
    free(st);
}
