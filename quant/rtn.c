#include "quant/rtn.h"

#include <math.h>

#include "src/dtype.h"
#include "src/error.h"

/* Round a scale to fp16, keeping it a usable divisor (see rtn.h). */
static float scale_to_f16(float s)
{
    float h = llmq_f16_to_f32(llmq_f32_to_f16(s));
    if (h == 0.0f)
        return 0x1p-24f; /* smallest fp16 subnormal */
    if (isinf(h))
        return 65504.0f; /* largest finite fp16 */
    return h;
}

void rtn_find_params(const float *x, int n, int maxq, int sym, int scale_f16, float *scale, float *zero)
{
    /* The reference starts from 0 (torch.minimum(x.min(1), 0)): the grid
     * always contains 0, so zero weights (pruned, dead columns) stay 0. */
    float xmin = 0.0f, xmax = 0.0f;
    for (int i = 0; i < n; i++) {
        if (x[i] < xmin)
            xmin = x[i];
        if (x[i] > xmax)
            xmax = x[i];
    }
    if (sym) {
        xmax = fmaxf(fabsf(xmin), xmax);
        if (xmin < 0.0f)
            xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
    }
    float s = (xmax - xmin) / (float)maxq;
    if (scale_f16)
        s = scale_to_f16(s);
    *scale = s;
    /* (maxq + 1) / 2 is exact: maxq + 1 is a power of two. */
    /* + 0.0f turns the -0 of round(-0 / s) into +0; q - z is unchanged. */
    *zero = sym ? (float)((maxq + 1) / 2) : rtn_round(-xmin / s) + 0.0f;
}

int rtn_quantize(const float *W, int out, int in, int bits, int group, int sym, int scale_f16,
                 llmq_qweight *res)
{
    if (qweight_alloc(res, out, in, bits, group, sym) < 0)
        return llmq_wrap("rtn");
    const int maxq = (1 << bits) - 1;
    const int G = group > 0 ? group : in;
    const size_t N = (size_t)out, K = (size_t)in;

    for (size_t n = 0; n < N; n++) {
        const float *w = W + n * K;
        uint8_t *q = res->q + n * K;
        for (int g = 0; g < res->ngroups; g++) {
            int k0 = g * G, k1 = k0 + G < in ? k0 + G : in;
            float s, z;
            rtn_find_params(w + k0, k1 - k0, maxq, sym, scale_f16, &s, &z);
            res->scales[(size_t)g * N + n] = s;
            res->zeros[(size_t)g * N + n] = z;
            for (int k = k0; k < k1; k++)
                q[k] = (uint8_t)rtn_code(w[k], s, z, (float)maxq);
        }
    }
    return 0;
}
