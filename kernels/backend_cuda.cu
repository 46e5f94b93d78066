/* The CUDA backend: the operation table of src/backend.h on one GPU.
 *
 * One stream and one cuBLAS handle per backend; every operation is
 * enqueued on the stream and returns at once, except those that hand data
 * back to the host. The kernels live one concept per file (convert,
 * elementwise, norm, rope, attention, nll, observe, fake_quant); this file
 * holds the table, memory, transfers and the cuBLAS products (linear, xtx).
 *
 * Precision: storage in dt (F16, BF16 or F32), fp32 arithmetic. F32
 * products use cuBLAS's default math mode, which never substitutes TF32, so
 * the F32 path matches the CPU reference to rounding. */
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_cuda.h"
#include "kernels/cuda_common.cuh"

int cuda_pdl_ok = 1;

#define STAGE_BYTES ((size_t)32 << 20)   /* per staging buffer (two of each kind) */
#define CUBLAS_WS_BYTES ((size_t)32 << 20)

int cuda_resident_blocks(int device, int nw, int regs, size_t smem)
{
    static int smem_sm[64], reserved[64]; /* per device, asked once (-1: the query failed) */
    const int d = device >= 0 && device < 64 ? device : 0;
    if (!smem_sm[d] &&
        (cudaDeviceGetAttribute(&smem_sm[d], cudaDevAttrMaxSharedMemoryPerMultiprocessor, device) != cudaSuccess ||
         cudaDeviceGetAttribute(&reserved[d], cudaDevAttrReservedSharedMemoryPerBlock, device) != cudaSuccess)) {
        cudaGetLastError();
        smem_sm[d] = -1;
    }
    const int warp_regs = (regs * 32 + 255) / 256 * 256;
    int n = 65536 / (warp_regs * nw);
    if (smem_sm[d] > 0 && (int)((size_t)smem_sm[d] / (smem + (size_t)reserved[d])) < n)
        n = (int)((size_t)smem_sm[d] / (smem + (size_t)reserved[d]));
    if (64 / nw < n)
        n = 64 / nw;
    return n < 32 ? n : 32;
}

static cuda_ctx *ctx(llmq_backend *b) { return (cuda_ctx *)b->impl; }

const char *cublas_status_name(cublasStatus_t s) { return cublasGetStatusString(s); }

static cudaDataType_t cuda_type(llmq_dtype dt)
{
    switch (dt) {
    case LLMQ_F16: return CUDA_R_16F;
    case LLMQ_BF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
    }
}

/* ---- memory and transfers ---- */

static void *cu_alloc(llmq_backend *b, size_t nbytes)
{
    (void)b;
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, nbytes ? nbytes : 256);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky; clear it */
        llmq_fail("cudaMalloc of %zu bytes: %s", nbytes, cudaGetErrorString(err));
        return NULL;
    }
    return p;
}

static void cu_free(llmq_backend *b, void *p)
{
    (void)b;
    if (p)
        cudaFree(p); /* waits for work in flight; an error here has no caller to tell */
}

/* Host -> device with conversion. Chunks go through a pinned buffer (the
 * CPU copies chunk i+1 while the copy engine moves chunk i) into the
 * destination directly when the types agree, else into a device staging
 * buffer that a conversion kernel reads. Returns once the host src may be
 * reused; the device side completes in stream order. */
static int cu_upload(llmq_backend *b, void *dst, llmq_dtype dst_dt, const void *src, llmq_dtype src_dt, size_t n)
{
    cuda_ctx *c = ctx(b);
    if (!llmq_dtype_is_float(src_dt) || !(dst_dt == LLMQ_F32 || dst_dt == LLMQ_F16 || dst_dt == LLMQ_BF16))
        return llmq_fail("upload: cannot convert %s to %s", llmq_dtype_name(src_dt), llmq_dtype_name(dst_dt));
    const size_t ssz = llmq_dtype_size(src_dt), dsz = llmq_dtype_size(dst_dt);
    const size_t per = c->stage_bytes / ssz;
    for (size_t off = 0, i = 0; off < n; off += per, i++) {
        const size_t cnt = n - off < per ? n - off : per;
        const int s = (int)(i & 1);
        CUDA_TRY(cudaEventSynchronize(c->staged[s])); /* pinned[s] drained by its last copy */
        memcpy(c->pinned[s], (const char *)src + off * ssz, cnt * ssz);
        if (src_dt == dst_dt) {
            CUDA_TRY(cudaMemcpyAsync((char *)dst + off * dsz, c->pinned[s], cnt * ssz, cudaMemcpyHostToDevice,
                                     c->stream));
            CUDA_TRY(cudaEventRecord(c->staged[s], c->stream));
        } else {
            CUDA_TRY(cudaMemcpyAsync(c->dstage[s], c->pinned[s], cnt * ssz, cudaMemcpyHostToDevice, c->stream));
            CUDA_TRY(cudaEventRecord(c->staged[s], c->stream));
            if (cuda_convert(c, (char *)dst + off * dsz, dst_dt, c->dstage[s], src_dt, cnt))
                return llmq_wrap("upload");
        }
    }
    return 0;
}

static int cu_upload_bytes(llmq_backend *b, void *dst, const void *src, size_t nbytes)
{
    cuda_ctx *c = ctx(b);
    /* Same staging as upload; raw bytes are "F32/F32" without conversion
     * except that nbytes need not be a multiple of 4. */
    for (size_t off = 0, i = 0; off < nbytes; off += c->stage_bytes, i++) {
        const size_t cnt = nbytes - off < c->stage_bytes ? nbytes - off : c->stage_bytes;
        const int s = (int)(i & 1);
        CUDA_TRY(cudaEventSynchronize(c->staged[s]));
        memcpy(c->pinned[s], (const char *)src + off, cnt);
        CUDA_TRY(cudaMemcpyAsync((char *)dst + off, c->pinned[s], cnt, cudaMemcpyHostToDevice, c->stream));
        CUDA_TRY(cudaEventRecord(c->staged[s], c->stream));
    }
    return 0;
}

/* Device -> host f32: convert on the device into the staging buffer, copy
 * back through pinned memory. Synchronizes. */
static int cu_download_f32(llmq_backend *b, float *dst, const void *src, llmq_dtype src_dt, size_t n)
{
    cuda_ctx *c = ctx(b);
    if (!(src_dt == LLMQ_F32 || src_dt == LLMQ_F16 || src_dt == LLMQ_BF16 || src_dt == LLMQ_F64))
        return llmq_fail("download: cannot convert %s to F32", llmq_dtype_name(src_dt));
    const size_t ssz = llmq_dtype_size(src_dt), per = c->stage_bytes / sizeof(float);
    for (size_t off = 0; off < n; off += per) {
        const size_t cnt = n - off < per ? n - off : per;
        const void *chunk = (const char *)src + off * ssz;
        if (src_dt != LLMQ_F32) {
            if (cuda_convert(c, c->dstage[0], LLMQ_F32, chunk, src_dt, cnt))
                return llmq_wrap("download");
            chunk = c->dstage[0];
        }
        CUDA_TRY(cudaMemcpyAsync(c->pinned[0], chunk, cnt * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
        CUDA_TRY(cudaStreamSynchronize(c->stream));
        memcpy(dst + off, c->pinned[0], cnt * sizeof(float));
    }
    CUDA_TRY(cudaStreamSynchronize(c->stream)); /* also reports faults of earlier kernels when n == 0 */
    return 0;
}

static int cu_sync(llmq_backend *b)
{
    CUDA_TRY(cudaStreamSynchronize(ctx(b)->stream));
    CUDA_TRY(cudaGetLastError());
    return 0;
}

static int cu_copy(llmq_backend *b, void *dst, const void *src, size_t nbytes)
{
    CUDA_TRY(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, ctx(b)->stream));
    return 0;
}

/* ---- products (cuBLAS) ---- */

/* Row-major y[rows,out] = x[rows,in] W[out,in]^T is column-major
 * y^T[out,rows] = W x^T: A = W read as (in x out, ld in) transposed,
 * B = x read as (in x rows, ld in). */
static int cu_linear(llmq_backend *b, void *y, const void *x, const void *w, const void *bias, int rows, int in,
                     int out)
{
    cuda_ctx *c = ctx(b);
    if (rows <= 0 || out <= 0)
        return 0;
    const cudaDataType_t t = cuda_type(b->dt);
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_TRY(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &one, w, t, in, x, t, in, &zero, y, t,
                            out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias && cuda_add_bias(c, b->dt, y, bias, rows, out))
        return -1;
    return 0;
}

/* H[cols,cols] += alpha x^T x with x [rows, cols] in dt and H in F32.
 * Column-major, x's memory is X^T (cols x rows, ld cols): H = X^T (X^T)^T. */
static int cu_xtx(llmq_backend *b, float *h, const void *x, int rows, int cols, float alpha)
{
    cuda_ctx *c = ctx(b);
    if (rows <= 0 || cols <= 0)
        return 0;
    const cudaDataType_t t = cuda_type(b->dt);
    const float one = 1.0f;
    CUBLAS_TRY(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, cols, cols, rows, &alpha, x, t, cols, x, t, cols,
                            &one, h, CUDA_R_32F, cols, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* ---- thin wrappers onto the kernels ---- */

static int cu_embed(llmq_backend *b, void *out, const void *table, const int32_t *ids, int rows, int dim)
{
    return cuda_embed(ctx(b), b->dt, out, table, ids, rows, dim);
}

static int cu_rmsnorm(llmq_backend *b, void *out, const void *x, const void *w, int rows, int dim, float eps)
{
    return cuda_rmsnorm(ctx(b), b->dt, out, x, w, rows, dim, eps);
}

static int cu_rope(llmq_backend *b, void *x, const float *cos_sin, int rows, int seq, int n_heads, int head_dim)
{
    return cuda_rope(ctx(b), b->dt, x, cos_sin, rows, seq, n_heads, head_dim, NULL);
}

static int cu_rope_at(llmq_backend *b, void *x, const float *cos_sin, const int32_t *pos_dev, int rows, int seq,
                      int n_heads, int head_dim)
{
    return cuda_rope(ctx(b), b->dt, x, cos_sin, rows, seq, n_heads, head_dim, pos_dev);
}

static int cu_attention(llmq_backend *b, void *out, const void *q, const void *k, const void *v, int batch, int seq,
                        int n_heads, int n_kv, int head_dim)
{
    return cuda_attention(ctx(b), b->dt, out, q, k, v, batch, seq, n_heads, n_kv, head_dim);
}

static int cu_silu_mul(llmq_backend *b, void *out, const void *gate, const void *up, size_t n)
{
    return cuda_silu_mul(ctx(b), b->dt, out, gate, up, n);
}

static int cu_add(llmq_backend *b, void *x, const void *y, size_t n) { return cuda_add(ctx(b), b->dt, x, y, n); }

static int cu_nll(llmq_backend *b, double *nll, const void *logits, const int32_t *targets, int rows, int vocab)
{
    return cuda_nll(ctx(b), b->dt, nll, logits, targets, rows, vocab);
}

static int cu_col_absmax(llmq_backend *b, float *amax, const void *x, int rows, int cols)
{
    return cuda_col_absmax(ctx(b), b->dt, amax, x, rows, cols);
}

static int cu_act_stats(llmq_backend *b, float *col_amax, float *col_abssum, float *row_amax, const void *x,
                        int rows, int cols)
{
    return cuda_act_stats(ctx(b), b->dt, col_amax, col_abssum, row_amax, x, rows, cols);
}

static int cu_fq_tensor(llmq_backend *b, void *x, size_t n, float scale, int qmax)
{
    return cuda_fq_tensor(ctx(b), b->dt, x, n, scale, qmax);
}

static int cu_fq_per_token(llmq_backend *b, void *x, int rows, int cols, int qmax)
{
    return cuda_fq_per_token(ctx(b), b->dt, x, rows, cols, qmax);
}

static int cu_kv_store(llmq_backend *b, void *cache, float *scales, const void *x, int batch, int n, int pos, int cap,
                       int n_kv, int head_dim, int kv8, const int32_t *pos_dev)
{
    return cuda_kv_store(ctx(b), b->dt, cache, scales, x, batch, n, pos, cap, n_kv, head_dim, kv8, pos_dev);
}

static int cu_attention_kv(llmq_backend *b, void *out, const void *q, const void *kc, const float *ks, const void *vc,
                           const float *vs, int batch, int n, int pos, int cap, int n_heads, int n_kv, int head_dim,
                           int kv8, const int32_t *pos_dev)
{
    return cuda_attention_kv(ctx(b), b->dt, out, q, kc, ks, vc, vs, batch, n, pos, cap, n_heads, n_kv, head_dim, kv8,
                             pos_dev);
}

/* ---- CUDA graphs: stream capture on the backend's stream ---- */

static int cu_graph_begin(llmq_backend *b)
{
    CUDA_TRY(cudaStreamBeginCapture(ctx(b)->stream, cudaStreamCaptureModeThreadLocal));
    return 0;
}

static int cu_graph_end(llmq_backend *b, void **graph)
{
    cudaGraph_t g = NULL;
    cudaGraphExec_t exec = NULL;
    *graph = NULL;
    CUDA_TRY(cudaStreamEndCapture(ctx(b)->stream, &g));
    cudaError_t err = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    if (err != cudaSuccess)
        return llmq_fail("cudaGraphInstantiate: %s", cudaGetErrorString(err));
    *graph = exec;
    return 0;
}

static int cu_graph_launch(llmq_backend *b, void *graph)
{
    CUDA_TRY(cudaGraphLaunch((cudaGraphExec_t)graph, ctx(b)->stream));
    return 0;
}

static void cu_graph_free(llmq_backend *b, void *graph)
{
    (void)b;
    if (graph)
        cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ---- lifetime ---- */

static void ctx_release(cuda_ctx *c)
{
    if (!c)
        return;
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    for (int i = 0; i < 2; i++) {
        if (c->pinned[i])
            cudaFreeHost(c->pinned[i]);
        if (c->dstage[i])
            cudaFree(c->dstage[i]);
        if (c->staged[i])
            cudaEventDestroy(c->staged[i]);
    }
    if (c->nll_rows)
        cudaFree(c->nll_rows);
    if (c->nll_sum)
        cudaFree(c->nll_sum);
    if (c->blas_ws)
        cudaFree(c->blas_ws);
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
}

static void cu_destroy(llmq_backend *b)
{
    if (!b)
        return;
    ctx_release(ctx(b));
    free(b);
}

static int ctx_init(cuda_ctx *c, int device)
{
    c->device = device;
    CUDA_TRY(cudaSetDevice(device));
    cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    c->num_sms = prop.multiProcessorCount;
    c->cc_major = prop.major;
    c->smem_optin = prop.sharedMemPerBlockOptin;
    CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUBLAS_TRY(cublasCreate(&c->blas));
    CUBLAS_TRY(cublasSetStream(c->blas, c->stream));
    /* Default math: no TF32 for F32 data; tensor cores for 16-bit inputs
     * with the fp32 compute type. Split-K partial sums are reduced in fp32
     * too, not in the 16-bit output type as cuBLAS otherwise may. */
    CUBLAS_TRY(cublasSetMathMode(c->blas, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                                         CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    CUDA_TRY(cudaMalloc(&c->blas_ws, CUBLAS_WS_BYTES));
    CUBLAS_TRY(cublasSetWorkspace(c->blas, c->blas_ws, CUBLAS_WS_BYTES));
    c->stage_bytes = STAGE_BYTES;
    for (int i = 0; i < 2; i++) {
        CUDA_TRY(cudaMallocHost(&c->pinned[i], c->stage_bytes));
        CUDA_TRY(cudaMalloc(&c->dstage[i], c->stage_bytes));
        CUDA_TRY(cudaEventCreateWithFlags(&c->staged[i], cudaEventDisableTiming));
    }
    CUDA_TRY(cudaMalloc((void **)&c->nll_sum, sizeof(double)));
    return 0;
}

extern "C" void *llmq_cuda_stream(llmq_backend *b)
{
    if (!b || !b->name || strcmp(b->name, "cuda") != 0)
        return NULL;
    return (void *)ctx(b)->stream;
}

/* Does this build hold machine code (or PTX the driver can compile) for
 * the current device? A Hopper-only build on an older GPU would otherwise
 * fail at the first kernel launch. */
__global__ void probe_kernel() {}

static int kernels_usable(int device)
{
    cudaFuncAttributes attr;
    if (cudaSetDevice(device) != cudaSuccess || cudaFuncGetAttributes(&attr, probe_kernel) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

extern "C" int llmq_cuda_available(void)
{
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: not an error for the caller */
        return 0;
    }
    return n > 0 && kernels_usable(0);
}

extern "C" int llmq_backend_cuda(llmq_backend **out, int device, llmq_dtype dt)
{
    *out = NULL;
    if (!(dt == LLMQ_F32 || dt == LLMQ_F16 || dt == LLMQ_BF16))
        return llmq_fail("CUDA backend: storage type %s not supported (F32, F16, BF16)", llmq_dtype_name(dt));
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return llmq_fail("CUDA backend: no usable device: %s", cudaGetErrorString(err));
    }
    if (device < 0 || device >= n)
        return llmq_fail("CUDA backend: device %d does not exist (%d present)", device, n);
    if (!kernels_usable(device)) {
        cudaDeviceProp prop;
        int ok = cudaGetDeviceProperties(&prop, device) == cudaSuccess;
        cudaGetLastError();
        return llmq_fail("CUDA backend: this build has no kernels for device %d (%s, compute capability %d.%d); "
                         "rebuild with a matching -Dcuda_arch",
                         device, ok ? prop.name : "?", ok ? prop.major : 0, ok ? prop.minor : 0);
    }

    llmq_backend *b = (llmq_backend *)calloc(1, sizeof *b);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return llmq_fail("out of memory");
    }
    if (ctx_init(c, device)) {
        llmq_wrap("CUDA backend on device %d", device);
        ctx_release(c);
        free(b);
        return -1;
    }
    b->name = "cuda";
    b->dt = dt;
    b->impl = c;
    b->alloc = cu_alloc;
    b->free = cu_free;
    b->upload = cu_upload;
    b->upload_bytes = cu_upload_bytes;
    b->download_f32 = cu_download_f32;
    b->sync = cu_sync;
    b->copy = cu_copy;
    b->embed = cu_embed;
    b->rmsnorm = cu_rmsnorm;
    b->linear = cu_linear;
    b->rope = cu_rope;
    b->attention = cu_attention;
    b->silu_mul = cu_silu_mul;
    b->add = cu_add;
    b->nll = cu_nll;
    b->col_absmax = cu_col_absmax;
    b->act_stats = cu_act_stats;
    b->xtx = cu_xtx;
    b->fq_per_token = cu_fq_per_token;
    b->fq_tensor = cu_fq_tensor;
    b->kv_store = cu_kv_store;
    b->attention_kv = cu_attention_kv;
    b->rope_at = cu_rope_at;
    b->graph_begin = cu_graph_begin;
    b->graph_end = cu_graph_end;
    b->graph_launch = cu_graph_launch;
    b->graph_free = cu_graph_free;
    b->destroy = cu_destroy;
    *out = b;
    return 0;
}
