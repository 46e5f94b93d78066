#include "quant/nf4.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant/dynmap.h"
#include "src/error.h"

const float nf4_code[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

/* Midpoints of neighbouring codes: (c[i] + c[i+1]) / 2 rounded to fp32 (the
 * same whether the sum is taken in fp32 or fp64, and equal to the literals
 * of bitsandbytes' CUDA decision tree). */
static const float nf4_mid[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,  0.2035212516784668f,   0.2920137718319893f,   0.3893125355243683f,
    0.5016634166240692f,  0.6427869200706482f,   0.8614784181118011f,
};

uint8_t nf4_quantize_value(float x)
{
    /* Binary search for the number of midpoints below x (x > mid). A NaN
     * compares false everywhere and gets code 0, as in bitsandbytes. */
    int lo = 0, hi = 15;
    while (lo < hi) {
        int m = (lo + hi) / 2;
        if (x > nf4_mid[m])
            lo = m + 1;
        else
            hi = m;
    }
    return (uint8_t)lo;
}

void nf4_free(llmq_nf4 *q)
{
    if (!q)
        return;
    free(q->codes);
    free(q->absmax);
    free(q->qabsmax);
    free(q->absmax2);
    memset(q, 0, sizeof *q);
}

/* offset and the 8-bit blockwise form of absmax - offset. */
static int double_quantize(llmq_nf4 *q, float *absmax)
{
    q->blocksize2 = 256;
    q->nblocks2 = (q->nblocks + 255) / 256;
    q->qabsmax = malloc(q->nblocks);
    q->absmax2 = malloc(q->nblocks2 * sizeof(float));
    if (!q->qabsmax || !q->absmax2)
        return -1;
    /* bitsandbytes takes torch's fp32 mean; summing in double and rounding
     * once is the correctly rounded mean (torch's pairwise sum can differ by
     * an ulp). */
    double sum = 0.0;
    for (size_t i = 0; i < q->nblocks; i++)
        sum += absmax[i];
    q->offset = (float)(sum / (double)q->nblocks);
    for (size_t i = 0; i < q->nblocks; i++)
        absmax[i] -= q->offset;
    float code[256];
    dynmap_signed(code);
    blockwise8_quantize(code, absmax, q->nblocks, q->blocksize2, q->qabsmax, q->absmax2);
    return 0;
}

int nf4_quantize(const float *x, size_t n, int blocksize, int double_quant, llmq_nf4 *res)
{
    memset(res, 0, sizeof *res);
    if (n == 0 || blocksize <= 0)
        return llmq_fail("nf4: bad size (n %zu, block %d)", n, blocksize);
    res->n = n;
    res->blocksize = blocksize;
    res->nblocks = (n + (size_t)blocksize - 1) / (size_t)blocksize;
    res->double_quant = double_quant ? 1 : 0;
    res->codes = malloc(n);
    res->absmax = malloc(res->nblocks * sizeof(float));
    if (!res->codes || !res->absmax)
        goto oom;

    const size_t B = (size_t)blocksize;
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += B, bi++) {
        size_t b1 = b0 + B < n ? b0 + B : n;
        float am = 0.0f;
        for (size_t i = b0; i < b1; i++)
            am = fmaxf(am, fabsf(x[i]));
        res->absmax[bi] = am;
        if (am == 0.0f) {
            memset(res->codes + b0, 7, b1 - b0);
            continue;
        }
        const float r = 1.0f / am; /* multiply by the reciprocal, as bitsandbytes */
        for (size_t i = b0; i < b1; i++)
            res->codes[i] = nf4_quantize_value(x[i] * r);
    }

    if (double_quant) {
        if (double_quantize(res, res->absmax) < 0)
            goto oom;
        free(res->absmax);
        res->absmax = NULL;
    }
    return 0;
oom:
    nf4_free(res);
    return llmq_fail("nf4: out of memory for %zu values", n);
}

void nf4_block_absmax(const llmq_nf4 *q, float *absmax)
{
    if (!q->double_quant) {
        memcpy(absmax, q->absmax, q->nblocks * sizeof(float));
        return;
    }
    float code[256];
    dynmap_signed(code);
    blockwise8_dequantize(code, q->qabsmax, q->nblocks, q->blocksize2, q->absmax2, absmax);
    for (size_t i = 0; i < q->nblocks; i++)
        absmax[i] += q->offset;
}

int nf4_dequantize(const llmq_nf4 *q, float *x)
{
    float *am = malloc(q->nblocks * sizeof(float));
    if (!am)
        return llmq_fail("nf4: out of memory");
    nf4_block_absmax(q, am);
    for (size_t i = 0; i < q->n; i++)
        x[i] = nf4_code[q->codes[i]] * am[i / (size_t)q->blocksize];
    free(am);
    return 0;
}

void nf4_pack(const uint8_t *codes, size_t n, uint8_t *packed)
{
    for (size_t i = 0; i < n; i += 2) {
        uint8_t hi = codes[i] & 0x0F, lo = i + 1 < n ? codes[i + 1] & 0x0F : 0;
        packed[i / 2] = (uint8_t)(hi << 4 | lo);
    }
}

void nf4_unpack(const uint8_t *packed, size_t n, uint8_t *codes)
{
    for (size_t i = 0; i < n; i++)
        codes[i] = i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 0x0F;
}
