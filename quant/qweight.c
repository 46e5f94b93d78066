#include "quant/qweight.h"

#include <stdlib.h>
#include <string.h>

#include "src/error.h"

int qweight_ngroups(int in, int group)
{
    if (in <= 0 || group == 0 || group < -1)
        return -1;
    if (group == -1 || group >= in)
        return 1;
    return (in + group - 1) / group;
}

int qweight_alloc(llmq_qweight *qw, int out, int in, int bits, int group, int sym)
{
    memset(qw, 0, sizeof *qw);
    if (out <= 0 || in <= 0)
        return llmq_fail("quantized weight: bad shape [%d, %d]", out, in);
    if (bits < 2 || bits > 8)
        return llmq_fail("quantized weight: %d bits not supported (2..8)", bits);
    int ng = qweight_ngroups(in, group);
    if (ng < 0)
        return llmq_fail("quantized weight: bad group size %d (> 0, or -1 for the whole row)", group);

    qw->out = out;
    qw->in = in;
    qw->bits = bits;
    qw->group = group;
    qw->sym = sym ? 1 : 0;
    qw->ngroups = ng;
    qw->q = calloc((size_t)out * (size_t)in, 1);
    qw->scales = calloc((size_t)ng * (size_t)out, sizeof(float));
    qw->zeros = calloc((size_t)ng * (size_t)out, sizeof(float));
    qw->g_idx = calloc((size_t)in, sizeof(int32_t));
    if (!qw->q || !qw->scales || !qw->zeros || !qw->g_idx) {
        qweight_free(qw);
        return llmq_fail("quantized weight [%d, %d]: out of memory", out, in);
    }
    for (int k = 0; k < in; k++)
        qw->g_idx[k] = group > 0 ? k / group : 0;
    return 0;
}

void qweight_free(llmq_qweight *qw)
{
    if (!qw)
        return;
    free(qw->q);
    free(qw->scales);
    free(qw->zeros);
    free(qw->g_idx);
    memset(qw, 0, sizeof *qw);
}

void qweight_dequant(const llmq_qweight *qw, float *W)
{
    const size_t N = (size_t)qw->out, K = (size_t)qw->in;
    for (size_t n = 0; n < N; n++) {
        const uint8_t *q = qw->q + n * K;
        float *w = W + n * K;
        for (size_t k = 0; k < K; k++) {
            size_t g = (size_t)qw->g_idx[k];
            float s = qw->scales[g * N + n], z = qw->zeros[g * N + n];
            w[k] = s * ((float)q[k] - z);
        }
    }
}
