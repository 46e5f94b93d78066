#include "layerwise.h"

#include <string.h>

#include "../src/error.h"

int calib_chunk_rows(const calib_set *set, int target)
{
    int per = target / set->max_len;
    return (per < 1 ? 1 : per) * set->max_len;
}

int calib_pass_begin(calib_pass *p, llmq_model *m, const calib_set *set)
{
    memset(p, 0, sizeof *p);
    p->m = m;
    p->set = set;
    size_t total = set->off[set->n];
    if (!(p->state = model_alloc_hidden(m, (int)total)))
        return llmq_wrap("hidden states of %zu calibration tokens", total);
    if (model_embed(m, p->state, set->ids, (int)total)) {
        calib_pass_end(p);
        return -1;
    }
    return 0;
}

int calib_pass_layer(calib_pass *p, int layer, int first, int count)
{
    return calib_pass_layer_on(p, p->state, layer, first, count);
}

size_t calib_pass_bytes(const calib_pass *p)
{
    const llmq_config *c = model_config(p->m);
    return p->set->off[p->set->n] * (size_t)c->hidden * llmq_dtype_size(model_backend(p->m)->dt);
}

void *calib_pass_alloc_like(calib_pass *p)
{
    llmq_backend *b = model_backend(p->m);
    return b->alloc(b, calib_pass_bytes(p));
}

int calib_pass_layer_on(calib_pass *p, void *state, int layer, int first, int count)
{
    const calib_set *s = p->set;
    const llmq_config *c = model_config(p->m);
    size_t row_bytes = (size_t)c->hidden * llmq_dtype_size(model_backend(p->m)->dt);
    model_keep_weights(p->m, 1);
    if (s->uniform)
        return model_layer_forward(p->m, layer, (char *)state + s->off[first] * row_bytes, count, s->max_len);
    for (int i = first; i < first + count; i++)
        if (model_layer_forward(p->m, layer, (char *)state + s->off[i] * row_bytes, 1, calib_len(s, i)))
            return llmq_wrap("calibration sample %d", i);
    return 0;
}

void calib_pass_end(calib_pass *p)
{
    if (p->state)
        model_backend(p->m)->free(model_backend(p->m), p->state);
    p->state = NULL;
}
