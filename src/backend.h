/* The numerical contract shared by the CPU reference and the CUDA path.
 *
 * The model runner is written once against this table of operations; each
 * backend implements it. Buffers are opaque pointers in the backend's
 * memory (host memory for the CPU backend, device memory for CUDA). Tensors
 * are row-major with one row per token: activations [rows, features],
 * weights [out, in] as in Hugging Face. Unless an argument says otherwise a
 * buffer holds elements of the backend's storage type `dt` (F32 on the CPU;
 * F16, BF16 or F32 on CUDA); arithmetic accumulates in fp32 everywhere.
 *
 * Operations are asynchronous on CUDA (one stream); functions that return
 * data to the host synchronize. Every function returns 0 or -1 with
 * llmq_fail(). */
#ifndef LLMQ_BACKEND_H
#define LLMQ_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

typedef struct llmq_backend llmq_backend;

struct llmq_backend {
    const char *name; /* "cpu" or "cuda" */
    llmq_dtype dt;    /* storage type of activations and weights */
    void *impl;       /* backend private state */

    /* ---- memory ---- */
    void *(*alloc)(llmq_backend *b, size_t nbytes); /* NULL + llmq_fail on failure */
    void (*free)(llmq_backend *b, void *p);
    /* Host src (n elements of float type src_dt) -> backend dst of float
     * type dst_dt, converted (round to nearest even). */
    int (*upload)(llmq_backend *b, void *dst, llmq_dtype dst_dt, const void *src, llmq_dtype src_dt,
                  size_t n);
    /* Raw bytes host -> backend (token ids, packed integer weights). */
    int (*upload_bytes)(llmq_backend *b, void *dst, const void *src, size_t nbytes);
    /* Backend src (n elements of float type src_dt) -> host float32. Synchronizes. */
    int (*download_f32)(llmq_backend *b, float *dst, const void *src, llmq_dtype src_dt, size_t n);
    int (*sync)(llmq_backend *b);
    /* Backend to backend copy of nbytes. */
    int (*copy)(llmq_backend *b, void *dst, const void *src, size_t nbytes);

    /* ---- the Llama forward ---- */
    /* out[r,:] = table[ids[r],:]; ids: int32 in backend memory; table [vocab, dim]. */
    int (*embed)(llmq_backend *b, void *out, const void *table, const int32_t *ids, int rows, int dim);
    /* Hugging Face LlamaRMSNorm: h = x * rsqrt(mean(x^2) + eps) in fp32,
     * rounded to dt, then multiplied by w (in dt). */
    int (*rmsnorm)(llmq_backend *b, void *out, const void *x, const void *w, int rows, int dim, float eps);
    /* y[rows,out] = x[rows,in] . W[out,in]^T (+ bias[out] if bias != NULL). */
    int (*linear)(llmq_backend *b, void *y, const void *x, const void *w, const void *bias, int rows,
                  int in, int out);
    /* In-place rotate-half RoPE (HF layout: pairs i and i + head_dim/2) on
     * x [rows, n_heads*head_dim]; the position of row r is r % seq.
     * cos_sin: F32 table [seq][head_dim] holding cos(p*f_i) for i <
     * head_dim/2 then sin(p*f_i), in backend memory. */
    int (*rope)(llmq_backend *b, void *x, const float *cos_sin, int rows, int seq, int n_heads,
                int head_dim);
    /* Causal self-attention inside each window of seq rows (batch windows):
     * q [batch*seq, n_heads*hd], k and v [batch*seq, n_kv*hd] (GQA: query
     * head h reads kv head h / (n_heads/n_kv)), out like q. Scale
     * 1/sqrt(hd), softmax in fp32. */
    int (*attention)(llmq_backend *b, void *out, const void *q, const void *k, const void *v, int batch,
                     int seq, int n_heads, int n_kv, int head_dim);
    /* out = silu(gate) * up, n elements (HF: act_fn(gate) in dt, times up). */
    int (*silu_mul)(llmq_backend *b, void *out, const void *gate, const void *up, size_t n);
    /* x += y, n elements. */
    int (*add)(llmq_backend *b, void *x, const void *y, size_t n);
    /* Sum over rows with targets[r] >= 0 of -log_softmax(logits[r,:])[targets[r]],
     * computed in fp32/fp64, returned on the host in *nll (synchronizes).
     * targets: int32 in backend memory. */
    int (*nll)(llmq_backend *b, double *nll, const void *logits, const int32_t *targets, int rows,
               int vocab);

    /* ---- observers (calibration statistics, Hessians) ---- */
    /* amax[j] = max(amax[j], max_r |x[r,j]|); amax: F32 [cols] in backend memory. */
    int (*col_absmax)(llmq_backend *b, float *amax, const void *x, int rows, int cols);
    /* Activation statistics in one pass over x [rows, cols] (F32 outputs in
     * backend memory; any output may be NULL):
     * col_amax[j] = max(col_amax[j], max_r |x[r,j]|),
     * col_abssum[j] += sum_r |x[r,j]|, row_amax[r] = max_j |x[r,j]|. */
    int (*act_stats)(llmq_backend *b, float *col_amax, float *col_abssum, float *row_amax, const void *x, int rows,
                     int cols);
    /* H += alpha * x^T x; H: F32 [cols, cols] in backend memory (full, symmetric). */
    int (*xtx)(llmq_backend *b, float *h, const void *x, int rows, int cols, float alpha);

    /* ---- fake quantization of activations ---- */
    /* Per-token symmetric quantize-dequantize in place, as SmoothQuant's
     * reference does: for each row s = max(max|x[r,:]|, 1e-5) / qmax,
     * x = rint(x / s) * s (round half to even, like torch.round), computed
     * in fp32 and stored in dt. */
    int (*fq_per_token)(llmq_backend *b, void *x, int rows, int cols, int qmax);

    /* Static per-tensor symmetric quantize-dequantize in place with a given
     * scale: x = clamp(rint(x / scale), -qmax - 1, qmax) * scale. */
    int (*fq_tensor)(llmq_backend *b, void *x, size_t n, float scale, int qmax);

    /* ---- KV cache (decoding; int8 KV) ----
     * A cache holds `cap` positions for each of `batch` sequences, one row of
     * n_kv*head_dim values per position: [batch, cap, n_kv*head_dim] in dt,
     * or with kv8 int8 codes plus fp32 scales [batch, cap, n_kv], one per
     * position and kv head: s = max(max_d |x_d|, 1e-5) / 127 over the head's
     * head_dim values, q = rint(x / s) (half to even) clamped to +-127 --
     * the grid of fq_per_token(qmax 127) over rows of head_dim values, so the
     * fake-quant path (fq_per_token on k and v) and the int8 cache hold the
     * same numbers. `scales` is NULL / unused without kv8.
     * pos_dev: NULL, or an int32 in backend memory holding the position,
     * read when the work executes (a replayed CUDA graph advances without
     * new launches); pos must then equal it when the call is made, and the
     * caller keeps every later position inside the cache. */
    /* Write x [batch*n, n_kv*head_dim] (n new rows per sequence, sequence-
     * major) to positions pos..pos+n-1 of every sequence; pos + n <= cap. */
    int (*kv_store)(llmq_backend *b, void *cache, float *scales, const void *x, int batch, int n, int pos, int cap,
                    int n_kv, int head_dim, int kv8, const int32_t *pos_dev);
    /* Attention of q [batch*n, n_heads*head_dim] (query i of a sequence at
     * position pos+i) over positions 0..pos+i of its sequence's caches kc/vc
     * (GQA as in attention). Scale 1/sqrt(head_dim); scores, softmax and the
     * weighted sum in fp32; int8 entries are dequantized (code * scale, fp32)
     * as they are read. out like q, in dt. */
    int (*attention_kv)(llmq_backend *b, void *out, const void *q, const void *kc, const float *ks, const void *vc,
                        const float *vs, int batch, int n, int pos, int cap, int n_heads, int n_kv, int head_dim,
                        int kv8, const int32_t *pos_dev);
    /* rope with the position of row r = *pos_dev + r % seq, *pos_dev an
     * int32 in backend memory read when the work executes. */
    int (*rope_at)(llmq_backend *b, void *x, const float *cos_sin, const int32_t *pos_dev, int rows, int seq,
                   int n_heads, int head_dim);

    /* ---- CUDA graphs (NULL on backends without them) ----
     * graph_begin: the backend's following operations are recorded, not
     * run, until graph_end returns them as a graph; graph_launch runs it
     * (the recorded operations with the same arguments, in order). Used for
     * decode steps, whose hundreds of small launches cost more host time
     * than the GPU takes. */
    int (*graph_begin)(llmq_backend *b);
    int (*graph_end)(llmq_backend *b, void **graph);
    int (*graph_launch)(llmq_backend *b, void *graph);
    void (*graph_free)(llmq_backend *b, void *graph);

    void (*destroy)(llmq_backend *b);
};

/* The fp32 reference backend (OpenBLAS). dt is always F32. */
int llmq_backend_cpu(llmq_backend **out);

/* The CUDA backend on device `device` with storage type dt (F16, BF16 or
 * F32). Returns -1 with a message if CUDA support was not built or no GPU
 * is present. */
int llmq_backend_cuda(llmq_backend **out, int device, llmq_dtype dt);

/* 1 if a CUDA device is usable (built with CUDA and a GPU present). */
int llmq_cuda_available(void);

#endif
