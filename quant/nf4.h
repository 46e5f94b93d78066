/* NF4 (4-bit NormalFloat, QLoRA / bitsandbytes) blockwise quantization.
 *
 * The weight matrix is flattened row-major ([out, in] -> out*in values) and
 * cut into blocks of `blocksize` (64) CONSECUTIVE values; a last partial
 * block is allowed. Per block: absmax = max |x|, and each value gets the
 * code of the nearest of the 16 NF4 values to x * (1 / absmax) — the
 * reciprocal in fp32, and "nearest" by bitsandbytes' thresholds: the code is
 * the number of midpoints between neighbouring codebook values that x is
 * strictly greater than (an exact tie goes to the lower code). Dequantized
 * value = nf4_code[q] * absmax (fp32).
 *
 * Double quantization (bitsandbytes' compress_statistics=True): the absmax
 * values are stored as offset = mean(absmax) plus absmax - offset quantized
 * with the signed 8-bit dynamic map in blocks of 256 (quant/dynmap.h), each
 * block with its own fp32 absmax2. Dequantized absmax =
 * dyn_code[qabsmax] * absmax2 + offset.
 *
 * Codes are kept one per byte (values 0..15); nf4_pack() makes the on-disk
 * form, two codes per byte with the FIRST element in the HIGH nibble, as
 * bitsandbytes stores it. An all-zero block gets absmax 0 and code 7 (the
 * exact 0; bitsandbytes' CUDA kernel writes code 0 = -1.0 there, which also
 * dequantizes to 0). */
#ifndef LLMQ_QUANT_NF4_H
#define LLMQ_QUANT_NF4_H

#include <stddef.h>
#include <stdint.h>

/* The codebook, ascending, the fp32 values bitsandbytes hardcodes. */
extern const float nf4_code[16];

typedef struct {
    size_t n;          /* number of values (out * in) */
    int blocksize;     /* values per block (64) */
    size_t nblocks;    /* ceil(n / blocksize) */
    uint8_t *codes;    /* [n] one code per value, 0..15 */
    int double_quant;  /* 0: absmax is set; 1: qabsmax/absmax2/offset are set */
    float *absmax;     /* [nblocks] fp32 (double_quant = 0) */
    int blocksize2;    /* 256 */
    size_t nblocks2;   /* ceil(nblocks / blocksize2) */
    uint8_t *qabsmax;  /* [nblocks] 8-bit dynamic codes of absmax - offset */
    float *absmax2;    /* [nblocks2] */
    float offset;      /* mean of the absmax values */
} llmq_nf4;

/* The NF4 code of a normalized value (bitsandbytes' thresholds). */
uint8_t nf4_quantize_value(float x);

/* Quantize x[0..n) in blocks of `blocksize` (> 0; bitsandbytes uses 64),
 * with double quantization of the absmax values if double_quant. res is
 * allocated here; free with nf4_free. Returns 0, or -1 with llmq_fail(). */
int nf4_quantize(const float *x, size_t n, int blocksize, int double_quant, llmq_nf4 *res);

/* x[i] = nf4_code[codes[i]] * absmax[i / blocksize] with the absmax values
 * first decoded from their 8-bit form when double quantized. Returns -1
 * (llmq_fail) only when out of memory. */
int nf4_dequantize(const llmq_nf4 *q, float *x);

/* The per-block absmax values as dequantization uses them (decoded from the
 * double quantization when double_quant), into absmax[nblocks]. */
void nf4_block_absmax(const llmq_nf4 *q, float *absmax);

void nf4_free(llmq_nf4 *q);

/* Two codes per byte, first in the high nibble: packed[(n + 1) / 2]; an odd
 * n leaves the last low nibble 0. */
void nf4_pack(const uint8_t *codes, size_t n, uint8_t *packed);
void nf4_unpack(const uint8_t *packed, size_t n, uint8_t *codes);

#endif
