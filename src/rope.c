#include "rope.h"

#include <math.h>

/* inv_freq_i = 1 / theta^(2i/d), in fp32 as torch computes it. */
static float base_inv_freq(const llmq_config *c, int i)
{
    return 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
}

/* Llama-3.1: long wavelengths are divided by factor, short ones kept, and
 * the band between is interpolated smoothly. */
static float llama3_inv_freq(const llmq_config *c, float f)
{
    const float pi = 3.14159265358979323846f;
    float old_ctx = (float)c->rope_orig_max_pos;
    float low_wavelen = old_ctx / c->rope_low_freq_factor;
    float high_wavelen = old_ctx / c->rope_high_freq_factor;
    float wavelen = 2.0f * pi / f;
    if (wavelen < high_wavelen)
        return f;
    if (wavelen > low_wavelen)
        return f / c->rope_factor;
    float smooth = (old_ctx / wavelen - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
    return (1.0f - smooth) * f / c->rope_factor + smooth * f;
}

void rope_table(const llmq_config *c, int seq, float *table)
{
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float f = base_inv_freq(c, i);
        if (c->rope_llama3)
            f = llama3_inv_freq(c, f);
        for (int p = 0; p < seq; p++) {
            float angle = (float)p * f;
            table[(size_t)p * c->head_dim + i] = cosf(angle);
            table[(size_t)p * c->head_dim + half + i] = sinf(angle);
        }
    }
}
