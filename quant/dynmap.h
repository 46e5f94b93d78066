/* bitsandbytes' signed 8-bit "dynamic" map and its blockwise quantizer.
 *
 * NF4 double quantization (quant/nf4.h) stores the per-block absmax values
 * of the 4-bit weights with this 8-bit type, as bitsandbytes'
 * quantize_4bit(compress_statistics=True) does. The definitions follow
 * bitsandbytes (functional.py create_dynamic_map, CUDA kQuantizeBlockwise /
 * dQuantize) so the codes match what it writes.
 *
 * The map (signed, 7 exponent bits, 8 total bits): for i = 0..6, take
 * 2^i + 1 points of linspace(0.1, 1) in fp32, the 2^i midpoints of
 * neighbouring points (fp32, (a + b) / 2), times 10^(i - 6) (the factor
 * rounded to fp32, product in fp32), both signs; plus 0 and 1.0; sorted.
 * That is 127 negative values (-0.99297 .. -5.5e-7), 0 at index 127, and 128
 * positive values up to 1.0 at index 255.
 *
 * linspace follows PyTorch's element formula (start + step * i below the
 * halfway point, end - step * (steps - 1 - i) from it, in fp32, each a fused
 * multiply-add as its x86-64 CPU build computes it; bitsandbytes builds the
 * map on the CPU even for CUDA tensors). */
#ifndef LLMQ_QUANT_DYNMAP_H
#define LLMQ_QUANT_DYNMAP_H

#include <stddef.h>
#include <stdint.h>

/* Fill code[256] with the signed dynamic map, ascending. */
void dynmap_signed(float code[256]);

/* The code of a normalized value x (x in [-1, 1]) as bitsandbytes' kernels
 * pick it (dQuantize, non-stochastic): a 7-step binary search over the
 * sorted map that ends on an unexamined pivot, then the nearest of that
 * pivot and the bracketing neighbour, compared through fp32 midpoints
 * ((a + b) * 0.5f); a value exactly on a midpoint goes to the pivot. */
uint8_t dynmap_quantize_value(const float code[256], float x);

/* Blockwise 8-bit quantization of x[0..n): blocks of `blocksize` consecutive
 * values (a last partial block allowed), absmax[b] = max |x| of block b,
 * q = dynmap_quantize_value(code, x * (1 / absmax)) with the reciprocal in
 * fp32 as bitsandbytes computes it. An all-zero block gets absmax 0 and
 * code 127 (the exact 0). absmax has ceil(n / blocksize) entries. */
void blockwise8_quantize(const float code[256], const float *x, size_t n, int blocksize, uint8_t *q,
                         float *absmax);

/* x[i] = code[q[i]] * absmax[i / blocksize], fp32. */
void blockwise8_dequantize(const float code[256], const uint8_t *q, size_t n, int blocksize,
                           const float *absmax, float *x);

#endif
