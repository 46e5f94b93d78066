/* make_synth_model: write a synthetic Hugging Face Llama directory (config.json,
 * safetensors weights, tokenizer files) of any size, for tests and benchmarks
 * that need a model of real dimensions but not real weights.
 *
 *   make_synth_model --out DIR [--preset 7b|tiny] [--hidden H] [--layers L]
 *       [--heads N] [--kv-heads N] [--ffn F] [--vocab V] [--ctx C] [--seed S]
 *       [--dtype f16|bf16|f32] [--tokenizer SRC_DIR|none] [--shard-gb G]
 *       [--threads T] [--quiet]
 *
 * Weights are N(0, 0.02^2) for embeddings and linears, 1 + N(0, 0.01^2) for
 * norms. Every block of 64Ki elements has its own PRNG stream derived from
 * (seed, tensor number, block number), so the bytes depend only on the seed
 * and the shape, never on the number of threads.
 *
 * Memory: tensors are generated one shard at a time (default 4 GB shards),
 * so a 13.5 GB fp16 7B model needs about 4 GB of RAM, not 13.5 or 27.
 *
 * Build (from the repository root):
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -I. tests/make_synth_model.c \
 *       formats/safetensors.c src/dtype.c src/error.c src/fileio.c src/parallel.c \
 *       -lcjson -lm -pthread -o make_synth_model
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "src/error.h"
#include "src/fileio.h"
#include "src/parallel.h"
#include "src/rng.h"

#define PROG "make_synth_model"
#define BLOCK_ELEMS (1u << 16) /* elements per PRNG stream */
#define CHUNK_ELEMS 1024u      /* floats generated before converting */
#define LINEAR_STD 0.02f
#define NORM_STD 0.01f

typedef struct {
    int hidden, layers, heads, kv_heads, ffn, vocab, ctx;
} model_shape;

typedef struct {
    model_shape shape;
    uint64_t seed;
    llmq_dtype dtype;
    const char *out_dir;
    const char *tokenizer_dir; /* NULL: none */
    double shard_gb;
    int threads;
    int quiet;
} options;

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    size_t numel;
    int is_norm;
} tensor_spec;

static const model_shape PRESET_TINY = {128, 2, 4, 2, 384, 32000, 512};
static const model_shape PRESET_7B = {4096, 32, 32, 32, 11008, 32000, 4096};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- random numbers ---- */

/* A stream per (seed, tensor, block): the blocks can then be generated in
 * any order, by any number of threads, with the same result. */
static llmq_rng stream_for(uint64_t seed, uint64_t tensor, uint64_t block)
{
    llmq_rng r;
    llmq_rng_seed(&r, seed ^ (tensor * 0xd1b54a32d192ed03ull) ^ (block * 0x8cb92ba72f3d8dd7ull));
    return r;
}

/* n standard normals (n even), Box-Muller on two 24-bit uniforms per draw. */
static void normals(llmq_rng *r, float *out, size_t n)
{
    for (size_t i = 0; i < n; i += 2) {
        uint64_t bits = llmq_rng_next(r);
        float u1 = (float)((bits >> 40) + 1) * (1.0f / 16777216.0f); /* (0, 1]: log stays finite */
        float u2 = (float)((bits >> 16) & 0xffffff) * (1.0f / 16777216.0f);
        float rad = sqrtf(-2.0f * logf(u1)), s, c;
        sincosf(6.28318530718f * u2, &s, &c);
        out[i] = rad * c;
        out[i + 1] = rad * s;
    }
}

/* ---- the tensor list ---- */

static void add_spec(tensor_spec *list, int *n, const char *name, int64_t rows, int64_t cols, int is_norm)
{
    tensor_spec *t = &list[(*n)++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->numel = (size_t)rows * (size_t)(cols ? cols : 1);
    t->is_norm = is_norm;
}

/* HF Llama names and [out, in] shapes, in the order HF writes them. */
static tensor_spec *plan_tensors(const model_shape *m, int *count)
{
    int head_dim = m->hidden / m->heads, kv_dim = head_dim * m->kv_heads;
    tensor_spec *list = calloc((size_t)m->layers * 9 + 3, sizeof *list);
    if (!list)
        return NULL;
    int n = 0;
    char name[96];
    add_spec(list, &n, "model.embed_tokens.weight", m->vocab, m->hidden, 0);
    for (int l = 0; l < m->layers; l++) {
        static const char *attn[4] = {"q", "k", "v", "o"};
#define LAYER_NAME(fmt, ...) (snprintf(name, sizeof name, "model.layers.%d." fmt, l, __VA_ARGS__), name)
        add_spec(list, &n, LAYER_NAME("%s", "input_layernorm.weight"), m->hidden, 0, 1);
        for (int i = 0; i < 4; i++) {
            int64_t out = (i == 1 || i == 2) ? kv_dim : m->hidden;
            add_spec(list, &n, LAYER_NAME("self_attn.%s_proj.weight", attn[i]), out, m->hidden, 0);
        }
        add_spec(list, &n, LAYER_NAME("%s", "post_attention_layernorm.weight"), m->hidden, 0, 1);
        add_spec(list, &n, LAYER_NAME("%s", "mlp.gate_proj.weight"), m->ffn, m->hidden, 0);
        add_spec(list, &n, LAYER_NAME("%s", "mlp.up_proj.weight"), m->ffn, m->hidden, 0);
        add_spec(list, &n, LAYER_NAME("%s", "mlp.down_proj.weight"), m->hidden, m->ffn, 0);
#undef LAYER_NAME
    }
    add_spec(list, &n, "model.norm.weight", m->hidden, 0, 1);
    add_spec(list, &n, "lm_head.weight", m->vocab, m->hidden, 0);
    *count = n;
    return list;
}

/* ---- parallel generation of one shard's tensors ---- */

typedef struct {
    const tensor_spec *specs;
    int first, last; /* tensors [first, last) of the model */
    void **buffers; /* buffers[i - first] */
    size_t *block_end; /* cumulative block counts per tensor */
    uint64_t seed;
    llmq_dtype dtype;
} gen_work;

static void store(void *dst, llmq_dtype dt, size_t at, const float *src, size_t n)
{
    uint16_t *d = (uint16_t *)dst + at;
    if (dt == LLMQ_F32)
        memcpy((float *)dst + at, src, n * sizeof *src);
    else if (dt == LLMQ_F16)
        for (size_t i = 0; i < n; i++)
            d[i] = llmq_f32_to_f16(src[i]);
    else
        for (size_t i = 0; i < n; i++)
            d[i] = llmq_f32_to_bf16(src[i]);
}

static void fill_block(const gen_work *w, int ti, size_t block)
{
    const tensor_spec *t = &w->specs[ti];
    llmq_rng rng = stream_for(w->seed, (uint64_t)ti, block);
    size_t begin = block * BLOCK_ELEMS, end = begin + BLOCK_ELEMS < t->numel ? begin + BLOCK_ELEMS : t->numel;
    float tmp[CHUNK_ELEMS];
    for (size_t at = begin; at < end; at += CHUNK_ELEMS) {
        size_t n = end - at < CHUNK_ELEMS ? end - at : CHUNK_ELEMS;
        normals(&rng, tmp, CHUNK_ELEMS);
        for (size_t i = 0; i < n; i++)
            tmp[i] = t->is_norm ? 1.0f + NORM_STD * tmp[i] : LINEAR_STD * tmp[i];
        store(w->buffers[ti - w->first], w->dtype, at, tmp, n);
    }
}

/* Global blocks [b0, b1) of the shard: all blocks but each tensor's last
 * are BLOCK_ELEMS long, so equal ranges of blocks are equal work. */
static void gen_blocks(void *arg, int b0, int b1)
{
    const gen_work *w = arg;
    int i = 0; /* the shard's tensor holding block b: first with block_end > b */
    for (size_t b = (size_t)b0; b < (size_t)b1; b++) {
        while (w->block_end[i] <= b)
            i++;
        fill_block(w, w->first + i, b - (i ? w->block_end[i - 1] : 0));
    }
}

static int generate(gen_work *w, int threads)
{
    int n = w->last - w->first;
    w->block_end = malloc((size_t)n * sizeof *w->block_end);
    if (!w->block_end)
        return llmq_fail("out of memory");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        total += (w->specs[w->first + i].numel + BLOCK_ELEMS - 1) / BLOCK_ELEMS;
        w->block_end[i] = total;
    }
    /* blocks are counted in int ranges: 2^31 blocks of 64Ki is 2^47
     * elements, far past any shard that fits in memory */
    int rc = total > INT32_MAX ? llmq_fail("shard of %zu blocks is too large", total) : 0;
    if (!rc) /* at most 64 threads, whatever --threads says */
        llmq_parallel_rows((int)total, threads, gen_blocks, w);
    free(w->block_end);
    return rc;
}

/* ---- output ---- */

static size_t tensor_bytes(const tensor_spec *t, llmq_dtype dt) { return t->numel * llmq_dtype_size(dt); }

/* Same greedy split as st_write_sharded: close a shard before the tensor that
 * would take it over max (0 = no limit). starts[0..n], returns n. */
static int plan_shards(const tensor_spec *specs, int count, llmq_dtype dt, size_t max, int *starts)
{
    size_t total = 0;
    for (int i = 0; i < count; i++)
        total += tensor_bytes(&specs[i], dt);
    int n = 0;
    starts[0] = 0;
    if (max && total > max) {
        size_t used = 0;
        for (int i = 0; i < count; i++) {
            size_t b = tensor_bytes(&specs[i], dt);
            if (i > starts[n] && used + b > max) {
                starts[++n] = i;
                used = 0;
            }
            used += b;
        }
    }
    starts[++n] = count;
    return n;
}

static void shard_file_name(char *buf, size_t size, int shard, int nshards)
{
    if (nshards == 1)
        snprintf(buf, size, "model.safetensors");
    else
        snprintf(buf, size, "model-%05d-of-%05d.safetensors", shard + 1, nshards);
}

static int write_shard(const options *o, const tensor_spec *specs, int first, int last, const char *path)
{
    int n = last - first, rc = 0;
    void **buffers = calloc((size_t)n, sizeof *buffers);
    if (!buffers)
        return llmq_fail("out of memory");
    for (int i = 0; i < n && !rc; i++) {
        buffers[i] = malloc(tensor_bytes(&specs[first + i], o->dtype));
        if (!buffers[i])
            rc = llmq_fail("%s: out of memory for tensor '%s'", path, specs[first + i].name);
    }
    gen_work work = {.specs = specs, .first = first, .last = last, .buffers = buffers, .seed = o->seed,
                     .dtype = o->dtype};
    if (!rc)
        rc = generate(&work, o->threads);
    st_writer *w = rc ? NULL : st_writer_new();
    if (!rc && !w)
        rc = llmq_fail("out of memory");
    for (int i = 0; i < n && !rc; i++)
        rc = st_writer_add(w, specs[first + i].name, o->dtype, specs[first + i].ndim, specs[first + i].shape,
                           buffers[i]);
    if (!rc)
        rc = st_writer_meta(w, "format", "pt");
    if (!rc)
        rc = st_writer_commit(w, path);
    st_writer_free(w);
    for (int i = 0; i < n; i++)
        free(buffers[i]);
    free(buffers);
    return rc;
}

/* The same index layout st_write_sharded writes. */
static int write_index(const char *dir, const tensor_spec *specs, int count, const int *starts, int nshards,
                       llmq_dtype dt)
{
    size_t total = 0, cap = 256 + (size_t)count * 256;
    for (int i = 0; i < count; i++)
        total += tensor_bytes(&specs[i], dt);
    char *text = malloc(cap), fname[64];
    if (!text)
        return llmq_fail("out of memory");
    size_t len = (size_t)snprintf(text, cap, "{\n  \"metadata\": {\n    \"total_size\": %zu\n  },\n  \"weight_map\": {",
                                  total);
    for (int s = 0; s < nshards; s++) {
        shard_file_name(fname, sizeof fname, s, nshards);
        for (int i = starts[s]; i < starts[s + 1] && len < cap; i++)
            len += (size_t)snprintf(text + len, cap - len, "%s\n    \"%s\": \"%s\"", i ? "," : "", specs[i].name,
                                    fname);
    }
    if (len < cap)
        len += (size_t)snprintf(text + len, cap - len, "\n  }\n}\n");
    if (len >= cap) { /* cannot happen with names under 96 bytes; never write a cut index */
        free(text);
        return llmq_fail("%s: index text overflow", dir);
    }
    char *path = llmq_path_join(dir, "model.safetensors.index.json");
    int rc = path ? llmq_write_file(path, text, len) : llmq_fail("out of memory");
    free(path);
    free(text);
    return rc;
}

static const char *torch_dtype_name(llmq_dtype dt)
{
    return dt == LLMQ_F16 ? "float16" : dt == LLMQ_BF16 ? "bfloat16" : "float32";
}

static int write_config(const options *o)
{
    const model_shape *m = &o->shape;
    cJSON *c = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(c, "model_type", "llama");
    cJSON_AddNumberToObject(c, "hidden_size", m->hidden);
    cJSON_AddNumberToObject(c, "intermediate_size", m->ffn);
    cJSON_AddNumberToObject(c, "num_hidden_layers", m->layers);
    cJSON_AddNumberToObject(c, "num_attention_heads", m->heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", m->kv_heads);
    cJSON_AddNumberToObject(c, "head_dim", m->hidden / m->heads);
    cJSON_AddNumberToObject(c, "vocab_size", m->vocab);
    cJSON_AddNumberToObject(c, "max_position_embeddings", m->ctx);
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-5);
    cJSON_AddNumberToObject(c, "rope_theta", 10000.0);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddFalseToObject(c, "tie_word_embeddings");
    cJSON_AddStringToObject(c, "torch_dtype", torch_dtype_name(o->dtype));
    cJSON_AddNumberToObject(c, "bos_token_id", 1);
    cJSON_AddNumberToObject(c, "eos_token_id", 2);
    cJSON_AddFalseToObject(c, "attention_bias");
    cJSON_AddFalseToObject(c, "mlp_bias");
    cJSON_AddNumberToObject(c, "initializer_range", 0.02);
    cJSON_AddTrueToObject(c, "use_cache");
    cJSON_AddStringToObject(c, "_name_or_path", "llmq-synthetic");
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    char *path = llmq_path_join(o->out_dir, "config.json");
    int rc = text && path ? llmq_write_file(path, text, strlen(text)) : llmq_fail("out of memory");
    free(path);
    free(text);
    return rc;
}

/* Highest token id in tokenizer.json + 1 (model.vocab and added_tokens). */
static int tokenizer_size(const char *path, int *size)
{
    char *text;
    size_t len;
    if (llmq_read_file(path, &text, &len))
        return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "model"), "vocab");
    if (!cJSON_IsObject(vocab)) {
        cJSON_Delete(root);
        return llmq_fail("%s: no model.vocab object", path);
    }
    int max_id = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) if (cJSON_IsNumber(e) && e->valueint > max_id) max_id = e->valueint;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"))
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (cJSON_IsNumber(id) && id->valueint > max_id)
            max_id = id->valueint;
    }
    cJSON_Delete(root);
    *size = max_id + 1;
    return 0;
}

static int copy_tokenizer(const options *o)
{
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char *src = llmq_path_join(o->tokenizer_dir, files[i]), *dst = llmq_path_join(o->out_dir, files[i]);
        int rc = src && dst ? llmq_copy_file(src, dst) : llmq_fail("out of memory");
        free(src);
        free(dst);
        if (rc)
            return -1;
    }
    return 0;
}

/* model.safetensors, its index, or a model-NNNNN-of-NNNNN.safetensors shard. */
static int is_weight_file(const char *name)
{
    size_t n = strlen(name);
    if (strcmp(name, "model.safetensors") == 0 || strcmp(name, "model.safetensors.index.json") == 0)
        return 1;
    return n > 18 && strncmp(name, "model-", 6) == 0 && strstr(name, "-of-") &&
           strcmp(name + n - 12, ".safetensors") == 0;
}

/* Weights of an earlier run with another shard count must not linger: a
 * reader would otherwise see a stale index or a stale single file. */
static void remove_stale_weights(const char *dir, int nshards)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_weight_file(e->d_name))
            continue;
        char keep[64];
        int keep_it = 0;
        for (int s = 0; s < nshards && !keep_it; s++) {
            shard_file_name(keep, sizeof keep, s, nshards);
            keep_it = strcmp(e->d_name, keep) == 0;
        }
        keep_it |= nshards > 1 && strcmp(e->d_name, "model.safetensors.index.json") == 0;
        if (!keep_it) {
            char *p = llmq_path_join(dir, e->d_name);
            if (p)
                unlink(p);
            free(p);
        }
    }
    closedir(d);
}

static int write_model(const options *o)
{
    int count = 0;
    tensor_spec *specs = plan_tensors(&o->shape, &count);
    int *starts = malloc(((size_t)count + 2) * sizeof *starts);
    if (!specs || !starts) {
        free(specs);
        free(starts);
        return llmq_fail("out of memory");
    }
    size_t max = (size_t)(o->shard_gb * 1e9);
    int nshards = plan_shards(specs, count, o->dtype, max, starts), rc = 0;
    double t0 = now_s();
    size_t done = 0;
    for (int s = 0; s < nshards && !rc; s++) {
        char fname[64];
        shard_file_name(fname, sizeof fname, s, nshards);
        char *path = llmq_path_join(o->out_dir, fname);
        size_t bytes = 0;
        for (int i = starts[s]; i < starts[s + 1]; i++)
            bytes += tensor_bytes(&specs[i], o->dtype);
        double ts = now_s();
        rc = path ? write_shard(o, specs, starts[s], starts[s + 1], path) : llmq_fail("out of memory");
        done += bytes;
        if (!rc && !o->quiet)
            fprintf(stderr, "%s: [%d/%d] %s: %d tensors, %.2f GB in %.1f s\n", PROG, s + 1, nshards, fname,
                    starts[s + 1] - starts[s], (double)bytes / 1e9, now_s() - ts);
        free(path);
    }
    if (!rc && nshards > 1)
        rc = write_index(o->out_dir, specs, count, starts, nshards, o->dtype);
    if (!rc)
        remove_stale_weights(o->out_dir, nshards);
    if (!rc && !o->quiet)
        fprintf(stderr, "%s: %d tensors, %.2f GB of weights in %.1f s (%.2f GB/s)\n", PROG, count,
                (double)done / 1e9, now_s() - t0, (double)done / 1e9 / (now_s() - t0 + 1e-9));
    free(specs);
    free(starts);
    return rc;
}

/* ---- command line ---- */

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: %s --out DIR [--preset 7b|tiny] [--hidden H] [--layers L] [--heads N]\n"
            "          [--kv-heads N] [--ffn F] [--vocab V] [--ctx C] [--seed S]\n"
            "          [--dtype f16|bf16|f32] [--tokenizer SRC_DIR|none] [--shard-gb G]\n"
            "          [--threads T] [--quiet]\n"
            "Writes a synthetic Hugging Face Llama directory (random weights).\n"
            "  --preset      tiny (default: hidden 128, 2 layers, 4 heads, 2 kv heads, ffn 384)\n"
            "                or 7b (Llama-2-7B shapes: 4096, 32, 32, 32, 11008)\n"
            "  --tokenizer   directory with tokenizer.json and tokenizer_config.json\n"
            "                (default $LLMQ_TEST_DATA/tokenizers/llama-spm, 32000 tokens)\n"
            "  --shard-gb    largest shard in GB (1e9 bytes; default 4; 0 = one file)\n",
            PROG);
}

static int parse_int(const char *opt, const char *s, long min, long max, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min || v > max)
        return llmq_fail("%s: '%s' is not an integer in %ld..%ld", opt, s, min, max);
    *out = v;
    return 0;
}

/* Explicit sizes override the preset whatever the argument order, so they
 * are collected apart (-1 = not given) and applied after the loop. */
static int parse_options(int argc, char **argv, options *o)
{
    enum { O_OUT = 256, O_PRESET, O_HIDDEN, O_LAYERS, O_HEADS, O_KV, O_FFN, O_VOCAB, O_CTX, O_SEED, O_DTYPE,
           O_TOK, O_SHARD, O_THREADS, O_QUIET, O_HELP };
    static const struct option longopts[] = {
        {"out", 1, 0, O_OUT},       {"preset", 1, 0, O_PRESET}, {"hidden", 1, 0, O_HIDDEN},
        {"layers", 1, 0, O_LAYERS}, {"heads", 1, 0, O_HEADS},   {"kv-heads", 1, 0, O_KV},
        {"ffn", 1, 0, O_FFN},       {"vocab", 1, 0, O_VOCAB},   {"ctx", 1, 0, O_CTX},
        {"seed", 1, 0, O_SEED},     {"dtype", 1, 0, O_DTYPE},   {"tokenizer", 1, 0, O_TOK},
        {"shard-gb", 1, 0, O_SHARD}, {"threads", 1, 0, O_THREADS}, {"quiet", 0, 0, O_QUIET},
        {"help", 0, 0, O_HELP},     {0, 0, 0, 0},
    };
    const char *data = getenv("LLMQ_TEST_DATA");
    static char default_tok[4096];
    snprintf(default_tok, sizeof default_tok, "%s/tokenizers/llama-spm", data && *data ? data : "tests/data");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (options){.shape = PRESET_TINY, .seed = 0, .dtype = LLMQ_F16, .tokenizer_dir = default_tok,
                   .shard_gb = 4.0, .threads = ncpu > 0 ? (int)ncpu : 1};
    long given[7] = {-1, -1, -1, -1, -1, -1, -1}; /* hidden layers heads kv ffn vocab ctx */
    static const char *size_opt[7] = {"--hidden", "--layers", "--heads", "--kv-heads", "--ffn", "--vocab", "--ctx"};
    static const long size_max[7] = {1 << 20, 4096, 1 << 16, 1 << 16, 1 << 22, 1 << 24, 1 << 24};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int rc = 0;
        long v;
        char *end;
        switch (c) {
        case O_OUT: o->out_dir = optarg; break;
        case O_PRESET:
            if (strcmp(optarg, "7b") == 0)
                o->shape = PRESET_7B;
            else if (strcmp(optarg, "tiny") == 0)
                o->shape = PRESET_TINY;
            else
                rc = llmq_fail("--preset: '%s' is not 7b or tiny", optarg);
            break;
        case O_HIDDEN: case O_LAYERS: case O_HEADS: case O_KV: case O_FFN: case O_VOCAB: case O_CTX: {
            int k = c - O_HIDDEN;
            rc = parse_int(size_opt[k], optarg, 1, size_max[k], &given[k]);
            break;
        }
        case O_SEED:
            o->seed = strtoull(optarg, &end, 0);
            if (!*optarg || *end)
                rc = llmq_fail("--seed: '%s' is not an integer", optarg);
            break;
        case O_DTYPE:
            if (strcmp(optarg, "f16") == 0)
                o->dtype = LLMQ_F16;
            else if (strcmp(optarg, "bf16") == 0)
                o->dtype = LLMQ_BF16;
            else if (strcmp(optarg, "f32") == 0)
                o->dtype = LLMQ_F32;
            else
                rc = llmq_fail("--dtype: '%s' is not f16, bf16 or f32", optarg);
            break;
        case O_TOK: o->tokenizer_dir = strcmp(optarg, "none") == 0 ? NULL : optarg; break;
        case O_SHARD:
            o->shard_gb = strtod(optarg, &end);
            if (!*optarg || *end || !(o->shard_gb >= 0) || o->shard_gb > 1e6)
                rc = llmq_fail("--shard-gb: '%s' is not a size in GB", optarg);
            break;
        case O_THREADS:
            rc = parse_int("--threads", optarg, 1, 1024, &v);
            o->threads = (int)v;
            break;
        case O_QUIET: o->quiet = 1; break;
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); return llmq_fail("bad command line");
        }
        if (rc)
            return -1;
    }
    if (optind < argc)
        return llmq_fail("unexpected argument '%s'", argv[optind]);
    if (!o->out_dir)
        return llmq_fail("--out DIR is required");
    int *fields[7] = {&o->shape.hidden, &o->shape.layers, &o->shape.heads, &o->shape.kv_heads,
                      &o->shape.ffn,    &o->shape.vocab,  &o->shape.ctx};
    for (int k = 0; k < 7; k++)
        if (given[k] > 0)
            *fields[k] = (int)given[k];
    const model_shape *m = &o->shape;
    if (m->hidden % m->heads)
        return llmq_fail("--hidden %d is not a multiple of --heads %d", m->hidden, m->heads);
    if (m->heads % m->kv_heads)
        return llmq_fail("--heads %d is not a multiple of --kv-heads %d", m->heads, m->kv_heads);
    return 0;
}

static int check_tokenizer_fits(const options *o)
{
    if (!o->tokenizer_dir)
        return 0;
    char *path = llmq_path_join(o->tokenizer_dir, "tokenizer.json");
    int size = 0, rc = path ? tokenizer_size(path, &size) : llmq_fail("out of memory");
    if (rc && path && !llmq_file_exists(path))
        llmq_wrap("tokenizer (set LLMQ_TEST_DATA, or pass --tokenizer DIR or --tokenizer none)");
    if (!rc && size > o->shape.vocab)
        rc = llmq_fail("%s has %d tokens but the model's vocabulary is %d (--vocab, or --tokenizer none)", path,
                       size, o->shape.vocab);
    free(path);
    return rc;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_options(argc, argv, &o) || check_tokenizer_fits(&o) || llmq_mkdirs(o.out_dir)) {
        llmq_print_error(PROG);
        return 1;
    }
    const model_shape *m = &o.shape;
    if (!o.quiet)
        fprintf(stderr,
                "%s: %s: hidden %d, %d layers, %d heads (%d kv), ffn %d, vocab %d, ctx %d, %s, seed %llu, "
                "%d threads\n",
                PROG, o.out_dir, m->hidden, m->layers, m->heads, m->kv_heads, m->ffn, m->vocab, m->ctx,
                llmq_dtype_name(o.dtype), (unsigned long long)o.seed, o.threads);
    if (write_model(&o) || write_config(&o) || (o.tokenizer_dir && copy_tokenizer(&o))) {
        llmq_print_error(PROG);
        return 1;
    }
    return 0;
}
