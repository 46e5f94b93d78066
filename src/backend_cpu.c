/* The fp32 CPU reference backend: plain C loops plus OpenBLAS sgemm.
 *
 * This is the definition of every operation in backend.h; the CUDA path is
 * tested against it. It favours clarity over speed, but uses sgemm for the
 * matrix products so that small models evaluate in seconds. */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"

static void *cpu_alloc(llmq_backend *b, size_t nbytes)
{
    (void)b;
    void *p = NULL;
    if (posix_memalign(&p, 64, nbytes ? nbytes : 64) != 0) {
        llmq_fail("out of host memory allocating %zu bytes", nbytes);
        return NULL;
    }
    return p;
}

static void cpu_free(llmq_backend *b, void *p)
{
    (void)b;
    free(p);
}

static int cpu_upload(llmq_backend *b, void *dst, llmq_dtype dst_dt, const void *src, llmq_dtype src_dt,
                      size_t n)
{
    (void)b;
    return llmq_convert(dst, dst_dt, src, src_dt, n);
}

static int cpu_upload_bytes(llmq_backend *b, void *dst, const void *src, size_t nbytes)
{
    (void)b;
    memcpy(dst, src, nbytes);
    return 0;
}

static int cpu_download_f32(llmq_backend *b, float *dst, const void *src, llmq_dtype src_dt, size_t n)
{
    (void)b;
    return llmq_convert(dst, LLMQ_F32, src, src_dt, n);
}

static int cpu_sync(llmq_backend *b)
{
    (void)b;
    return 0;
}

static int cpu_copy(llmq_backend *b, void *dst, const void *src, size_t nbytes)
{
    (void)b;
    memcpy(dst, src, nbytes);
    return 0;
}

static int cpu_embed(llmq_backend *b, void *out, const void *table, const int32_t *ids, int rows, int dim)
{
    (void)b;
    float *o = out;
    const float *t = table;
    for (int r = 0; r < rows; r++)
        memcpy(o + (size_t)r * dim, t + (size_t)ids[r] * dim, (size_t)dim * sizeof(float));
    return 0;
}

static int cpu_rmsnorm(llmq_backend *b, void *out, const void *x, const void *w, int rows, int dim, float eps)
{
    (void)b;
    float *o = out;
    const float *xi = x, *wi = w;
    for (int r = 0; r < rows; r++) {
        const float *xr = xi + (size_t)r * dim;
        float *orow = o + (size_t)r * dim;
        float ss = 0.0f;
        for (int i = 0; i < dim; i++)
            ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int i = 0; i < dim; i++)
            orow[i] = wi[i] * (xr[i] * inv);
    }
    return 0;
}

static int cpu_linear(llmq_backend *b, void *y, const void *x, const void *w, const void *bias, int rows, int in,
                      int out)
{
    (void)b;
    float *yo = y;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, w, in, 0.0f, yo, out);
    if (bias) {
        const float *bi = bias;
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < out; j++)
                yo[(size_t)r * out + j] += bi[j];
    }
    return 0;
}

static int cpu_rope(llmq_backend *b, void *x, const float *cos_sin, int rows, int seq, int n_heads, int head_dim)
{
    (void)b;
    float *xs = x;
    int half = head_dim / 2;
    for (int r = 0; r < rows; r++) {
        const float *cs = cos_sin + (size_t)(r % seq) * head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = xs + ((size_t)r * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float c = cs[i], s = cs[half + i];
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * c - x2 * s;
                v[i + half] = x2 * c + x1 * s;
            }
        }
    }
    return 0;
}

/* One window, one query head: scores = q k^T * scale over the causal
 * prefix, softmax in fp32, out = p v. Uses sgemm on the strided head slices. */
static int cpu_attention(llmq_backend *b, void *out, const void *q, const void *k, const void *v, int batch, int seq,
                         int n_heads, int n_kv, int head_dim)
{
    (void)b;
    const int qdim = n_heads * head_dim, kvdim = n_kv * head_dim, group = n_heads / n_kv;
    const float scale = 1.0f / sqrtf((float)head_dim);
    float *scores = malloc((size_t)seq * seq * sizeof(float));
    if (!scores)
        return llmq_fail("out of memory in attention (seq %d)", seq);
    for (int w = 0; w < batch; w++) {
        const float *qw = (const float *)q + (size_t)w * seq * qdim;
        const float *kw = (const float *)k + (size_t)w * seq * kvdim;
        const float *vw = (const float *)v + (size_t)w * seq * kvdim;
        float *ow = (float *)out + (size_t)w * seq * qdim;
        for (int h = 0; h < n_heads; h++) {
            int kvh = h / group;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, seq, seq, head_dim, scale, qw + h * head_dim, qdim,
                        kw + kvh * head_dim, kvdim, 0.0f, scores, seq);
            for (int t = 0; t < seq; t++) {
                float *row = scores + (size_t)t * seq;
                float mx = -FLT_MAX;
                for (int s = 0; s <= t; s++)
                    mx = row[s] > mx ? row[s] : mx;
                float sum = 0.0f;
                for (int s = 0; s <= t; s++) {
                    row[s] = expf(row[s] - mx);
                    sum += row[s];
                }
                float inv = 1.0f / sum;
                for (int s = 0; s <= t; s++)
                    row[s] *= inv;
                for (int s = t + 1; s < seq; s++)
                    row[s] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, seq, head_dim, seq, 1.0f, scores, seq,
                        vw + kvh * head_dim, kvdim, 0.0f, ow + h * head_dim, qdim);
        }
    }
    free(scores);
    return 0;
}

static int cpu_silu_mul(llmq_backend *b, void *out, const void *gate, const void *up, size_t n)
{
    (void)b;
    float *o = out;
    const float *g = gate, *u = up;
    for (size_t i = 0; i < n; i++)
        o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    return 0;
}

static int cpu_add(llmq_backend *b, void *x, const void *y, size_t n)
{
    (void)b;
    float *xo = x;
    const float *yi = y;
    for (size_t i = 0; i < n; i++)
        xo[i] += yi[i];
    return 0;
}

static int cpu_nll(llmq_backend *b, double *nll, const void *logits, const int32_t *targets, int rows, int vocab)
{
    (void)b;
    double total = 0.0;
    for (int r = 0; r < rows; r++) {
        if (targets[r] < 0)
            continue;
        const float *l = (const float *)logits + (size_t)r * vocab;
        float mx = -FLT_MAX;
        for (int i = 0; i < vocab; i++)
            mx = l[i] > mx ? l[i] : mx;
        double sum = 0.0;
        for (int i = 0; i < vocab; i++)
            sum += exp((double)l[i] - mx);
        total += (double)mx + log(sum) - (double)l[targets[r]];
    }
    *nll = total;
    return 0;
}

static int cpu_col_absmax(llmq_backend *b, float *amax, const void *x, int rows, int cols)
{
    (void)b;
    const float *xs = x;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            float a = fabsf(xs[(size_t)r * cols + j]);
            if (a > amax[j])
                amax[j] = a;
        }
    return 0;
}

static int cpu_act_stats(llmq_backend *b, float *col_amax, float *col_abssum, float *row_amax, const void *x,
                         int rows, int cols)
{
    (void)b;
    const float *xs = x;
    for (int r = 0; r < rows; r++) {
        const float *row = xs + (size_t)r * cols;
        float rmax = 0.0f;
        for (int j = 0; j < cols; j++) {
            float a = fabsf(row[j]);
            rmax = a > rmax ? a : rmax;
            if (col_amax && a > col_amax[j])
                col_amax[j] = a;
            if (col_abssum)
                col_abssum[j] += a;
        }
        if (row_amax)
            row_amax[r] = rmax;
    }
    return 0;
}

static int cpu_xtx(llmq_backend *b, float *h, const void *x, int rows, int cols, float alpha)
{
    (void)b;
    /* Full symmetric update with sgemm (syrk would fill one triangle only).
     * The sum runs over rows (tokens), which OpenBLAS splits across its
     * threads when the output is small: the result would then depend on the
     * thread count, and GPTQ turns such last-bit differences into other
     * codes at rounding ties. One BLAS thread keeps it reproducible. */
    int threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, cols, rows, alpha, x, cols, x, cols, 1.0f, h, cols);
    openblas_set_num_threads(threads);
    return 0;
}

static int cpu_fq_per_token(llmq_backend *b, void *x, int rows, int cols, int qmax)
{
    (void)b;
    float *xs = x;
    for (int r = 0; r < rows; r++) {
        float *row = xs + (size_t)r * cols;
        float mx = 0.0f;
        for (int j = 0; j < cols; j++)
            mx = fabsf(row[j]) > mx ? fabsf(row[j]) : mx;
        float s = (mx < 1e-5f ? 1e-5f : mx) / (float)qmax;
        for (int j = 0; j < cols; j++)
            row[j] = rintf(row[j] / s) * s;
    }
    return 0;
}

static int cpu_fq_tensor(llmq_backend *b, void *x, size_t n, float scale, int qmax)
{
    (void)b;
    float *xs = x;
    for (size_t i = 0; i < n; i++) {
        float q = rintf(xs[i] / scale);
        q = q < (float)(-qmax - 1) ? (float)(-qmax - 1) : q > (float)qmax ? (float)qmax : q;
        xs[i] = q * scale;
    }
    return 0;
}

/* The int8 KV grid of backend.h: one scale per (position, kv head). */
static void kv_quant_row(const float *x, int n_kv, int hd, int8_t *q, float *scale)
{
    for (int h = 0; h < n_kv; h++) {
        const float *v = x + (size_t)h * hd;
        float mx = 0.0f;
        for (int d = 0; d < hd; d++)
            mx = fabsf(v[d]) > mx ? fabsf(v[d]) : mx;
        float s = (mx < 1e-5f ? 1e-5f : mx) / 127.0f;
        for (int d = 0; d < hd; d++) {
            float c = rintf(v[d] / s);
            q[(size_t)h * hd + d] = (int8_t)(c > 127.0f ? 127.0f : c < -127.0f ? -127.0f : c);
        }
        scale[h] = s;
    }
}

static int cpu_kv_store(llmq_backend *b, void *cache, float *scales, const void *x, int batch, int n, int pos, int cap,
                        int n_kv, int head_dim, int kv8, const int32_t *pos_dev)
{
    (void)b;
    if (pos_dev)
        pos = *pos_dev;
    if (pos < 0 || n < 1 || pos + n > cap)
        return llmq_fail("kv_store: positions %d..%d outside a cache of %d", pos, pos + n - 1, cap);
    size_t kvdim = (size_t)n_kv * head_dim;
    for (int s = 0; s < batch; s++)
        for (int i = 0; i < n; i++) {
            const float *row = (const float *)x + ((size_t)s * n + i) * kvdim;
            size_t slot = (size_t)s * cap + pos + i;
            if (kv8)
                kv_quant_row(row, n_kv, head_dim, (int8_t *)cache + slot * kvdim, scales + slot * n_kv);
            else
                memcpy((float *)cache + slot * kvdim, row, kvdim * sizeof(float));
        }
    return 0;
}

/* One cache entry as fp32: element d of kv head h at slot. */
static inline float kv_at(const void *c, const float *sc, int kv8, size_t slot, int n_kv, int hd, int h, int d)
{
    size_t i = slot * n_kv * hd + (size_t)h * hd + d;
    return kv8 ? (float)((const int8_t *)c)[i] * sc[slot * n_kv + h] : ((const float *)c)[i];
}

static int cpu_attention_kv(llmq_backend *b, void *out, const void *q, const void *kc, const float *ks, const void *vc,
                            const float *vs, int batch, int n, int pos, int cap, int n_heads, int n_kv, int head_dim,
                            int kv8, const int32_t *pos_dev)
{
    (void)b;
    if (pos_dev)
        pos = *pos_dev;
    if (pos < 0 || pos + n > cap)
        return llmq_fail("attention_kv: positions %d..%d outside a cache of %d", pos, pos + n - 1, cap);
    const int qdim = n_heads * head_dim, group = n_heads / n_kv;
    const float scale = 1.0f / sqrtf((float)head_dim);
    float *p = malloc((size_t)(pos + n) * sizeof(float));
    if (!p)
        return llmq_fail("out of memory in attention_kv (%d positions)", pos + n);
    for (int s = 0; s < batch; s++)
        for (int i = 0; i < n; i++) {
            int len = pos + i + 1;
            for (int h = 0; h < n_heads; h++) {
                const float *qv = (const float *)q + ((size_t)s * n + i) * qdim + (size_t)h * head_dim;
                float *o = (float *)out + ((size_t)s * n + i) * qdim + (size_t)h * head_dim;
                int kh = h / group;
                float mx = -FLT_MAX, sum = 0.0f;
                for (int t = 0; t < len; t++) {
                    float dot = 0.0f;
                    for (int d = 0; d < head_dim; d++)
                        dot += qv[d] * kv_at(kc, ks, kv8, (size_t)s * cap + t, n_kv, head_dim, kh, d);
                    p[t] = dot * scale;
                    mx = p[t] > mx ? p[t] : mx;
                }
                for (int t = 0; t < len; t++)
                    sum += (p[t] = expf(p[t] - mx));
                for (int d = 0; d < head_dim; d++) {
                    float acc = 0.0f;
                    for (int t = 0; t < len; t++)
                        acc += p[t] * kv_at(vc, vs, kv8, (size_t)s * cap + t, n_kv, head_dim, kh, d);
                    o[d] = acc / sum;
                }
            }
        }
    free(p);
    return 0;
}

static int cpu_rope_at(llmq_backend *b, void *x, const float *cos_sin, const int32_t *pos_dev, int rows, int seq,
                       int n_heads, int head_dim)
{
    return cpu_rope(b, x, cos_sin + (size_t)*pos_dev * head_dim, rows, seq, n_heads, head_dim);
}

static void cpu_destroy(llmq_backend *b) { free(b); }

int llmq_backend_cpu(llmq_backend **out)
{
    llmq_backend *b = calloc(1, sizeof *b);
    if (!b)
        return llmq_fail("out of memory");
    b->name = "cpu";
    b->dt = LLMQ_F32;
    b->alloc = cpu_alloc;
    b->free = cpu_free;
    b->upload = cpu_upload;
    b->upload_bytes = cpu_upload_bytes;
    b->download_f32 = cpu_download_f32;
    b->sync = cpu_sync;
    b->copy = cpu_copy;
    b->embed = cpu_embed;
    b->rmsnorm = cpu_rmsnorm;
    b->linear = cpu_linear;
    b->rope = cpu_rope;
    b->attention = cpu_attention;
    b->silu_mul = cpu_silu_mul;
    b->add = cpu_add;
    b->nll = cpu_nll;
    b->col_absmax = cpu_col_absmax;
    b->act_stats = cpu_act_stats;
    b->xtx = cpu_xtx;
    b->fq_per_token = cpu_fq_per_token;
    b->fq_tensor = cpu_fq_tensor;
    b->kv_store = cpu_kv_store;
    b->attention_kv = cpu_attention_kv;
    b->rope_at = cpu_rope_at;
    b->destroy = cpu_destroy;
    *out = b;
    return 0;
}
