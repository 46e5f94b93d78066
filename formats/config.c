#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "../src/fileio.h"

/* Integer field: absent -> def; present but not a non-negative integer -> error. */
static int get_int(const cJSON *root, const char *key, int def, int *out, const char *path)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || it->valuedouble < 0 ||
        it->valuedouble > 1e9)
        return llmq_fail("%s: \"%s\" must be a non-negative integer", path, key);
    *out = (int)it->valuedouble;
    return 0;
}

static int get_float(const cJSON *root, const char *key, float def, float *out, const char *path)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(it))
        return llmq_fail("%s: \"%s\" must be a number", path, key);
    *out = (float)it->valuedouble;
    return 0;
}

static int get_bool(const cJSON *root, const char *key, int def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it))
        return def;
    return cJSON_IsTrue(it) ? 1 : 0;
}

static const char *get_str(const cJSON *root, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static int parse_rope_scaling(llmq_config *c, const cJSON *root, const char *path)
{
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs))
        return 0;
    if (!cJSON_IsObject(rs))
        return llmq_fail("%s: \"rope_scaling\" must be an object", path);
    const char *type = get_str(rs, "rope_type");
    if (!type)
        type = get_str(rs, "type");
    if (!type)
        return llmq_fail("%s: rope_scaling without a type", path);
    if (strcmp(type, "default") == 0)
        return 0;
    if (strcmp(type, "llama3") != 0)
        return llmq_fail("%s: rope_scaling type \"%s\" is not supported (supported: llama3)", path, type);
    c->rope_llama3 = 1;
    if (get_float(rs, "factor", 8.0f, &c->rope_factor, path) ||
        get_float(rs, "low_freq_factor", 1.0f, &c->rope_low_freq_factor, path) ||
        get_float(rs, "high_freq_factor", 4.0f, &c->rope_high_freq_factor, path) ||
        get_int(rs, "original_max_position_embeddings", 8192, &c->rope_orig_max_pos, path))
        return -1;
    if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
        return llmq_fail("%s: rope_scaling high_freq_factor must exceed low_freq_factor", path);
    return 0;
}

static int parse_quant_config(llmq_config *c, const cJSON *root, const char *path)
{
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (!qc || cJSON_IsNull(qc))
        return 0;
    const char *method = get_str(qc, "quant_method");
    if (!method)
        return llmq_fail("%s: quantization_config has no quant_method", path);
    snprintf(c->quant_method, sizeof c->quant_method, "%s", method);
    if (get_int(qc, "bits", 0, &c->q_bits, path))
        return -1;
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(qc, "group_size");
    c->q_group = cJSON_IsNumber(g) ? (int)g->valuedouble : -1;
    c->q_sym = get_bool(qc, "sym", 1);
    c->q_desc_act = get_bool(qc, "desc_act", 0);
    const char *fmt = get_str(qc, "checkpoint_format");
    snprintf(c->q_checkpoint_format, sizeof c->q_checkpoint_format, "%s", fmt ? fmt : "gptq");
    return 0;
}

static int validate(llmq_config *c, const cJSON *root, const char *path)
{
    const char *act = get_str(root, "hidden_act");
    if (act && strcmp(act, "silu") != 0)
        return llmq_fail("%s: hidden_act \"%s\" is not supported (llmq runs silu Llama-family models)", path, act);
    if (get_bool(root, "mlp_bias", 0))
        return llmq_fail("%s: mlp_bias is not supported", path);
    if (c->hidden <= 0 || c->ffn <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->vocab <= 0)
        return llmq_fail("%s: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and vocab_size "
                         "are required",
                         path);
    if (c->n_kv <= 0 || c->n_heads % c->n_kv != 0)
        return llmq_fail("%s: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", path,
                         c->n_heads, c->n_kv);
    if (c->head_dim <= 0 || c->head_dim % 2 != 0 || c->head_dim > 256)
        return llmq_fail("%s: head_dim %d is not supported (even, at most 256)", path, c->head_dim);
    if (!(c->eps > 0.0f))
        return llmq_fail("%s: rms_norm_eps must be positive", path);
    return 0;
}

int config_load(llmq_config *c, const char *dir)
{
    memset(c, 0, sizeof *c);
    char *path = llmq_path_join(dir, "config.json");
    char *text = NULL;
    size_t len = 0;
    int rc = -1;
    cJSON *root = NULL;
    if (!path)
        return llmq_fail("out of memory");
    if (llmq_read_file(path, &text, &len))
        goto done;
    root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();
        llmq_fail("%s: invalid JSON%s%.20s", path, at ? " near: " : "", at ? at : "");
        goto done;
    }
    const char *mt = get_str(root, "model_type");
    if (!mt) {
        llmq_fail("%s: no \"model_type\"", path);
        goto done;
    }
    if (strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "qwen2")) {
        llmq_fail("%s: model_type \"%s\" is not supported (supported: llama, mistral, qwen2)", path, mt);
        goto done;
    }
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    if (get_int(root, "hidden_size", 0, &c->hidden, path) ||
        get_int(root, "intermediate_size", 0, &c->ffn, path) ||
        get_int(root, "num_hidden_layers", 0, &c->n_layers, path) ||
        get_int(root, "num_attention_heads", 0, &c->n_heads, path) ||
        get_int(root, "num_key_value_heads", c->n_heads, &c->n_kv, path) ||
        get_int(root, "vocab_size", 0, &c->vocab, path) ||
        get_int(root, "max_position_embeddings", 2048, &c->max_pos, path) ||
        get_float(root, "rms_norm_eps", 1e-6f, &c->eps, path) ||
        get_float(root, "rope_theta", 10000.0f, &c->rope_theta, path) ||
        get_int(root, "bos_token_id", -1, &c->bos_id, path) ||
        get_int(root, "eos_token_id", -1, &c->eos_id, path))
        goto done;
    if (get_int(root, "head_dim", c->n_heads ? c->hidden / c->n_heads : 0, &c->head_dim, path))
        goto done;
    /* Qwen2 always has q/k/v bias; Llama's attention_bias adds q/k/v/o bias. */
    int attention_bias = get_bool(root, "attention_bias", 0);
    c->attn_bias = strcmp(mt, "qwen2") == 0 || attention_bias;
    c->o_bias = strcmp(mt, "qwen2") != 0 && attention_bias;
    c->tied = get_bool(root, "tie_word_embeddings", 0); /* HF default: untied */
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    int use_sw = strcmp(mt, "qwen2") == 0 ? get_bool(root, "use_sliding_window", 0) : 1;
    if (use_sw && cJSON_IsNumber(sw) && sw->valuedouble > 0)
        c->sliding_window = (int)sw->valuedouble;
    const char *dt = get_str(root, "torch_dtype");
    if (!dt)
        dt = get_str(root, "dtype");
    c->dtype = LLMQ_F32;
    if (dt && strcmp(dt, "float16") == 0)
        c->dtype = LLMQ_F16;
    else if (dt && strcmp(dt, "bfloat16") == 0)
        c->dtype = LLMQ_BF16;
    if (parse_rope_scaling(c, root, path) || parse_quant_config(c, root, path) || validate(c, root, path))
        goto done;
    rc = 0;
done:
    cJSON_Delete(root);
    free(text);
    free(path);
    return rc;
}

static const char *g_lin_names[LIN_COUNT] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

const char *config_lin_name(llmq_lin which) { return (unsigned)which < LIN_COUNT ? g_lin_names[which] : "?"; }

void config_lin_shape(const llmq_config *c, llmq_lin which, int *in, int *out)
{
    int q = c->n_heads * c->head_dim, kv = c->n_kv * c->head_dim;
    switch (which) {
    case LIN_Q: *in = c->hidden, *out = q; break;
    case LIN_K:
    case LIN_V: *in = c->hidden, *out = kv; break;
    case LIN_O: *in = q, *out = c->hidden; break;
    case LIN_GATE:
    case LIN_UP: *in = c->hidden, *out = c->ffn; break;
    default: *in = c->ffn, *out = c->hidden; break;
    }
}
