/* NF4 matrix-vector product on the GPU for decoding (M <= 8 tokens), the
 * runner's NF4 path where the slice kernel is not (kernels/wna16.h,
 * wna16_prepare_nf4: compute capability below 9.0, K not a multiple of
 * 256, F32):
 * y [M,N] = x [M,K] . dequant(W)^T with W [N,K] in bitsandbytes' NF4 form
 * (quant/nf4.h): the flattened row-major values in blocks of 64, codes
 * packed two per byte (first value in the HIGH nibble), absmax per block
 * plain fp32 or double-quantized (8-bit dynamic code per block, fp32
 * absmax2 per 256 blocks, one offset). The 4-bit codes and the absmax are
 * decoded in registers; products are accumulated in fp32 (per 32-value
 * half block, then times the block's absmax); y is rounded once to dt.
 * quant/nf4_gemv_ref.h is the reference.
 *
 * Only defined when llmq is built with CUDA (LLMQ_HAVE_CUDA). Functions
 * return 0, or -1 with llmq_fail(); none exits. */
#ifndef LLMQ_KERNELS_NF4_GEMV_H
#define LLMQ_KERNELS_NF4_GEMV_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "quant/nf4.h"
#include "src/dtype.h"

/* An NF4 weight in device memory. */
typedef struct {
    int n, k;          /* W is [n, k] */
    uint8_t *packed;   /* (n*k + 1) / 2 bytes, first code in the high nibble */
    int double_quant;
    float *absmax;     /* [nblocks] (double_quant = 0) */
    uint8_t *qabsmax;  /* [nblocks] dynamic-map codes of absmax - offset (double_quant = 1) */
    float *absmax2;    /* [ceil(nblocks / 256)] */
    float offset;
    float *dyn_code;   /* [256] the signed dynamic map (quant/dynmap.h) */
    float *code;       /* [16] the NF4 codebook (nf4_code) */
} llmq_nf4_gpu;

/* Pack and upload q (n * k values, blocksize 64, blocksize2 256) to the
 * current device; synchronous. Free with llmq_nf4_gpu_free. */
int llmq_nf4_gpu_upload(llmq_nf4_gpu *d, const llmq_nf4 *q, int n, int k);
void llmq_nf4_gpu_free(llmq_nf4_gpu *d);

/* y [m, w->n] (dt) = x [m, w->k] (dt) . dequant(W)^T, 1 <= m <= 8, dt F16,
 * BF16 or F32, on `stream` (a cudaStream_t as void *). Rows of W that start
 * on a block and a 16-byte boundary (k % 64 == 0) take the fast kernel;
 * other k a simple one. */
int llmq_nf4_gemv(void *stream, llmq_dtype dt, void *y, const void *x, const llmq_nf4_gpu *w, int m);

/* W [n, k] dequantized into dst (n*k elements of dt, as nf4_dequantize()
 * then rounded to dt): the prefill path, a dequantization pass followed by
 * a dense GEMM, for inputs longer than the GEMV takes. */
int llmq_nf4_dequant(void *stream, llmq_dtype dt, void *dst, const llmq_nf4_gpu *w);

/* Benchmark knob: weight rows per warp of the fast kernel at m = 1 (1, 2
 * or 4; 0 restores the default: 4 for n >= 8192, else 2). Returns -1 for
 * other values. Process-wide, not thread-safe. */
int llmq_nf4_gemv_tune(int rows_per_warp);

#ifdef __cplusplus
}
#endif

#endif
