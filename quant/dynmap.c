#include "quant/dynmap.h"

#include <math.h>
#include <stdlib.h>

/* PyTorch's fp32 linspace, element by element (see dynmap.h). Its CPU
 * kernels are built with FMA contraction, so start + step * i is one fused
 * multiply-add; fmaf reproduces that exactly (checked against torch 2.x on
 * an AVX512 x86-64 host: all 256 map values equal). */
static void linspace_f32(float start, float end, int steps, float *out)
{
    if (steps == 1) {
        out[0] = start;
        return;
    }
    const float step = (end - start) / (float)(steps - 1);
    const int halfway = steps / 2;
    for (int i = 0; i < steps; i++)
        out[i] = i < halfway ? fmaf(step, (float)i, start) : fmaf(-step, (float)(steps - i - 1), end);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void dynmap_signed(float code[256])
{
    /* 10^-6 .. 10^0 as Python computes them (double), then used as an fp32
     * scalar factor. */
    static const double pow10[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    float bounds[65];
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1;
        linspace_f32(0.1f, 1.0f, items, bounds);
        const float f = (float)pow10[i];
        for (int j = 0; j + 1 < items; j++) {
            float mean = (bounds[j] + bounds[j + 1]) / 2.0f;
            code[n++] = f * mean;
            code[n++] = -(f * mean);
        }
    }
    code[n++] = 0.0f;
    code[n++] = 1.0f;
    /* n == 256 here: 2 * (1 + 2 + ... + 64) + 2. */
    qsort(code, (size_t)n, sizeof(float), cmp_float);
}

uint8_t dynmap_quantize_value(const float code[256], float x)
{
    /* Seven halving steps from the middle. `lo`/`hi` are the last pivots
     * found below / at-or-above x (their values lv/hv start at -1/1, the
     * ends of the range), and the search ends on a pivot it has not
     * compared. The winner is decided against that pivot's value through
     * the midpoints, with ties going to the pivot. */
    int pivot = 127, lo = 0, hi = 255;
    float lv = -1.0f, hv = 1.0f;
    float val = code[pivot];
    for (int step = 64; step > 0; step >>= 1) {
        if (x > val) {
            lo = pivot;
            lv = val;
            pivot += step;
        } else {
            hi = pivot;
            hv = val;
            pivot -= step;
        }
        val = code[pivot];
    }
    if (hi == 255)
        hv = code[255];
    if (lo == 0)
        lv = code[0];
    if (x > val)
        return (uint8_t)(x > (hv + val) * 0.5f ? hi : pivot);
    return (uint8_t)(x < (lv + val) * 0.5f ? lo : pivot);
}

void blockwise8_quantize(const float code[256], const float *x, size_t n, int blocksize, uint8_t *q,
                         float *absmax)
{
    const size_t B = (size_t)blocksize;
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += B, bi++) {
        size_t b1 = b0 + B < n ? b0 + B : n;
        float am = 0.0f;
        for (size_t i = b0; i < b1; i++)
            am = fmaxf(am, fabsf(x[i]));
        absmax[bi] = am;
        if (am == 0.0f) {
            for (size_t i = b0; i < b1; i++)
                q[i] = 127;
            continue;
        }
        const float r = 1.0f / am;
        for (size_t i = b0; i < b1; i++)
            q[i] = dynmap_quantize_value(code, x[i] * r);
    }
}

void blockwise8_dequantize(const float code[256], const uint8_t *q, size_t n, int blocksize,
                           const float *absmax, float *x)
{
    for (size_t i = 0; i < n; i++)
        x[i] = code[q[i]] * absmax[i / (size_t)blocksize];
}
