/* The smoothing factor s and the GQA channel map of the v -> o fold. */
#include <math.h>

#include "smooth.h"

#define SMOOTH_MIN 1e-5f

static const char *g_group_names[SMOOTH_NGROUPS] = {"qkv", "gateup", "o", "down"};

const char *smooth_group_name(smooth_group g) { return (unsigned)g < SMOOTH_NGROUPS ? g_group_names[g] : "?"; }

/* x^e in fp32. PyTorch evaluates pow(x, 0.5) as sqrt (and x^1 as x), so
 * the common alpha 0.5 goes through sqrtf to round exactly like the
 * reference; other exponents use powf (pow(0, 0) = 1 as in torch). */
static float pow_like_torch(float x, float e)
{
    if (e == 0.5f)
        return sqrtf(x);
    if (e == 1.0f)
        return x;
    if (e == 0.0f)
        return 1.0f;
    return powf(x, e);
}

float smooth_factor(float act, float wmax, double alpha)
{
    /* A dead weight column would give 0^(1-alpha) = 0 and an infinite s;
     * smooth.py clamps the weight max first, then s itself. */
    float w = wmax > SMOOTH_MIN ? wmax : SMOOTH_MIN;
    /* alpha comes as a double like the Python float of the reference:
     * both exponents are rounded to fp32 only after 1 - alpha. */
    float s = pow_like_torch(act, (float)alpha) / pow_like_torch(w, (float)(1.0 - alpha));
    return s > SMOOTH_MIN ? s : SMOOTH_MIN;
}

void smooth_factors(const float *act, const float *wmax, int n, double alpha, float *s)
{
    for (int j = 0; j < n; j++)
        s[j] = smooth_factor(act[j], wmax[j], alpha);
}

void smooth_colmax(const float *w, int rows, int cols, float *colmax)
{
    for (int r = 0; r < rows; r++) {
        const float *row = w + (size_t)r * cols;
        for (int j = 0; j < cols; j++) {
            float a = fabsf(row[j]);
            if (a > colmax[j])
                colmax[j] = a;
        }
    }
}

int smooth_vo_source(int c, int n_heads, int n_kv, int head_dim)
{
    int rep = n_heads / n_kv; /* query heads per KV head */
    return (c / head_dim / rep) * head_dim + c % head_dim;
}

void smooth_vo_reduce(const float *per_o, int n_heads, int n_kv, int head_dim, float *per_v)
{
    int nv = n_kv * head_dim, no = n_heads * head_dim;
    for (int r = 0; r < nv; r++)
        per_v[r] = 0.0f; /* the values reduced are maxima of |x|: >= 0 */
    for (int c = 0; c < no; c++) {
        int r = smooth_vo_source(c, n_heads, n_kv, head_dim);
        if (per_o[c] > per_v[r])
            per_v[r] = per_o[c];
    }
}

void smooth_vo_expand(const float *per_v, int n_heads, int n_kv, int head_dim, float *per_o)
{
    int no = n_heads * head_dim;
    for (int c = 0; c < no; c++)
        per_o[c] = per_v[smooth_vo_source(c, n_heads, n_kv, head_dim)];
}
