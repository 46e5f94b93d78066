/* Reading act_scales.safetensors (docs/ACT_SCALES.md) and checking that it
 * describes the model being smoothed.
 *
 * A scales file from another model is the likely mistake (same family,
 * other size), and smoothing with it would silently wreck the output, so
 * every vector is checked by name and length before anything is computed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../src/error.h"
#include "smooth.h"

/* The linear whose act-max vector gives a group's input statistics. */
static const llmq_lin g_group_lin[SMOOTH_NGROUPS] = {LIN_Q, LIN_GATE, LIN_O, LIN_DOWN};

void smooth_shape_str(const st_tensor *t, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

static int check_vector(const st_file *f, const char *path, int layer, llmq_lin lin, int in)
{
    char name[128], shp[96];
    snprintf(name, sizeof name, "model.layers.%d.%s", layer, config_lin_name(lin));
    const st_tensor *t = st_find(f, name);
    if (!t)
        return llmq_fail("%s: no activation statistics for '%s' (expected [%d]); is it the scales file of "
                         "another model?",
                         path, name, in);
    smooth_shape_str(t, shp, sizeof shp);
    if (t->ndim != 1 || t->shape[0] != in)
        return llmq_fail("%s: '%s' has shape %s, but the model's %s.weight has %d input features: expected [%d] "
                         "(scales file of another model?)",
                         path, name, shp, name, in, in);
    if (!llmq_dtype_is_float(t->dtype))
        return llmq_fail("%s: '%s' has dtype %s, expected a float type", path, name, llmq_dtype_name(t->dtype));
    float *v = malloc((size_t)in * sizeof *v);
    if (!v)
        return llmq_fail("%s: out of memory", path);
    int rc = st_read_f32(t, v);
    for (int j = 0; j < in && !rc; j++)
        if (!isfinite(v[j]) || v[j] < 0.0f)
            rc = llmq_fail("%s: '%s'[%d] = %g is not a finite max |x| >= 0", path, name, j, (double)v[j]);
    free(v);
    return rc;
}

static int check_heldout(const st_file *f, const char *path, int layer, smooth_group g, int in)
{
    char name[128], shp[96];
    snprintf(name, sizeof name, "model.layers.%d.heldout.%s", layer, smooth_group_name(g));
    const st_tensor *t = st_find(f, name);
    if (!t)
        return llmq_fail("%s: no '%s': --alpha auto needs the held-out activations llmq-calib writes", path, name);
    smooth_shape_str(t, shp, sizeof shp);
    if (t->ndim != 2 || t->shape[0] <= 0 || t->shape[0] > (1 << 30) || t->shape[1] != in)
        return llmq_fail("%s: '%s' has shape %s, expected [T, %d] with T > 0", path, name, shp, in);
    if (!llmq_dtype_is_float(t->dtype))
        return llmq_fail("%s: '%s' has dtype %s, expected a float type", path, name, llmq_dtype_name(t->dtype));
    return 0;
}

int smooth_check_scales(const st_file *f, const char *path, const llmq_config *c, unsigned mask, int need_heldout)
{
    for (int i = 0; i < c->n_layers; i++) {
        for (int l = 0; l < LIN_COUNT; l++) {
            int in, out;
            config_lin_shape(c, (llmq_lin)l, &in, &out);
            if (check_vector(f, path, i, (llmq_lin)l, in))
                return -1;
        }
        for (int g = 0; need_heldout && g < SMOOTH_NGROUPS; g++) {
            int in, out;
            config_lin_shape(c, g_group_lin[g], &in, &out);
            if ((mask & (1u << g)) && check_heldout(f, path, i, (smooth_group)g, in))
                return -1;
        }
    }
    /* A deeper model of the same width would pass the checks above. */
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.%s", c->n_layers, config_lin_name(LIN_Q));
    if (st_find(f, name))
        return llmq_fail("%s: has statistics for '%s', but the model has %d layers (scales file of another model?)",
                         path, name, c->n_layers);
    return 0;
}

int smooth_read_act(const st_file *f, const char *path, int layer, smooth_group g, float **act)
{
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.%s", layer, config_lin_name(g_group_lin[g]));
    const st_tensor *t = st_find(f, name);
    if (!t)
        return llmq_fail("%s: no tensor '%s'", path, name);
    *act = malloc((size_t)t->numel * sizeof **act + 1);
    if (!*act)
        return llmq_fail("%s: out of memory", path);
    if (st_read_f32(t, *act)) {
        free(*act);
        *act = NULL;
        return -1;
    }
    return 0;
}

int smooth_read_heldout(const st_file *f, const char *path, int layer, smooth_group g, float **x, int *T)
{
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.heldout.%s", layer, smooth_group_name(g));
    const st_tensor *t = st_find(f, name);
    if (!t || t->ndim != 2)
        return llmq_fail("%s: no 2-D tensor '%s'", path, name);
    size_t n = (size_t)t->numel;
    *x = malloc(n * sizeof **x + 1);
    if (!*x)
        return llmq_fail("%s: out of memory reading '%s'", path, name);
    int rc = st_read_f32(t, *x);
    for (size_t i = 0; i < n && !rc; i++)
        if (!isfinite((*x)[i]))
            rc = llmq_fail("%s: '%s' holds a non-finite value at [%zu, %zu]", path, name, i / (size_t)t->shape[1],
                           i % (size_t)t->shape[1]);
    if (rc) {
        free(*x);
        *x = NULL;
        return -1;
    }
    *T = (int)t->shape[0];
    return 0;
}
