#include "realquant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../quant/w8a8_ref.h"
#include "error.h"
#include "parallel.h"
#include "qlinear.h"
#include "qweight_load.h"

struct rq_state {
    rq_scheme scheme;
    llmq_model *m;
    llmq_backend *b;
    qact act;      /* RQ_W8A8 */
    qdense dense;  /* RQ_PACKED on a GPU: the prefill scratch */
    int kernels, floats;
};

static int packed_linear(rq_state *st, const char *prefix, llmq_linear *L)
{
    const llmq_config *c = model_config(st->m);
    qw_source src = {.model = model_weights(st->m), .where = model_dir(st->m)};
    qw_packed p;
    int rc = qweight_load_packed(&src, c, prefix, L->out, L->in, &p);
    if (rc == 0)
        rc = p.is_nf4 ? qlinear_nf4(L, st->b, &p.nf4, &st->dense) : qlinear_int(L, st->b, &p.q, &st->dense);
    qw_packed_free(&p);
    return rc;
}

/* Rows r0 .. r1 - 1 of a W8A8 weight at load: the checkpoint's float rows
 * as the fake-quant path sees them (rounded to the storage type), then
 * SmoothQuant's per-channel int8. Rows are independent, so the threads'
 * split does not change a byte. */
typedef struct {
    const st_tensor *t;
    llmq_dtype dt;
    int in;
    float *w, *s;
    int8_t *q;
} w8_rows;

static void w8_quantize_rows(void *ctx, int r0, int r1)
{
    const w8_rows *j = ctx;
    const size_t off = (size_t)r0 * j->in, n = (size_t)(r1 - r0) * j->in;
    /* the dtype was checked to be a float type, which llmq_convert takes */
    (void)llmq_convert(j->w + off, LLMQ_F32, (const char *)j->t->data + off * llmq_dtype_size(j->t->dtype),
                       j->t->dtype, n);
    llmq_round_through(j->w + off, n, j->dt);
    w8_quantize_per_channel(j->w + off, r1 - r0, j->in, j->q + off, j->s + r0);
}

/* SmoothQuant's per-channel int8 of a float weight, on all CPUs: on one
 * thread these three passes cost ~0.5 s per 4096 x 11008 weight, and a 7B
 * W8A8 run took ~120 s on the H100 machine (16 CPUs), ~20 s split by rows
 * (docs/BENCHMARKS.md, fourth session). */
static int w8a8_linear(rq_state *st, const char *prefix, llmq_linear *L, qout out)
{
    char name[192];
    snprintf(name, sizeof name, "%s.weight", prefix);
    const st_tensor *t = st_model_find(model_weights(st->m), name);
    if (!t)
        return llmq_fail("'%s' is missing: real W8A8 takes a float (e.g. SmoothQuant-smoothed) model, not a packed "
                         "checkpoint",
                         name);
    size_t n = (size_t)L->out * L->in;
    if (t->numel != (int64_t)n || t->ndim != 2 || !llmq_dtype_is_float(t->dtype))
        return llmq_fail("%s: '%s' is not a float [%d, %d] tensor", t->file, name, L->out, L->in);
    float *w = malloc(n * sizeof *w), *s = malloc((size_t)L->out * sizeof *s);
    int8_t *q = malloc(n);
    int rc = -1;
    if (!w || !s || !q) {
        llmq_fail("out of memory");
        goto done;
    }
    w8_rows job = {t, st->b->dt, L->in, w, s, q};
    const int most = L->out / 64 > 0 ? L->out / 64 : 1; /* >= 64 rows a thread */
    const int nthreads = llmq_cpu_count();
    llmq_parallel_rows(L->out, nthreads < most ? nthreads : most, w8_quantize_rows, &job);
    rc = qlinear_w8a8(L, st->b, q, s, &st->act, out);
done:
    free(w), free(s), free(q);
    return rc;
}

static int on_linear(void *ctx, llmq_backend *b, int layer, llmq_lin which, llmq_linear *L)
{
    (void)b;
    rq_state *st = ctx;
    char prefix[128], name[160];
    model_lin_prefix(layer, which, prefix, sizeof prefix);
    if (st->scheme == RQ_W8A8) {
        /* whose output only a fused producer reads (model.c's layer_chunk) */
        const qout out = which == LIN_GATE ? QOUT_ACT_GATE : which == LIN_UP ? QOUT_ACT_UP
                         : which == LIN_O  ? QOUT_NORM_DELTA
                                           : QOUT_ANY;
        st->kernels++;
        return w8a8_linear(st, prefix, L, out);
    }
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (st_model_find(model_weights(st->m), name)) { /* kept in float by the checkpoint */
        st->floats++;
        return 0;
    }
    st->kernels++;
    return packed_linear(st, prefix, L);
}

static int on_norm(void *ctx, llmq_backend *b, int layer, llmq_input which, void *out, void *x, const void *delta,
                   const void *w, int rows, int dim, float eps)
{
    (void)layer, (void)which;
    return qact_norm(&((rq_state *)ctx)->act, b, out, x, delta, w, rows, dim, eps);
}

static int on_act(void *ctx, llmq_backend *b, int layer, void *out, const void *gate, const void *up, int rows,
                  int cols)
{
    (void)layer;
    return qact_act(&((rq_state *)ctx)->act, b, out, gate, up, rows, cols);
}

int rq_install(llmq_model *m, rq_scheme scheme, int dequant_prefill, rq_state **out)
{
    const llmq_config *c = model_config(m);
    rq_state *st = calloc(1, sizeof *st);
    if (!st)
        return llmq_fail("out of memory");
    st->scheme = scheme, st->m = m, st->b = model_backend(m);
    llmq_hooks h = {.ctx = st, .on_linear = on_linear};
    if (scheme == RQ_PACKED && !c->quant_method[0]) {
        free(st);
        return llmq_fail("%s: not a quantized checkpoint (no quantization_config); real W8A8 of a float model is "
                         "--real --w8a8",
                         model_dir(m));
    }
    if (scheme == RQ_PACKED && dequant_prefill && strcmp(st->b->name, "cpu") != 0) {
        size_t big = (size_t)c->hidden * (c->ffn > c->hidden ? c->ffn : c->hidden);
        big = big > (size_t)c->hidden * c->n_heads * c->head_dim ? big : (size_t)c->hidden * c->n_heads * c->head_dim;
        st->dense.bytes = big * llmq_dtype_size(st->b->dt);
        if (!(st->dense.p = st->b->alloc(st->b, st->dense.bytes))) {
            size_t bytes = st->dense.bytes;
            free(st);
            return llmq_wrap("the dense prefill scratch (%zu bytes)", bytes);
        }
    }
    if (scheme == RQ_W8A8) {
        int cols = c->hidden > c->ffn ? c->hidden : c->ffn;
        cols = cols > c->n_heads * c->head_dim ? cols : c->n_heads * c->head_dim;
        if (qact_alloc(&st->act, st->b, model_max_rows(m), cols)) {
            free(st);
            return -1;
        }
        /* The producers of the q/k/v, gate/up and down inputs quantize as
         * they write; o_proj reads the attention output, which no hook
         * makes, so its linear quantizes it. */
        h.norm = on_norm, h.act = on_act;
    }
    model_set_hooks(m, &h);
    *out = st;
    return 0;
}

void rq_free(rq_state *st)
{
    if (!st)
        return;
    if (st->act.q)
        qact_free(&st->act, st->b);
    if (st->dense.p)
        st->b->free(st->b, st->dense.p);
    free(st);
}

void rq_counts(const rq_state *st, int *kernels, int *floats)
{
    *kernels = st->kernels, *floats = st->floats;
}
