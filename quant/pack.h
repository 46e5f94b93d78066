/* Bit packing of quantized weights for the export layouts, and the inverse
 * for reading third-party checkpoints.
 *
 * All layouts here are little-endian bit streams in 32-bit words (stored as
 * int32 in safetensors): value i of a stream of b-bit values sits at bit
 * offset b*i, least significant first. For b in {2, 4, 8} that is "word
 * i/pf, bits b*(i%pf)" with pf = 32/b; for b = 3 it is AutoGPTQ's layout,
 * where 32 values fill 3 words and values 10 and 21 straddle word boundaries
 * (value 10: bits 30-31 of word 0 + bit 0 of word 1; value 21: bit 31 of
 * word 1 + bits 0-1 of word 2).
 *
 * GPTQ (K = in, N = out, ng = ceil(K / G)):
 *   qweight int32 [K*b/32, N]   column n = the stream of q[n, 0..K) along K
 *   qzeros  int32 [ng, N*b/32]  row g = the stream of zeros[g, 0..N) along N;
 *                               v1 ("gptq") stores zero - 1 (4-bit sym: every
 *                               word 0x77777777), v2 ("gptq_v2") stores zero
 *   scales  fp16  [ng, N]
 *   g_idx   int32 [K]
 * AWQ GEMM (4-bit only):
 *   qweight int32 [K, N/8]  packed along N, word w of row k holds elements
 *                           n = 8w + order[j] at bits 4j, order = 0,2,4,6,1,3,5,7
 *   qzeros  int32 [ng, N/8] same order, raw zeros
 * llmq's own layout (docs/LLMQ_FORMAT.md): codes packed along K, byte-wise:
 *   bits <= 4: uint4x2 [N, ceil(K/2)], element k in the LOW nibble of byte
 *              k/2 when k is even, HIGH nibble when odd; odd K pads a 0 nibble
 *   bits 5..8: uint8 [N, K]
 *   scales, zeros fp16 [N, ng]
 *
 * Functions return 0, or -1 with llmq_fail() naming what does not fit. */
#ifndef LLMQ_QUANT_PACK_H
#define LLMQ_QUANT_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "quant/qweight.h"

/* ---- generic bit streams ---- */

/* Write n b-bit values (b 1..8) as a stream into words[0..ceil(n*b/32)),
 * stepping `stride` words between consecutive stream words (1 = contiguous,
 * N = down a column of a row-major [rows, N] array). Clears the words first. */
void pack_bits(const uint8_t *vals, size_t n, int bits, uint32_t *words, size_t stride);
/* Read n b-bit values back. */
void unpack_bits(const uint32_t *words, size_t stride, size_t n, int bits, uint8_t *vals);

/* ---- GPTQ ---- */

/* 1 if GPTQ's layout can hold a [N, K] weight at `bits` (2, 3, 4 or 8;
 * K*bits % 32 == 0 and N*bits % 32 == 0, i.e. K % 8 and N % 8 == 0 at 4
 * bits, K % 32 and N % 32 == 0 at 3 bits); else 0 with *why (a static
 * string) saying which condition fails. why may be NULL. */
int gptq_fits(int K, int N, int bits, const char **why);

/* Sizes in int32 words: qweight rows K*b/32, qzeros columns N*b/32. */
size_t gptq_qweight_rows(int K, int bits);
size_t gptq_qzeros_cols(int N, int bits);

/* qweight needs only K * bits % 32 == 0, qzeros only N * bits % 32 == 0. */
int gptq_pack_qweight(const llmq_qweight *qw, int32_t *qweight);
int gptq_unpack_qweight(const int32_t *qweight, int K, int N, int bits, uint8_t *q /* [N, K] */);

/* v2 = 0 stores zero - 1 and fails if some zero is 0 (not representable: the
 * -1 would spill into its neighbours; export asym models as gptq_v2). Zeros
 * must be integers in 0..2^bits-1. */
int gptq_pack_qzeros(const llmq_qweight *qw, int v2, int32_t *qzeros);
int gptq_unpack_qzeros(const int32_t *qzeros, int ngroups, int N, int bits, int v2, float *zeros /* [ng, N] */);

/* fp16 [ng, N]: the scales rounded to fp16 (exact when quantized with
 * scale_f16). */
void gptq_pack_scales(const llmq_qweight *qw, uint16_t *scales);

/* Build an llmq_qweight from a GPTQ checkpoint's tensors (qweight, qzeros,
 * fp16 scales, g_idx) of a [N, K] linear. ngroups must be ceil(K / group)
 * (1 for group -1) and every g_idx entry in 0..ngroups-1. res is allocated
 * here. sym is recorded as given (the layout does not say). */
int gptq_import(const int32_t *qweight, const int32_t *qzeros, const uint16_t *scales, const int32_t *g_idx,
                int K, int N, int bits, int group, int ngroups, int v2, int sym, llmq_qweight *res);

/* ---- AWQ GEMM ---- */

/* 1 if the AWQ GEMM layout holds it: bits 4, N % 8 == 0, and no act-order
 * (g_idx[k] == k / G, checked by the pack functions). */
int awq_fits(int K, int N, int bits, const char **why);
int awq_pack_qweight(const llmq_qweight *qw, int32_t *qweight /* [K, N/8] */);
int awq_unpack_qweight(const int32_t *qweight, int K, int N, uint8_t *q /* [N, K] */);
int awq_pack_qzeros(const llmq_qweight *qw, int32_t *qzeros /* [ng, N/8] */);
int awq_unpack_qzeros(const int32_t *qzeros, int ngroups, int N, float *zeros /* [ng, N] */);

/* ---- llmq's own layout (docs/LLMQ_FORMAT.md) ---- */

/* Bytes per row of the code tensor: ceil(K/2) for bits <= 4, K otherwise. */
size_t llmqfmt_row_bytes(int K, int bits);
void llmqfmt_pack_codes(const llmq_qweight *qw, uint8_t *out /* [N, row_bytes] */);
/* Fails if a code exceeds 2^bits - 1 (a corrupt file). */
int llmqfmt_unpack_codes(const uint8_t *in, int N, int K, int bits, uint8_t *q /* [N, K] */);
/* scales and zeros as fp16 [N, ng] (transposed from the struct's [ng, N]). */
void llmqfmt_pack_params(const llmq_qweight *qw, uint16_t *scales, uint16_t *zeros);
void llmqfmt_unpack_params(const uint16_t *scales, const uint16_t *zeros, int N, int ngroups, float *scales_out,
                           float *zeros_out /* both [ng, N] */);

#endif
