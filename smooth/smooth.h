/* SmoothQuant for Llama-family decoders (llmq-smooth).
 *
 * Activation outliers live in a few input channels of each linear, which a
 * per-token int8 quantizer cannot represent. SmoothQuant moves part of that
 * range into the weights with a per-input-channel factor
 *
 *     s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha),   clamped to s >= 1e-5,
 *
 * (the weight max over every row of every linear that reads X, itself
 * clamped to >= 1e-5 as SmoothQuant's smooth.py does) and folds X / s into
 * whatever produced X and W * s into the linears, so the float model computes
 * the same function. Exact folds for Llama:
 *
 *   qkv     input_layernorm /= s,           q/k/v columns *= s
 *   gateup  post_attention_layernorm /= s,  gate/up columns *= s
 *   o       v_proj rows (and bias) /= s,    o_proj columns *= s     (--fold-vo)
 *   down    up_proj rows /= s,              down_proj columns *= s  (--fold-ud)
 *
 * The o fold is exact because attention mixes v linearly per channel; with
 * GQA one v channel feeds the o_proj inputs of every query head sharing its
 * KV head, so those o columns share one s (maxima taken over all of them).
 * The down fold is exact because silu(gate) * up is linear in up.
 *
 * Every s of a layer is computed from the weights as stored (before any
 * fold of that layer), in fp32; the folded tensors are stored back in their
 * own dtype (F32, F16 or BF16). Everything else is copied byte for byte. */
#ifndef LLMQ_SMOOTH_H
#define LLMQ_SMOOTH_H

#include <stddef.h>

#include "../formats/config.h"
#include "../formats/safetensors.h"
#include "../src/outdir.h"
#include "../src/dtype.h"

/* The linear groups that share one input. */
typedef enum { SMOOTH_QKV, SMOOTH_GATEUP, SMOOTH_O, SMOOTH_DOWN, SMOOTH_NGROUPS } smooth_group;

/* "qkv", "gateup", "o", "down": the suffix of the held-out tensors too. */
const char *smooth_group_name(smooth_group g);

/* ---- the factor (smooth/factors.c) ---- */

/* One channel: act^alpha / max(wmax, 1e-5)^(1-alpha), at least 1e-5. */
float smooth_factor(float act, float wmax, double alpha);
/* s[j] = smooth_factor(act[j], wmax[j], alpha) for j < n. */
void smooth_factors(const float *act, const float *wmax, int n, double alpha, float *s);
/* colmax[j] = max(colmax[j], max_r |w[r, j]|) for a row-major [rows, cols]
 * matrix: call once per linear of a group on a zeroed colmax. */
void smooth_colmax(const float *w, int rows, int cols, float *colmax);

/* GQA: the v_proj output row feeding o_proj input channel c, c in
 * [0, n_heads * head_dim) (query head c / head_dim reads KV head
 * (c / head_dim) / (n_heads / n_kv), as Hugging Face's repeat_kv does). */
int smooth_vo_source(int c, int n_heads, int n_kv, int head_dim);
/* per_v[r] = max over the o channels c fed by r of per_o[c]. */
void smooth_vo_reduce(const float *per_o, int n_heads, int n_kv, int head_dim, float *per_v);
/* per_o[c] = per_v[smooth_vo_source(c)]. */
void smooth_vo_expand(const float *per_v, int n_heads, int n_kv, int head_dim, float *per_o);

/* ---- one decoder layer in fp32 (smooth/fold.c) ---- */

typedef struct {
    int hidden, ffn, n_heads, n_kv, head_dim;
    float *ln1, *ln2;            /* input_layernorm, post_attention_layernorm [hidden] */
    float *q, *k, *v, *o;        /* [out, in] as in the checkpoint */
    float *gate, *up, *down;
    float *v_bias;               /* [n_kv * head_dim], or NULL */
} smooth_layer;

/* Input channels of group g (hidden, hidden, n_heads * head_dim, ffn). */
int smooth_group_in(const smooth_layer *L, smooth_group g);
/* Total output rows of the group's linears (q+k+v, gate+up, hidden, hidden). */
int smooth_group_out(const smooth_layer *L, smooth_group g);
/* The group's linears stacked row-wise into w [smooth_group_out, in]. */
void smooth_group_weights(const smooth_layer *L, smooth_group g, float *w);

/* The per-input-channel act and weight maxima the factor of group g is
 * computed from: act_out = act (tied over the query heads of a KV head for
 * SMOOTH_O), wmax_out = column max over the group's linears (tied likewise).
 * act has smooth_group_in entries; so do the outputs. */
int smooth_group_stats(const smooth_layer *L, smooth_group g, const float *act, float *act_out, float *wmax_out);

/* Smooth the groups whose bit is set in mask (1 << SMOOTH_QKV | ...), group
 * g with act-max act[g] and alpha alpha[g]. All factors are computed before
 * any tensor changes. If s_out is non-NULL, s_out[g] (when non-NULL and
 * g is in mask) receives the factors of g [smooth_group_in]. */
int smooth_layer_apply(smooth_layer *L, unsigned mask, const float *const act[SMOOTH_NGROUPS],
                       const double alpha[SMOOTH_NGROUPS], float *const s_out[SMOOTH_NGROUPS]);

/* ---- automatic alpha (smooth/auto_alpha.c) ---- */

#define SMOOTH_NGRID 21 /* alpha = 0, 0.05, ..., 1 */

double smooth_grid_alpha(int k); /* k / 20.0 */

/* W8A8 fake quantization as SmoothQuant's fake_quant.py: scale =
 * max(absmax, 1e-5) / 127, q = round-half-even(x / scale) * scale. Per row
 * of x [rows, cols]: per token for activations, per output channel for
 * weights [out, in]. */
void smooth_q8_rows(float *x, int rows, int cols);

/* Output error of the W8A8 group for one factor vector s [in]:
 *   sum || X W^T - Q8tok(X / s) Q8ch(round_dt(W * s))^T ||^2
 * X [T, in] held-out inputs, W [out, in] (the group's linears stacked),
 * y_ref = X W^T [T, out] or NULL (then computed). dt is the dtype the
 * smoothed weights are stored in. Returns a negative value when out of memory. */
double smooth_w8a8_error(const float *x, int T, int in, const float *w, int out, const float *s, const float *y_ref,
                         llmq_dtype dt);

/* Pick alpha on the grid that minimizes smooth_w8a8_error with
 * s = smooth_factors(act, wmax, alpha) (ties: the smaller alpha).
 * errs (optional) receives the SMOOTH_NGRID errors. */
int smooth_auto_alpha(const float *x, int T, int in, const float *w, int out, const float *act, const float *wmax,
                      llmq_dtype dt, double *alpha, double *errs);

/* ---- choosing among alpha candidates by held-out loss (smooth/select.c) ---- */
/* W8A8 fake-quant NLL (summed over *count predictions) of model_dir smoothed
 * with alpha[g][layer] for the groups in mask, on the held-out token windows
 * of the act-scales file sf ("heldout.ids", "heldout.lengths"), run on b. */
struct llmq_backend;
int smooth_heldout_nll(const char *model_dir, struct llmq_backend *b, const llmq_config *c, const st_file *sf,
                       const char *spath, unsigned mask, double *const alpha[SMOOTH_NGROUPS], double *nll,
                       long *count);

/* ---- the act-scales file (smooth/scales.c) ---- */

/* Check an act_scales.safetensors file against a model config: for every
 * layer and every linear, "model.layers.{i}.<linear>" present, 1-D, float,
 * its length equal to the linear's in_features, finite and >= 0; no
 * statistics for layers the model lacks. With need_heldout, the
 * "model.layers.{i}.heldout.<group>" tensors of the groups in mask must be
 * present as [T > 0, in]. Errors name the file, the tensor and both shapes. */
int smooth_check_scales(const st_file *f, const char *path, const llmq_config *c, unsigned mask, int need_heldout);
/* "[64, 172]": a tensor's shape for messages. */
void smooth_shape_str(const st_tensor *t, char *buf, size_t n);
/* The act-max vector of group g of layer i ([in] fp32, malloc'd). */
int smooth_read_act(const st_file *f, const char *path, int layer, smooth_group g, float **act);
/* The held-out inputs of group g of layer i ([T, in] fp32, malloc'd). */
int smooth_read_heldout(const st_file *f, const char *path, int layer, smooth_group g, float **x, int *T);

/* ---- the whole model (smooth/smooth.c) ---- */

#define SMOOTH_ALPHA_AUTO (-1.0)

typedef struct {
    const char *model_dir;  /* Hugging Face directory */
    const char *scales;     /* act_scales.safetensors (llmq-calib) */
    const char *out_dir;
    double alpha;           /* in [0, 1], or SMOOTH_ALPHA_AUTO */
    int fold_vo, fold_ud;   /* the two extra folds */
    int force;              /* replace a non-empty out_dir */
    struct llmq_backend *backend; /* auto: scores the candidates by held-out loss (NULL: local choice only) */
    size_t max_shard_bytes; /* 0: shard like the input */
    /* Called after each layer (may be NULL). */
    void (*on_layer)(void *ctx, int done, int total);
    void *ctx;
} smooth_opts;

typedef struct {
    int n_layers;
    unsigned mask;                  /* the groups smoothed */
    double *alpha[SMOOTH_NGROUPS];  /* [n_layers] alpha used, for the groups in mask */
    double *err[SMOOTH_NGROUPS];    /* auto: [n_layers * SMOOTH_NGRID] errors, else NULL */
    int tensors_changed, tensors_total;
    /* auto with a backend: held-out W8A8 NLL per token of the per-layer
     * choice (cand_nll[0]) and of each uniform alpha (cand_nll[1 + k]);
     * chosen = the winner's index. */
    double cand_nll[1 + SMOOTH_NGRID];
    int chosen, scored;
} smooth_result;

/* Smooth model_dir with the statistics in scales and write the complete
 * model directory out_dir. On any error returns -1 with a message and
 * leaves nothing on disk. res (optional) receives the alphas used; free it
 * with smooth_result_free. */
int smooth_model(const smooth_opts *o, smooth_result *res);
void smooth_result_free(smooth_result *r);

/* ---- writing the result (smooth/output.c) ---- */

/* Write every tensor of m (those in changed[] with data[] instead) into
 * d's temporary directory with the metadata and side files, then commit d
 * (or abort it on any error). */
int smooth_write_output(const smooth_opts *o, const st_model *m, const st_tensor *const *changed,
                        const void *const *data, int n_changed, const smooth_result *res, llmq_outdir *d);

/* The alphas as JSON: {"qkv":[..],"gateup":[..],...} for the groups in
 * mask (malloc'd; NULL when out of memory). */
char *smooth_alphas_json(const smooth_result *r);

#endif
