#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "qweight_load.h"
#include "rope.h"

struct llmq_model {
    llmq_config cfg;
    st_model *st;
    llmq_backend *b;
    char *dir;
    llmq_hooks hooks;
    int keep_weights;
    int group_linears; /* run_group may use forward_group (model_group_linears) */
    int max_rows, chunk_rows;

    llmq_layer *layers;
    void *embed;      /* [vocab, hidden] */
    void *final_norm; /* [hidden] */
    void *lm_head;    /* [vocab, hidden]; == embed when tied */

    float *rope; /* backend F32 table [rope_seq][head_dim] */
    int rope_seq;

    /* scratch, sized for chunk_rows */
    void *xn, *q, *k, *v, *att, *o, *gate, *up;
    int32_t *ids_dev;
    void *logits; /* [head_rows, vocab] */
    int head_rows;

    llmq_kv_mode kv_mode;
    /* KV_INT8 evaluation: the int8 keys and values of one chunk (chunk_rows). */
    void *kv8_k, *kv8_v;
    float *kv8_ks, *kv8_vs;
    /* Decoding caches (model_cache_open): per layer, [batch, cap, kvdim]. */
    void **ck, **cv;
    float **cks, **cvs;
    int cache_batch, cache_cap;
    void *step_x; /* hidden state of one step, [max_rows, hidden] */
    /* Decode steps as a CUDA graph: the layers of an n = 1 step recorded
     * once (at the second such step, after one eager run) and replayed;
     * the position comes from pos_dev, written before each replay. */
    int use_graphs, graph_warm;
    void *graph;
    int32_t *pos_dev;
};

/* Where one chunk's keys and values go: kc == NULL means nowhere (attention
 * over the chunk's own windows); else caches of cap positions per sequence,
 * the chunk's rows landing at positions pos.. */
typedef struct {
    void *kc, *vc;
    float *ks, *vs;
    int cap, pos;
    const int32_t *pos_dev; /* when set, pos as the kernels read it (graph replays) */
} kv_slot;

const llmq_config *model_config(const llmq_model *m) { return &m->cfg; }
llmq_backend *model_backend(const llmq_model *m) { return m->b; }
const st_model *model_weights(const llmq_model *m) { return m->st; }
const char *model_dir(const llmq_model *m) { return m->dir; }
int model_max_rows(const llmq_model *m) { return m->max_rows; }
void model_set_hooks(llmq_model *m, const llmq_hooks *hooks) { m->hooks = *hooks; }
void model_keep_weights(llmq_model *m, int keep) { m->keep_weights = keep; }
void model_group_linears(llmq_model *m, int on) { m->group_linears = on; }
llmq_layer *model_layer(llmq_model *m, int layer) { return &m->layers[layer]; }

void model_lin_prefix(int layer, llmq_lin which, char *buf, size_t n)
{
    snprintf(buf, n, "model.layers.%d.%s", layer, config_lin_name(which));
}

/* Load a float tensor of the expected shape into a new backend buffer. */
static void *load_tensor(llmq_model *m, const char *name, int64_t d0, int64_t d1)
{
    const st_tensor *t = st_model_find(m->st, name);
    if (!t) {
        llmq_fail("%s: tensor '%s' is missing", m->dir, name);
        return NULL;
    }
    int64_t want = d1 ? d0 * d1 : d0;
    int shape_ok = t->numel == want && (d1 ? t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1 : t->ndim == 1);
    if (!shape_ok) {
        llmq_fail("%s: tensor '%s' has shape [%lld%s%lld], expected [%lld%s%lld]", t->file, name,
                  (long long)t->shape[0], t->ndim > 1 ? ", " : "", t->ndim > 1 ? (long long)t->shape[1] : 0LL,
                  (long long)d0, d1 ? ", " : "", (long long)d1);
        return NULL;
    }
    if (!llmq_dtype_is_float(t->dtype)) {
        llmq_fail("%s: tensor '%s' has dtype %s, expected a float type", t->file, name, llmq_dtype_name(t->dtype));
        return NULL;
    }
    void *buf = m->b->alloc(m->b, (size_t)want * llmq_dtype_size(m->b->dt));
    if (!buf)
        return NULL;
    if (m->b->upload(m->b, buf, m->b->dt, t->data, t->dtype, (size_t)want)) {
        m->b->free(m->b, buf);
        llmq_wrap("%s: tensor '%s'", t->file, name);
        return NULL;
    }
    return buf;
}

/* A linear's weight: "<prefix>.weight" in float, or a packed quantized
 * checkpoint (GPTQ / llmq layout) dequantized into the float path. */
static int load_linear(llmq_model *m, int layer, llmq_lin which, llmq_linear *L)
{
    char prefix[128], name[160];
    model_lin_prefix(layer, which, prefix, sizeof prefix);
    config_lin_shape(&m->cfg, which, &L->in, &L->out);
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (m->hooks.on_linear && m->hooks.on_linear(m->hooks.ctx, m->b, layer, which, L))
        return llmq_wrap("%s", prefix);
    if (L->forward) {
        /* taken over by the hook: no float weight */
    } else if (st_model_find(m->st, name)) {
        L->w = load_tensor(m, name, L->out, L->in);
    } else {
        float *w = malloc((size_t)L->out * L->in * sizeof(float));
        if (!w)
            return llmq_fail("out of memory loading %s", prefix);
        if (qweight_load_dequant(m->st, &m->cfg, m->dir, prefix, L->out, L->in, w)) {
            free(w);
            return -1;
        }
        L->w = m->b->alloc(m->b, (size_t)L->out * L->in * llmq_dtype_size(m->b->dt));
        if (L->w && m->b->upload(m->b, L->w, m->b->dt, w, LLMQ_F32, (size_t)L->out * L->in)) {
            m->b->free(m->b, L->w);
            L->w = NULL;
        }
        free(w);
    }
    if (!L->w && !L->forward)
        return -1;
    if (!L->forward)
        L->wbytes = (size_t)L->out * L->in * llmq_dtype_size(m->b->dt);
    int has_bias = which == LIN_O ? m->cfg.o_bias : (which <= LIN_V && m->cfg.attn_bias);
    if (has_bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        if (!(L->bias = load_tensor(m, name, L->out, 0)))
            return -1;
    }
    return 0;
}

void model_unload_layer(llmq_model *m, int layer)
{
    llmq_layer *L = &m->layers[layer];
    llmq_backend *b = m->b;
    for (int i = 0; i < LIN_COUNT; i++) {
        llmq_linear *lin = &L->lin[i];
        if (lin->free_ctx)
            lin->free_ctx(lin, b);
        if (lin->w)
            b->free(b, lin->w);
        if (lin->bias)
            b->free(b, lin->bias);
        memset(lin, 0, sizeof *lin);
    }
    if (L->attn_norm)
        b->free(b, L->attn_norm);
    if (L->ffn_norm)
        b->free(b, L->ffn_norm);
    memset(L, 0, sizeof *L);
}

int model_load_layer(llmq_model *m, int layer)
{
    llmq_layer *L = &m->layers[layer];
    if (L->loaded)
        return 0;
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", layer);
    if (!(L->attn_norm = load_tensor(m, name, m->cfg.hidden, 0)))
        goto fail;
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", layer);
    if (!(L->ffn_norm = load_tensor(m, name, m->cfg.hidden, 0)))
        goto fail;
    for (int i = 0; i < LIN_COUNT; i++)
        if (load_linear(m, layer, (llmq_lin)i, &L->lin[i]))
            goto fail;
    L->loaded = 1;
    if (m->hooks.on_layer && m->hooks.on_layer(m->hooks.ctx, m->b, layer, L)) {
        llmq_wrap("layer %d", layer);
        goto fail;
    }
    return 0;
fail:
    model_unload_layer(m, layer);
    return -1;
}

int model_load_all(llmq_model *m)
{
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (model_load_layer(m, l))
            return -1;
    return m->b->sync(m->b);
}

static int alloc_scratch(llmq_model *m)
{
    llmq_backend *b = m->b;
    const llmq_config *c = &m->cfg;
    size_t es = llmq_dtype_size(b->dt), r = (size_t)m->chunk_rows;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv * c->head_dim;
    m->head_rows = m->chunk_rows < 2048 ? m->chunk_rows : 2048;
    if (!(m->xn = b->alloc(b, r * c->hidden * es)) || !(m->q = b->alloc(b, r * qd * es)) ||
        !(m->k = b->alloc(b, r * kvd * es)) || !(m->v = b->alloc(b, r * kvd * es)) ||
        !(m->att = b->alloc(b, r * qd * es)) || !(m->o = b->alloc(b, r * c->hidden * es)) ||
        !(m->gate = b->alloc(b, r * c->ffn * es)) || !(m->up = b->alloc(b, r * c->ffn * es)) ||
        !(m->ids_dev = b->alloc(b, (size_t)m->max_rows * sizeof(int32_t))) ||
        !(m->logits = b->alloc(b, (size_t)m->head_rows * c->vocab * es)))
        return llmq_wrap("allocating activations for %d rows", m->chunk_rows);
    return 0;
}

/* The int8 keys/values of one chunk for KV_INT8 evaluation, on first use. */
static int alloc_kv8_scratch(llmq_model *m)
{
    if (m->kv8_k)
        return 0;
    llmq_backend *b = m->b;
    size_t r = (size_t)m->chunk_rows, kvd = (size_t)m->cfg.n_kv * m->cfg.head_dim, nh = (size_t)m->cfg.n_kv;
    if (!(m->kv8_k = b->alloc(b, r * kvd)) || !(m->kv8_v = b->alloc(b, r * kvd)) ||
        !(m->kv8_ks = b->alloc(b, r * nh * sizeof(float))) || !(m->kv8_vs = b->alloc(b, r * nh * sizeof(float))))
        return llmq_wrap("allocating the int8 keys and values of %d rows", m->chunk_rows);
    return 0;
}

static void free_scratch(llmq_model *m)
{
    void **bufs[] = {&m->xn,     &m->q,     &m->k,      &m->v,      &m->att,
                     &m->o,      &m->gate,  &m->up,     (void **)&m->ids_dev, &m->logits,
                     &m->kv8_k,  &m->kv8_v, (void **)&m->kv8_ks, (void **)&m->kv8_vs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i])
            m->b->free(m->b, *bufs[i]);
        *bufs[i] = NULL;
    }
}

void model_set_chunk_rows(llmq_model *m, int rows)
{
    if (rows <= 0 || rows == m->chunk_rows)
        return;
    free_scratch(m);
    m->chunk_rows = rows;
    /* Errors surface at the next forward through the NULL checks. */
    alloc_scratch(m);
}

int model_open(llmq_model **out, const char *dir, llmq_backend *b, int max_rows)
{
    llmq_model *m = calloc(1, sizeof *m);
    if (!m)
        return llmq_fail("out of memory");
    m->b = b;
    m->dir = strdup(dir);
    m->max_rows = max_rows;
    m->chunk_rows = max_rows;
    m->group_linears = 1;
    if (config_load(&m->cfg, dir) || st_model_open(&m->st, dir))
        goto fail;
    const llmq_config *c = &m->cfg;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        llmq_fail("out of memory");
        goto fail;
    }
    if (!(m->embed = load_tensor(m, "model.embed_tokens.weight", c->vocab, c->hidden)) ||
        !(m->final_norm = load_tensor(m, "model.norm.weight", c->hidden, 0)))
        goto fail;
    if (c->tied) {
        m->lm_head = m->embed;
    } else if (!(m->lm_head = load_tensor(m, "lm_head.weight", c->vocab, c->hidden))) {
        goto fail;
    }
    if (alloc_scratch(m))
        goto fail;
    *out = m;
    return 0;
fail:
    model_close(m);
    return -1;
}

void model_close(llmq_model *m)
{
    if (!m)
        return;
    model_cache_close(m);
    if (m->layers)
        for (int i = 0; i < m->cfg.n_layers; i++)
            model_unload_layer(m, i);
    free(m->layers);
    free_scratch(m);
    if (m->lm_head && m->lm_head != m->embed)
        m->b->free(m->b, m->lm_head);
    if (m->embed)
        m->b->free(m->b, m->embed);
    if (m->final_norm)
        m->b->free(m->b, m->final_norm);
    if (m->rope)
        m->b->free(m->b, m->rope);
    st_model_close(m->st);
    free(m->dir);
    free(m);
}

void *model_alloc_hidden(llmq_model *m, int rows)
{
    return m->b->alloc(m->b, (size_t)rows * m->cfg.hidden * llmq_dtype_size(m->b->dt));
}

/* The table is indexed by position, so one built for the longest window
 * serves every shorter one (calibration samples have ragged lengths). */
static int ensure_rope(llmq_model *m, int seq)
{
    if (m->rope && m->rope_seq >= seq)
        return 0;
    if (m->rope)
        m->b->free(m->b, m->rope);
    size_t n = (size_t)seq * m->cfg.head_dim;
    float *host = malloc(n * sizeof(float));
    m->rope = m->b->alloc(m->b, n * sizeof(float));
    if (!host || !m->rope) {
        free(host);
        return llmq_fail("out of memory for the rope table");
    }
    rope_table(&m->cfg, seq, host);
    int rc = m->b->upload(m->b, m->rope, LLMQ_F32, host, LLMQ_F32, n);
    free(host);
    m->rope_seq = seq;
    return rc;
}

int model_embed(llmq_model *m, void *x, const int32_t *ids, int rows)
{
    for (int i = 0; i < rows; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab)
            return llmq_fail("token id %d at position %d is outside the vocabulary (%d)", ids[i], i, m->cfg.vocab);
    for (int done = 0; done < rows; done += m->max_rows) {
        int n = rows - done < m->max_rows ? rows - done : m->max_rows;
        size_t off = (size_t)done * m->cfg.hidden * llmq_dtype_size(m->b->dt);
        if (m->b->upload_bytes(m->b, m->ids_dev, ids + done, (size_t)n * sizeof(int32_t)) ||
            m->b->embed(m->b, (char *)x + off, m->embed, m->ids_dev, n, m->cfg.hidden))
            return -1;
    }
    return 0;
}

static int run_linear(llmq_model *m, llmq_linear *L, void *y, const void *x, int rows)
{
    if (L->forward)
        return L->forward(L, m->b, y, x, rows);
    return m->b->linear(m->b, y, x, L->w, L->bias, rows, L->in, L->out);
}

/* The n linears first[0..n) that read x: in one call when they share a
 * forward_group that takes them (decode batches: one launch instead of n),
 * else one by one. */
static int run_group(llmq_model *m, llmq_linear *first, int n, void *const *y, const void *x, int rows)
{
    int same = first->forward_group != NULL;
    for (int i = 1; i < n; i++)
        same &= first[i].forward_group == first->forward_group;
    if (same && m->group_linears) {
        int rc = first->forward_group(first, n, m->b, y, x, rows);
        if (rc <= 0)
            return rc;
    }
    for (int i = 0; i < n; i++)
        if (run_linear(m, &first[i], y[i], x, rows))
            return -1;
    return 0;
}

static int hook_input(llmq_model *m, int layer, llmq_input which, void *x, int rows, int cols)
{
    if (!m->hooks.on_input)
        return 0;
    return m->hooks.on_input(m->hooks.ctx, m->b, layer, which, x, rows, cols);
}

/* The producer of a group's input: the hook's fused version, or the
 * residual add and LlamaRMSNorm. */
static int norm_input(llmq_model *m, int layer, llmq_input which, void *x, const void *delta, const void *w,
                      int rows)
{
    llmq_backend *b = m->b;
    const llmq_config *c = &m->cfg;
    if (m->hooks.norm)
        return m->hooks.norm(m->hooks.ctx, b, layer, which, m->xn, x, delta, w, rows, c->hidden, c->eps);
    if (delta && b->add(b, x, delta, (size_t)rows * c->hidden))
        return -1;
    return b->rmsnorm(b, m->xn, x, w, rows, c->hidden, c->eps);
}

/* Keys (after RoPE) and values of the chunk into the attention output. */
static int attend(llmq_model *m, int nseq, int n, const kv_slot *kv)
{
    llmq_backend *b = m->b;
    const llmq_config *c = &m->cfg;
    int rows = nseq * n, kv8 = m->kv_mode == KV_INT8;
    if (m->kv_mode == KV_INT8_FAKE && (b->fq_per_token(b, m->k, rows * c->n_kv, c->head_dim, 127) ||
                                       b->fq_per_token(b, m->v, rows * c->n_kv, c->head_dim, 127)))
        return -1;
    if (!kv->kc)
        return b->attention(b, m->att, m->q, m->k, m->v, nseq, n, c->n_heads, c->n_kv, c->head_dim);
    if (b->kv_store(b, kv->kc, kv->ks, m->k, nseq, n, kv->pos, kv->cap, c->n_kv, c->head_dim, kv8, kv->pos_dev) ||
        b->kv_store(b, kv->vc, kv->vs, m->v, nseq, n, kv->pos, kv->cap, c->n_kv, c->head_dim, kv8, kv->pos_dev))
        return -1;
    /* A float prompt at position 0 attends only to itself: the tensor-core
     * kernel over the fresh keys and values is the same function. */
    if (!kv8 && kv->pos == 0 && !kv->pos_dev)
        return b->attention(b, m->att, m->q, m->k, m->v, nseq, n, c->n_heads, c->n_kv, c->head_dim);
    return b->attention_kv(b, m->att, m->q, kv->kc, kv->ks, kv->vc, kv->vs, nseq, n, kv->pos, kv->cap, c->n_heads,
                           c->n_kv, c->head_dim, kv8, kv->pos_dev);
}

static int rope_rows(llmq_model *m, void *x, const float *rope, const kv_slot *kv, int rows, int n, int heads)
{
    llmq_backend *b = m->b;
    if (kv->pos_dev)
        return b->rope_at(b, x, m->rope, kv->pos_dev, rows, n, heads, m->cfg.head_dim);
    return b->rope(b, x, rope, rows, n, heads, m->cfg.head_dim);
}

/* nseq sequences of n rows each (rows at positions kv->pos..) through one
 * decoder layer (HF LlamaDecoderLayer). */
static int layer_chunk(llmq_model *m, llmq_layer *L, int layer, void *x, int nseq, int n, const kv_slot *kv)
{
    llmq_backend *b = m->b;
    const llmq_config *c = &m->cfg;
    int rows = nseq * n;
    const float *rope = m->rope + (size_t)kv->pos * c->head_dim; /* row r at position pos + r % n */
    void *const qkv[3] = {m->q, m->k, m->v}, *const gate_up[2] = {m->gate, m->up};
    if (norm_input(m, layer, IN_QKV, x, NULL, L->attn_norm, rows) ||
        hook_input(m, layer, IN_QKV, m->xn, rows, c->hidden) || run_group(m, &L->lin[LIN_Q], 3, qkv, m->xn, rows) ||
        rope_rows(m, m->q, rope, kv, rows, n, c->n_heads) || rope_rows(m, m->k, rope, kv, rows, n, c->n_kv) ||
        attend(m, nseq, n, kv) ||
        hook_input(m, layer, IN_O, m->att, rows, c->n_heads * c->head_dim) ||
        run_linear(m, &L->lin[LIN_O], m->o, m->att, rows))
        return -1;
    if (norm_input(m, layer, IN_GATEUP, x, m->o, L->ffn_norm, rows) ||
        hook_input(m, layer, IN_GATEUP, m->xn, rows, c->hidden) ||
        run_group(m, &L->lin[LIN_GATE], 2, gate_up, m->xn, rows))
        return -1;
    int act = m->hooks.act ? m->hooks.act(m->hooks.ctx, b, layer, m->gate, m->gate, m->up, rows, c->ffn)
                           : b->silu_mul(b, m->gate, m->gate, m->up, (size_t)rows * c->ffn);
    if (act || hook_input(m, layer, IN_DOWN, m->gate, rows, c->ffn) ||
        run_linear(m, &L->lin[LIN_DOWN], m->o, m->gate, rows) || b->add(b, x, m->o, (size_t)rows * c->hidden))
        return -1;
    return 0;
}

int model_layer_forward(llmq_model *m, int layer, void *x, int nwin, int seq)
{
    if (seq > m->chunk_rows)
        return llmq_fail("a window of %d tokens exceeds the %d rows the runner was sized for", seq, m->chunk_rows);
    if (m->cfg.sliding_window && seq > m->cfg.sliding_window)
        return llmq_fail("windows of %d tokens exceed the model's sliding window (%d)", seq, m->cfg.sliding_window);
    if (ensure_rope(m, seq) || model_load_layer(m, layer))
        return -1;
    if (m->kv_mode == KV_INT8 && alloc_kv8_scratch(m))
        return -1;
    llmq_layer *L = &m->layers[layer];
    int per_chunk = m->chunk_rows / seq;
    size_t win_bytes = (size_t)seq * m->cfg.hidden * llmq_dtype_size(m->b->dt);
    /* KV_INT8: each window's keys and values pass through an int8 "cache"
     * of its own seq positions. */
    kv_slot kv = {0};
    if (m->kv_mode == KV_INT8)
        kv = (kv_slot){m->kv8_k, m->kv8_v, m->kv8_ks, m->kv8_vs, seq, 0, NULL};
    int rc = 0;
    for (int w = 0; w < nwin && rc == 0; w += per_chunk) {
        int n = nwin - w < per_chunk ? nwin - w : per_chunk;
        rc = layer_chunk(m, L, layer, (char *)x + (size_t)w * win_bytes, n, seq, &kv);
    }
    if (!m->keep_weights)
        model_unload_layer(m, layer);
    return rc;
}

int model_head(llmq_model *m, const void *x, const int32_t *targets, int rows, double *nll, float *logits)
{
    llmq_backend *b = m->b;
    const llmq_config *c = &m->cfg;
    size_t es = llmq_dtype_size(b->dt);
    for (int r0 = 0; r0 < rows; r0 += m->head_rows) {
        int n = rows - r0 < m->head_rows ? rows - r0 : m->head_rows;
        const char *xr = (const char *)x + (size_t)r0 * c->hidden * es;
        double part = 0.0;
        if (b->rmsnorm(b, m->xn, xr, m->final_norm, n, c->hidden, c->eps) ||
            b->linear(b, m->logits, m->xn, m->lm_head, NULL, n, c->hidden, c->vocab) ||
            b->upload_bytes(b, m->ids_dev, targets + r0, (size_t)n * sizeof(int32_t)) ||
            b->nll(b, &part, m->logits, m->ids_dev, n, c->vocab))
            return -1;
        *nll += part;
        if (logits && b->download_f32(b, logits + (size_t)r0 * c->vocab, m->logits, b->dt, (size_t)n * c->vocab))
            return -1;
    }
    return 0;
}

int model_forward(llmq_model *m, const int32_t *ids, int nwin, int seq, double *nll, float *logits)
{
    int rows = nwin * seq;
    if (rows > m->max_rows)
        return llmq_fail("batch of %d rows exceeds the %d the runner was sized for", rows, m->max_rows);
    int32_t *targets = malloc((size_t)rows * sizeof(int32_t));
    void *x = model_alloc_hidden(m, rows);
    int rc = -1;
    if (!targets || !x) {
        llmq_fail("out of memory for %d rows", rows);
        goto done;
    }
    for (int w = 0; w < nwin; w++)
        for (int t = 0; t < seq; t++)
            targets[(size_t)w * seq + t] = t + 1 < seq ? ids[(size_t)w * seq + t + 1] : -1;
    if (model_embed(m, x, ids, rows))
        goto done;
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (model_layer_forward(m, l, x, nwin, seq))
            goto done;
    rc = model_head(m, x, targets, rows, nll, logits);
done:
    if (x)
        m->b->free(m->b, x);
    free(targets);
    return rc;
}

void model_set_kv_mode(llmq_model *m, llmq_kv_mode mode) { m->kv_mode = mode; }

size_t model_weight_bytes(const llmq_model *m)
{
    const llmq_config *c = &m->cfg;
    size_t es = llmq_dtype_size(m->b->dt), n = (size_t)c->vocab * c->hidden * es + c->hidden * es;
    for (int l = 0; l < c->n_layers; l++) {
        const llmq_layer *L = &m->layers[l];
        if (!L->loaded)
            continue;
        n += 2 * (size_t)c->hidden * es;
        for (int i = 0; i < LIN_COUNT; i++)
            n += L->lin[i].wbytes + (L->lin[i].bias ? (size_t)L->lin[i].out * es : 0);
    }
    return n;
}

void model_set_graphs(llmq_model *m, int on) { m->use_graphs = on; }

void model_cache_close(llmq_model *m)
{
    if (m->graph)
        m->b->graph_free(m->b, m->graph);
    m->graph = NULL;
    m->graph_warm = 0;
    if (m->pos_dev)
        m->b->free(m->b, m->pos_dev);
    m->pos_dev = NULL;
    void ***lists[] = {&m->ck, &m->cv, (void ***)&m->cks, (void ***)&m->cvs};
    for (size_t i = 0; i < 4; i++) {
        void **l = *lists[i];
        if (!l)
            continue;
        for (int j = 0; j < m->cfg.n_layers; j++)
            if (l[j])
                m->b->free(m->b, l[j]);
        free(l);
        *lists[i] = NULL;
    }
    if (m->step_x)
        m->b->free(m->b, m->step_x);
    m->step_x = NULL;
    m->cache_batch = m->cache_cap = 0;
}

/* Bytes of one layer's key (or value) cache, and of its scales. */
static size_t cache_bytes(const llmq_model *m, size_t *scale_bytes)
{
    size_t slots = (size_t)m->cache_batch * m->cache_cap;
    int kv8 = m->kv_mode == KV_INT8;
    *scale_bytes = kv8 ? slots * m->cfg.n_kv * sizeof(float) : 0;
    return slots * m->cfg.n_kv * m->cfg.head_dim * (kv8 ? 1 : llmq_dtype_size(m->b->dt));
}

size_t model_cache_bytes(const llmq_model *m)
{
    size_t sb, cb = cache_bytes(m, &sb);
    return 2 * (cb + sb) * (size_t)m->cfg.n_layers;
}

int model_cache_open(llmq_model *m, int batch, int cap)
{
    model_cache_close(m);
    if (batch < 1 || cap < 1)
        return llmq_fail("a KV cache needs batch >= 1 and capacity >= 1 (got %d, %d)", batch, cap);
    if (m->cfg.sliding_window && cap > m->cfg.sliding_window)
        return llmq_fail("a cache of %d positions exceeds the model's sliding window (%d)", cap,
                         m->cfg.sliding_window);
    int L = m->cfg.n_layers;
    m->cache_batch = batch, m->cache_cap = cap;
    m->keep_weights = 1;
    size_t sb, cb = cache_bytes(m, &sb);
    if (!(m->ck = calloc(L, sizeof *m->ck)) || !(m->cv = calloc(L, sizeof *m->cv)) ||
        !(m->cks = calloc(L, sizeof *m->cks)) || !(m->cvs = calloc(L, sizeof *m->cvs)))
        goto oom;
    for (int l = 0; l < L; l++) {
        if (!(m->ck[l] = m->b->alloc(m->b, cb)) || !(m->cv[l] = m->b->alloc(m->b, cb)))
            goto oom;
        if (sb && (!(m->cks[l] = m->b->alloc(m->b, sb)) || !(m->cvs[l] = m->b->alloc(m->b, sb))))
            goto oom;
    }
    if (!(m->step_x = model_alloc_hidden(m, m->max_rows)) || !(m->pos_dev = m->b->alloc(m->b, sizeof(int32_t))))
        goto oom;
    /* The rope table now, at full length: a recorded step must not see it move. */
    if (ensure_rope(m, cap)) {
        model_cache_close(m);
        return -1;
    }
    return 0;
oom:
    model_cache_close(m);
    return llmq_wrap("allocating a KV cache of %d x %d positions (%zu bytes per layer)", batch, cap, 2 * (cb + sb));
}

/* The layers of one step over the cache (model_step). */
static int step_layers(llmq_model *m, int n, int pos, const int32_t *pos_dev)
{
    const llmq_config *c = &m->cfg;
    int batch = m->cache_batch;
    size_t es = llmq_dtype_size(m->b->dt), sb, seq_cache = cache_bytes(m, &sb) / batch; /* bytes per sequence */
    size_t seq_scales = (size_t)m->cache_cap * c->n_kv;                                     /* scales per sequence */
    int per_chunk = m->chunk_rows / n;
    for (int l = 0; l < c->n_layers; l++) {
        if (model_load_layer(m, l))
            return -1;
        for (int s0 = 0; s0 < batch; s0 += per_chunk) {
            int cnt = batch - s0 < per_chunk ? batch - s0 : per_chunk;
            kv_slot kv = {(char *)m->ck[l] + s0 * seq_cache,
                          (char *)m->cv[l] + s0 * seq_cache,
                          m->cks[l] ? m->cks[l] + s0 * seq_scales : NULL,
                          m->cvs[l] ? m->cvs[l] + s0 * seq_scales : NULL,
                          m->cache_cap,
                          pos,
                          pos_dev};
            if (layer_chunk(m, &m->layers[l], l, (char *)m->step_x + (size_t)s0 * n * c->hidden * es, cnt, n, &kv))
                return llmq_wrap("layer %d", l);
        }
    }
    return 0;
}

int model_step(llmq_model *m, const int32_t *ids, int n, int pos, const int32_t *targets, double *nll,
               float *logits)
{
    int batch = m->cache_batch, rows = batch * n;
    if (!m->ck)
        return llmq_fail("model_step: no KV cache (model_cache_open)");
    if (n < 1 || pos < 0 || pos + n > m->cache_cap)
        return llmq_fail("positions %d..%d do not fit a cache of %d", pos, pos + n - 1, m->cache_cap);
    if (rows > m->max_rows || n > m->chunk_rows)
        return llmq_fail("a step of %d x %d tokens exceeds the %d rows the runner was sized for", batch, n,
                         m->max_rows);
    llmq_backend *b = m->b;
    /* Single-token steps past the prompt read their position from pos_dev
     * and, where the backend records graphs, replay one recorded step. */
    int devpos = n == 1 && pos > 0 && m->use_graphs, graphed = devpos && b->graph_begin;
    int32_t pos32 = pos;
    if (ensure_rope(m, pos + n) || model_embed(m, m->step_x, ids, rows) ||
        (devpos && b->upload_bytes(b, m->pos_dev, &pos32, sizeof pos32)))
        return -1;
    if (graphed && m->graph) {
        if (b->graph_launch(b, m->graph))
            return -1;
    } else {
        int capture = graphed && m->graph_warm;
        if (capture && b->graph_begin(b))
            return -1;
        int rc = step_layers(m, n, pos, devpos ? m->pos_dev : NULL);
        if (capture) {
            void *g = NULL;
            rc = b->graph_end(b, &g) || rc;
            if (rc) {
                if (g)
                    b->graph_free(b, g);
                return llmq_wrap("recording a decode step");
            }
            m->graph = g;
            if (b->graph_launch(b, m->graph))
                return -1;
        } else if (rc) {
            return -1;
        }
        m->graph_warm |= graphed;
    }
    double part = 0.0;
    if (model_head(m, m->step_x, targets, rows, &part, logits))
        return -1;
    if (nll)
        *nll += part;
    return 0;
}
