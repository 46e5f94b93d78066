/* Tests for formats/safetensors.c: the real stories260K file, write -> read
 * round trips, determinism, sharded directories, and one malformed file per
 * rule the reader enforces (each must fail with a message naming the file and,
 * where there is one, the tensor).
 *
 * Build and run (from the repository root):
 *   gcc -std=c11 -D_GNU_SOURCE -Wall -Wextra -g -fsanitize=address,undefined -I. \
 *       tests/test_safetensors.c formats/safetensors.c src/dtype.c src/error.c src/fileio.c \
 *       -lcjson -lcmocka -lm -o /tmp/test_safetensors
 *   LLMQ_TEST_DATA=tests/data /tmp/test_safetensors
 */
#include <dirent.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/testutil.h"

#include "formats/safetensors.h"
#include "src/error.h"
#include "src/fileio.h"

static char g_tmp[256];         /* mkdtemp directory for this run */
static const char *g_data_dir; /* $LLMQ_TEST_DATA */

/* ---- helpers ---- */

static char *tmp_path(const char *name)
{
    char *p = llmq_path_join(g_tmp, name);
    assert_non_null(p);
    return p;
}

static char *real_model_path(void)
{
    char *p = llmq_path_join(g_data_dir, "models/stories260K/model.safetensors");
    assert_non_null(p);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (len)
        assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static uint8_t *read_bytes(const char *path, size_t *len)
{
    char *data;
    if (llmq_read_file(path, &data, len) != 0)
        fail_msg("%s", llmq_last_error());
    return (uint8_t *)data;
}

/* A safetensors file from header text and data bytes. */
static void write_st(const char *path, const char *header, const void *data, size_t data_len)
{
    size_t n = strlen(header);
    uint8_t *buf = malloc(8 + n + data_len + 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    if (data_len)
        memcpy(buf + 8 + n, data, data_len);
    write_bytes(path, buf, 8 + n + data_len);
    free(buf);
}

static void expect_contains(const char *msg, const char *part)
{
    if (part && !strstr(msg, part))
        fail_msg("message \"%s\" does not contain \"%s\"", msg, part);
}

/* st_open(path) must fail, leave *out NULL, and say path (and `part`). */
static void expect_open_fails(const char *path, const char *part)
{
    st_file *f = (st_file *)1;
    llmq_clear_error();
    int rc = st_open(&f, path);
    if (rc == 0) {
        st_close(f);
        fail_msg("%s: opened, but should have been rejected (%s)", path, part ? part : "");
    }
    assert_int_equal(rc, -1);
    assert_null(f);
    expect_contains(llmq_last_error(), path);
    expect_contains(llmq_last_error(), part);
}

static st_file *open_ok(const char *path)
{
    st_file *f = NULL;
    if (st_open(&f, path) != 0)
        fail_msg("%s", llmq_last_error());
    return f;
}

static int count_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static int exists_in(const char *dir, const char *name)
{
    char *p = llmq_path_join(dir, name);
    int e = llmq_file_exists(p);
    free(p);
    return e;
}

/* A fresh empty directory under g_tmp. */
static char *fresh_dir(const char *name)
{
    char *d = tmp_path(name);
    llmq_remove_tree(d);
    assert_int_equal(llmq_mkdirs(d), 0);
    return d;
}

/* ---- the real model ---- */

static void test_real_model(void **state)
{
    (void)state;
    char *path = real_model_path();
    st_file *f = open_ok(path);
    assert_int_equal(st_count(f), 47); /* embed + 5 layers x 9 + norm (tied: no lm_head) */
    const st_tensor *emb = st_find(f, "model.embed_tokens.weight");
    assert_non_null(emb);
    assert_int_equal(emb->dtype, LLMQ_F32);
    assert_int_equal(emb->ndim, 2);
    assert_int_equal(emb->shape[0], 512);
    assert_int_equal(emb->shape[1], 64);
    assert_int_equal(emb->numel, 512 * 64);
    assert_int_equal(emb->nbytes, 512 * 64 * 4);
    assert_string_equal(emb->file, path);
    assert_ptr_equal(st_at(f, 0), emb);
    assert_null(st_find(f, "lm_head.weight"));
    assert_null(st_find(f, "model.embed_tokens"));
    assert_null(st_at(f, 47));
    assert_string_equal(st_metadata(f, "format"), "pt");
    assert_null(st_metadata(f, "nope"));

    const st_tensor *down = st_find(f, "model.layers.4.mlp.down_proj.weight");
    assert_non_null(down);
    assert_int_equal(down->shape[0], 64);
    assert_int_equal(down->shape[1], 172);

    const st_tensor *norm = st_find(f, "model.norm.weight");
    assert_non_null(norm);
    float v[64];
    assert_int_equal(st_read_f32(norm, v), 0);
    assert_memory_equal(v, norm->data, sizeof v);
    st_close(f);

    st_model *m = NULL;
    char *dir = llmq_path_join(g_data_dir, "models/stories260K");
    if (st_model_open(&m, dir) != 0)
        fail_msg("%s", llmq_last_error());
    assert_int_equal(st_model_count(m), 47);
    assert_non_null(st_model_find(m, "model.layers.2.self_attn.k_proj.weight"));
    assert_string_equal(st_model_at(m, 0)->name, "model.embed_tokens.weight");
    st_model_close(m);
    free(dir);
    free(path);
}

/* ---- round trip ---- */

typedef struct {
    float f32[15];
    uint16_t f16[7], bf16[6];
    int32_t i32[4];
    uint8_t u8[5];
    double f64[3];
    float scalar;
} sample_data;

static void fill_sample(sample_data *d)
{
    for (int i = 0; i < 15; i++)
        d->f32[i] = (float)i * 0.25f - 1.0f;
    for (int i = 0; i < 7; i++)
        d->f16[i] = llmq_f32_to_f16((float)i - 3.5f);
    for (int i = 0; i < 6; i++)
        d->bf16[i] = llmq_f32_to_bf16((float)i * 1.5f);
    for (int i = 0; i < 4; i++)
        d->i32[i] = -1000 * i;
    for (int i = 0; i < 5; i++)
        d->u8[i] = (uint8_t)(250 + i);
    for (int i = 0; i < 3; i++)
        d->f64[i] = 1.0 / (i + 3);
    d->scalar = 42.0f;
}

/* The U8 tensor (5 bytes) comes before F16/F64 ones on purpose: their data
 * is then misaligned in the file, which the reader must handle. */
static st_writer *sample_writer(const sample_data *d)
{
    st_writer *w = st_writer_new();
    assert_non_null(w);
    const int64_t s_f32[2] = {3, 5}, s_u8[1] = {5}, s_f16[1] = {7}, s_bf16[2] = {2, 3}, s_i32[1] = {4},
                  s_f64[1] = {3}, s_empty[2] = {0, 4};
    assert_int_equal(st_writer_add(w, "a.f32", LLMQ_F32, 2, s_f32, d->f32), 0);
    assert_int_equal(st_writer_add(w, "b.u8", LLMQ_U8, 1, s_u8, d->u8), 0);
    assert_int_equal(st_writer_add(w, "c.f16", LLMQ_F16, 1, s_f16, d->f16), 0);
    assert_int_equal(st_writer_add(w, "d.bf16", LLMQ_BF16, 2, s_bf16, d->bf16), 0);
    assert_int_equal(st_writer_add(w, "e.i32", LLMQ_I32, 1, s_i32, d->i32), 0);
    assert_int_equal(st_writer_add(w, "f.f64", LLMQ_F64, 1, s_f64, d->f64), 0);
    assert_int_equal(st_writer_add(w, "g.empty", LLMQ_F32, 2, s_empty, NULL), 0);
    assert_int_equal(st_writer_add(w, "h.scalar", LLMQ_F32, 0, NULL, &d->scalar), 0);
    assert_int_equal(st_writer_meta(w, "format", "pt"), 0);
    assert_int_equal(st_writer_meta(w, "quote\"back\\slash", "line\nbreak\ttab \xc3\xa9"), 0);
    assert_int_equal(st_writer_meta(w, "format", "pt"), 0); /* replaced, not added twice */
    return w;
}

static void check_tensor(const st_file *f, const char *name, llmq_dtype dt, int ndim, const int64_t *shape,
                         const void *data, size_t nbytes)
{
    const st_tensor *t = st_find(f, name);
    if (!t)
        fail_msg("tensor %s missing", name);
    assert_string_equal(t->name, name);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        assert_int_equal(t->shape[i], shape[i]);
    assert_int_equal(t->nbytes, nbytes);
    if (nbytes)
        assert_memory_equal(t->data, data, nbytes);
}

static void test_roundtrip(void **state)
{
    (void)state;
    sample_data d;
    fill_sample(&d);
    st_writer *w = sample_writer(&d);
    size_t want_bytes = sizeof d.f32 + sizeof d.u8 + sizeof d.f16 + sizeof d.bf16 + sizeof d.i32 + sizeof d.f64 + 4;
    assert_int_equal(st_writer_bytes(w), want_bytes);
    char *path = tmp_path("roundtrip.safetensors");
    if (st_writer_commit(w, path) != 0)
        fail_msg("%s", llmq_last_error());
    st_writer_free(w);

    size_t len;
    uint8_t *raw = read_bytes(path, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | raw[i];
    assert_int_equal(n % 8, 0); /* data area 8-byte aligned */
    assert_int_equal(len, 8 + n + want_bytes);
    assert_int_equal(raw[8], '{');
    free(raw);

    st_file *f = open_ok(path);
    assert_int_equal(st_count(f), 8);
    const char *order[] = {"a.f32", "b.u8", "c.f16", "d.bf16", "e.i32", "f.f64", "g.empty", "h.scalar"};
    for (int i = 0; i < 8; i++)
        assert_string_equal(st_at(f, i)->name, order[i]);
    check_tensor(f, "a.f32", LLMQ_F32, 2, (int64_t[]){3, 5}, d.f32, sizeof d.f32);
    check_tensor(f, "b.u8", LLMQ_U8, 1, (int64_t[]){5}, d.u8, sizeof d.u8);
    check_tensor(f, "c.f16", LLMQ_F16, 1, (int64_t[]){7}, d.f16, sizeof d.f16);
    check_tensor(f, "d.bf16", LLMQ_BF16, 2, (int64_t[]){2, 3}, d.bf16, sizeof d.bf16);
    check_tensor(f, "e.i32", LLMQ_I32, 1, (int64_t[]){4}, d.i32, sizeof d.i32);
    check_tensor(f, "f.f64", LLMQ_F64, 1, (int64_t[]){3}, d.f64, sizeof d.f64);
    check_tensor(f, "g.empty", LLMQ_F32, 2, (int64_t[]){0, 4}, NULL, 0);
    check_tensor(f, "h.scalar", LLMQ_F32, 0, NULL, &d.scalar, 4);
    assert_int_equal(st_find(f, "g.empty")->numel, 0);
    assert_int_equal(st_find(f, "h.scalar")->numel, 1);
    assert_string_equal(st_metadata(f, "format"), "pt");
    assert_string_equal(st_metadata(f, "quote\"back\\slash"), "line\nbreak\ttab \xc3\xa9");
    st_close(f);
    free(path);
}

static void test_read_f32(void **state)
{
    (void)state;
    sample_data d;
    fill_sample(&d);
    st_writer *w = sample_writer(&d);
    char *path = tmp_path("convert.safetensors");
    assert_int_equal(st_writer_commit(w, path), 0);
    st_writer_free(w);
    st_file *f = open_ok(path);

    float out[16];
    const st_tensor *t = st_find(f, "c.f16");
    assert_true((uintptr_t)t->data % 2 != 0); /* the case the bounce buffer is for */
    assert_int_equal(st_read_f32(t, out), 0);
    for (int i = 0; i < 7; i++)
        assert_true(out[i] == (float)i - 3.5f);
    assert_int_equal(st_read_f32(st_find(f, "d.bf16"), out), 0);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == (float)i * 1.5f);
    assert_int_equal(st_read_f32(st_find(f, "f.f64"), out), 0);
    for (int i = 0; i < 3; i++)
        assert_true(out[i] == (float)(1.0 / (i + 3)));
    assert_int_equal(st_read_f32(st_find(f, "a.f32"), out), 0);
    assert_memory_equal(out, d.f32, sizeof d.f32);
    assert_int_equal(st_read_f32(st_find(f, "g.empty"), out), 0);

    llmq_clear_error();
    assert_int_equal(st_read_f32(st_find(f, "e.i32"), out), -1);
    expect_contains(llmq_last_error(), "e.i32");
    expect_contains(llmq_last_error(), path);
    st_close(f);
    free(path);
}

static void test_deterministic(void **state)
{
    (void)state;
    sample_data d;
    fill_sample(&d);
    char *p1 = tmp_path("det1.safetensors"), *p2 = tmp_path("det2.safetensors");
    st_writer *w = sample_writer(&d);
    assert_int_equal(st_writer_commit(w, p1), 0);
    st_writer_free(w);
    w = sample_writer(&d);
    assert_int_equal(st_writer_commit(w, p2), 0);
    assert_int_equal(st_writer_commit(w, p2), 0); /* committing twice is fine too */
    st_writer_free(w);
    size_t n1, n2;
    uint8_t *b1 = read_bytes(p1, &n1), *b2 = read_bytes(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b1);
    free(b2);
    free(p1);
    free(p2);
}

static void test_empty_file(void **state)
{
    (void)state;
    char *path = tmp_path("empty.safetensors");
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_commit(w, path), 0);
    st_writer_free(w);
    st_file *f = open_ok(path);
    assert_int_equal(st_count(f), 0);
    assert_null(st_find(f, "x"));
    assert_null(st_metadata(f, "format"));
    st_close(f);
    free(path);
}

/* ---- writer input checks ---- */

static void test_writer_rejects(void **state)
{
    (void)state;
    float x[4] = {0};
    const int64_t s4[1] = {4}, neg[1] = {-1}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    const int64_t huge[3] = {1ll << 40, 1ll << 40, 1ll << 40};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add(w, "x", LLMQ_F32, 1, s4, x), 0);
    assert_int_equal(st_writer_add(w, "x", LLMQ_F32, 1, s4, x), -1);
    expect_contains(llmq_last_error(), "'x'");
    assert_int_equal(st_writer_add(w, "bad\nname", LLMQ_F32, 1, s4, x), -1);
    assert_int_equal(st_writer_add(w, "bad\x7fname", LLMQ_F32, 1, s4, x), -1);
    assert_int_equal(st_writer_add(w, "bad\xffutf8", LLMQ_F32, 1, s4, x), -1);
    assert_int_equal(st_writer_add(w, "", LLMQ_F32, 1, s4, x), -1);
    assert_int_equal(st_writer_add(w, "__metadata__", LLMQ_F32, 1, s4, x), -1);
    assert_int_equal(st_writer_add(w, "neg", LLMQ_F32, 1, neg, x), -1);
    expect_contains(llmq_last_error(), "'neg'");
    assert_int_equal(st_writer_add(w, "nine", LLMQ_F32, 9, s9, x), -1);
    assert_int_equal(st_writer_add(w, "huge", LLMQ_F32, 3, huge, x), -1);
    assert_int_equal(st_writer_add(w, "null", LLMQ_F32, 1, s4, NULL), -1);
    assert_int_equal(st_writer_add(w, "dtype", (llmq_dtype)99, 1, s4, x), -1);
    assert_int_equal(st_writer_meta(w, "k", "bad\xc3"), -1);
    assert_int_equal(st_writer_bytes(w), 16);
    st_writer_free(w);
}

/* ---- sharded directories ---- */

static void write_text(const char *dir, const char *name, const char *text)
{
    char *p = llmq_path_join(dir, name);
    write_bytes(p, text, strlen(text));
    free(p);
}


#define NSHARD_T 6

static st_writer *shard_writer(float data[NSHARD_T][250])
{
    st_writer *w = st_writer_new();
    const int64_t shape[2] = {25, 10};
    for (int i = 0; i < NSHARD_T; i++) {
        for (int j = 0; j < 250; j++)
            data[i][j] = (float)(i * 1000 + j);
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.weight", i);
        assert_int_equal(st_writer_add(w, name, LLMQ_F32, 2, shape, data[i]), 0);
    }
    assert_int_equal(st_writer_meta(w, "format", "pt"), 0);
    return w;
}

static void check_model_dir(const char *dir, float data[NSHARD_T][250], int nfiles_expected)
{
    st_model *m = NULL;
    if (st_model_open(&m, dir) != 0)
        fail_msg("%s", llmq_last_error());
    assert_int_equal(st_model_count(m), NSHARD_T);
    int nfiles = 1; /* distinct files, counted where the file changes */
    for (int i = 0; i < NSHARD_T; i++) {
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.weight", i);
        const st_tensor *t = st_model_find(m, name);
        assert_non_null(t);
        assert_ptr_equal(st_model_at(m, i), t); /* shard order, then header order = add order */
        assert_memory_equal(t->data, data[i], sizeof data[i]);
        if (i > 0 && strcmp(t->file, st_model_at(m, i - 1)->file) != 0)
            nfiles++;
    }
    assert_int_equal(nfiles, nfiles_expected);
    assert_null(st_model_find(m, "nope"));
    st_model_close(m);
}

static void test_sharded(void **state)
{
    (void)state;
    static float data[NSHARD_T][250]; /* 1000 bytes each */
    char *dir = fresh_dir("sharded");
    st_writer *w = shard_writer(data);

    /* 2500-byte limit: two tensors per shard -> 3 shards. */
    if (st_write_sharded(w, dir, 2500) != 0)
        fail_msg("%s", llmq_last_error());
    assert_true(exists_in(dir, "model-00001-of-00003.safetensors"));
    assert_true(exists_in(dir, "model-00003-of-00003.safetensors"));
    assert_true(exists_in(dir, "model.safetensors.index.json"));
    assert_false(exists_in(dir, "model.safetensors"));
    assert_int_equal(count_dir_entries(dir), 4);
    check_model_dir(dir, data, 3);

    char *shard2 = llmq_path_join(dir, "model-00002-of-00003.safetensors");
    st_file *f = open_ok(shard2);
    assert_int_equal(st_count(f), 2);
    assert_string_equal(st_metadata(f, "format"), "pt");
    st_close(f);
    free(shard2);

    char *index = llmq_path_join(dir, "model.safetensors.index.json");
    char *text;
    assert_int_equal(llmq_read_file(index, &text, NULL), 0);
    expect_contains(text, "\"total_size\": 6000");
    expect_contains(text, "\"model.layers.5.weight\": \"model-00003-of-00003.safetensors\"");
    free(text);

    /* Deterministic: the same writer gives the same index and shards. */
    size_t n1, n2;
    uint8_t *before = read_bytes(index, &n1);
    assert_int_equal(st_write_sharded(w, dir, 2500), 0);
    uint8_t *after = read_bytes(index, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(before, after, n1);
    free(before);
    free(after);

    /* A smaller limit: 6 shards; the old -of-00003 files must go. */
    assert_int_equal(st_write_sharded(w, dir, 1000), 0);
    assert_int_equal(count_dir_entries(dir), 7);
    assert_false(exists_in(dir, "model-00001-of-00003.safetensors"));
    check_model_dir(dir, data, 6);

    /* Single file: index and shards go. A foreign file stays. */
    write_text(dir, "config.json", "{}");
    assert_int_equal(st_write_sharded(w, dir, 0), 0);
    assert_true(exists_in(dir, "model.safetensors"));
    assert_true(exists_in(dir, "config.json"));
    assert_int_equal(count_dir_entries(dir), 2);
    check_model_dir(dir, data, 1);
    assert_int_equal(st_write_sharded(w, dir, 6000), 0); /* fits: still single */
    assert_int_equal(count_dir_entries(dir), 2);

    /* And back to shards: model.safetensors goes. */
    assert_int_equal(st_write_sharded(w, dir, 5999), 0);
    assert_false(exists_in(dir, "model.safetensors"));
    assert_true(exists_in(dir, "model-00002-of-00002.safetensors"));
    check_model_dir(dir, data, 2);

    st_writer_free(w);
    free(index);
    free(dir);
}

static void expect_model_fails(const char *dir, const char *part1, const char *part2)
{
    st_model *m = (st_model *)1;
    llmq_clear_error();
    if (st_model_open(&m, dir) == 0) {
        st_model_close(m);
        fail_msg("%s: opened, but should have been rejected", dir);
    }
    assert_null(m);
    expect_contains(llmq_last_error(), part1);
    expect_contains(llmq_last_error(), part2);
}

static void test_model_errors(void **state)
{
    (void)state;
    static float data[NSHARD_T][250];
    char *dir = fresh_dir("model_errors");
    expect_model_fails(dir, dir, "model.safetensors");
    char *missing = tmp_path("no_such_dir");
    expect_model_fails(missing, missing, NULL);
    free(missing);

    st_writer *w = shard_writer(data);
    assert_int_equal(st_write_sharded(w, dir, 2500), 0);
    st_writer_free(w);

    /* The index names a tensor its shard does not hold. */
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"model.layers.0.weight\":\"model-00001-of-00003.safetensors\","
               "\"ghost.weight\":\"model-00002-of-00003.safetensors\"}}");
    expect_model_fails(dir, "ghost.weight", "model-00002-of-00003.safetensors");
    /* Only the listed tensors are visible. */
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"model.layers.3.weight\":\"model-00002-of-00003.safetensors\"}}");
    st_model *m = NULL;
    assert_int_equal(st_model_open(&m, dir), 0);
    assert_int_equal(st_model_count(m), 1);
    assert_null(st_model_find(m, "model.layers.2.weight"));
    st_model_close(m);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"../../etc/passwd\"}}");
    expect_model_fails(dir, "model.safetensors.index.json", "'a'");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"missing.safetensors\"}}");
    expect_model_fails(dir, "missing.safetensors", NULL);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"model.layers.0.weight\":\"model-00001-of-00003.safetensors\","
               "\"model.layers.0.weight\":\"model-00001-of-00003.safetensors\"}}");
    expect_model_fails(dir, "model.safetensors.index.json", "model.layers.0.weight");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":[]}");
    expect_model_fails(dir, "model.safetensors.index.json", "weight_map");
    write_text(dir, "model.safetensors.index.json", "not json");
    expect_model_fails(dir, "model.safetensors.index.json", NULL);
    /* A broken shard: its own error, naming the shard file. */
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"model.layers.0.weight\":\"model-00001-of-00003.safetensors\"}}");
    write_text(dir, "model-00001-of-00003.safetensors", "1234567");
    expect_model_fails(dir, "model-00001-of-00003.safetensors", "too short");
    free(dir);
}

/* ---- malformed files ---- */

static void test_truncated(void **state)
{
    (void)state;
    char *src = real_model_path();
    size_t len;
    uint8_t *raw = read_bytes(src, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | raw[i];
    char *path = tmp_path("truncated.safetensors");
    size_t cuts[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 8 + n / 2, 8 + n - 1, 8 + n, 8 + n + 1, 8 + n + 1000,
                     len / 2, len - 4, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(path, raw, cuts[i]);
        expect_open_fails(path, NULL);
    }
    /* One byte too many is as wrong as one too few. */
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, raw, len);
    longer[len] = 0;
    write_bytes(path, longer, len + 1);
    expect_open_fails(path, "not covered");
    write_bytes(path, raw, len);
    st_close(open_ok(path));
    free(longer);
    free(raw);
    free(path);
    free(src);
}

static void write_with_len(const char *path, uint64_t n, const char *header)
{
    uint8_t buf[256];
    size_t hl = strlen(header);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, header, hl);
    write_bytes(path, buf, 8 + hl);
}

static void test_header_length(void **state)
{
    (void)state;
    char *path = tmp_path("hlen.safetensors");
    write_with_len(path, 0, "{}");
    expect_open_fails(path, "header length is 0");
    write_with_len(path, 100000001, "{}");
    expect_open_fails(path, "limit");
    write_with_len(path, UINT64_MAX, "{}");
    expect_open_fails(path, "limit");
    write_with_len(path, 3, "{}");
    expect_open_fails(path, "past the end");
    write_with_len(path, 2, "{}");
    st_close(open_ok(path));
    /* Not a file at all. */
    expect_open_fails(g_tmp, "not a regular file");
    char *missing = tmp_path("missing.safetensors");
    expect_open_fails(missing, NULL);
    free(missing);
    free(path);
}

typedef struct {
    const char *header;
    size_t data_len; /* bytes of (zero) data after the header */
    const char *part; /* must appear in the message (tensor name or reason) */
} bad_case;

#define T(name, dt, shape, b, e) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]}"

static const bad_case g_bad[] = {
    /* JSON-level */
    {"{\"a\":{\"dtype\":\"F32\",", 0, "not valid JSON"},
    {"{\"a\" \"b\"}", 0, "not valid JSON"},
    {"[1,2]", 0, "start with '{'"},
    {"  {}", 0, "start with '{'"},
    {"{} x", 0, "extra text"},
    {"{\"a\":1}", 0, "'a'"},
    {"{\"a\":[]}", 0, "'a'"},
    /* dtype */
    {"{" T("w", "Q4", "[1]", "0", "4") "}", 4, "unknown dtype"},
    {"{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w': missing \"dtype\""},
    {"{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'"},
    {"{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "twice"},
    /* shape */
    {"{" T("w", "F32", "[-1]", "0", "4") "}", 4, "'w': shape[0] is negative"},
    {"{" T("w", "F32", "[2.5]", "0", "10") "}", 10, "'w': shape[0] is not an integer"},
    {"{" T("w", "F32", "[\"2\"]", "0", "8") "}", 8, "'w': shape[0]"},
    {"{" T("w", "F32", "[1.0]", "0", "4") "}", 4, "1.0"},
    {"{" T("w", "F32", "[1e0]", "0", "4") "}", 4, "1e0"},
    {"{" T("w", "F32", "[01]", "0", "4") "}", 4, "01"},
    {"{" T("w", "F32", "[-0]", "0", "0") "}", 0, "-0"},
    {"{" T("w", "F32", "[1e300]", "0", "4") "}", 4, "'w': shape[0] is too large"},
    {"{" T("w", "F32", "{}", "0", "4") "}", 4, "'w': shape is not an array"},
    {"{" T("w", "F32", "[1,1,1,1,1,1,1,1,1]", "0", "4") "}", 4, "'w': shape has 9 dimensions"},
    {"{" T("w", "F32", "[4294967296,4294967296,4294967296]", "0", "4") "}", 4, "'w': element count overflows"},
    {"{" T("w", "F32", "[4611686018427387904]", "0", "4") "}", 4, "'w'"},
    /* offsets */
    {"{" T("w", "F32", "[4]", "0", "16") "}", 8, "'w': data_offsets end 16 is past the end"},
    {"{" T("w", "F32", "[0]", "8", "4") "}", 8, "'w': data_offsets begin 8 > end 4"},
    {"{" T("w", "F32", "[1]", "-4", "0") "}", 4, "'w': data_offsets begin is negative"},
    {"{" T("w", "F32", "[1]", "0.5", "4") "}", 4, "'w'"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "'w': data_offsets is not"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "'w': data_offsets is not"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "'w': missing \"data_offsets\""},
    {"{" T("w", "F32", "[1]", "0", "18446744073709551615") "}", 4, "'w'"},
    /* layout */
    {"{" T("a", "F32", "[2]", "0", "8") "," T("b", "F32", "[2]", "4", "12") "}", 12, "overlap"},
    {"{" T("a", "F32", "[2]", "0", "8") "," T("b", "F32", "[2]", "0", "8") "}", 8, "overlap"},
    {"{" T("a", "F32", "[2]", "0", "8") "," T("z", "F32", "[0]", "4", "4") "}", 8, "'z'"},
    {"{" T("a", "F32", "[2]", "0", "8") "," T("b", "F32", "[2]", "12", "20") "}", 20, "'b': hole of 4 bytes"},
    {"{" T("a", "F32", "[2]", "4", "12") "}", 12, "'a': data starts at 4"},
    {"{" T("a", "F32", "[2]", "0", "8") "}", 12, "4 bytes after the last tensor ('a')"},
    {"{}", 4, "no tensors"},
    /* the lying header: shape says 10 floats, offsets give 36 bytes */
    {"{" T("liar", "F32", "[10]", "0", "36") "}", 36, "'liar': data_offsets give 36 bytes"},
    {"{" T("liar", "F16", "[10]", "0", "40") "}", 40, "'liar'"},
    /* duplicate names: cJSON keeps both */
    {"{" T("dup", "F32", "[1]", "0", "4") "," T("dup", "F32", "[1]", "4", "8") "}", 8, "'dup': name appears twice"},
    /* metadata */
    {"{\"__metadata__\":{\"k\":1}}", 0, "\"k\""},
    {"{\"__metadata__\":[\"k\"]}", 0, "__metadata__ is not an object"},
    {"{\"__metadata__\":\"pt\"}", 0, "__metadata__"},
    {"{\"__metadata__\":null}", 0, "__metadata__"},
    {"{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "\"k\" appears twice"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice"},
    {"{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, "\"k\""},
    /* text the JSON grammar or UTF-8 forbids, which cJSON lets through */
    {"{\"__metadata__\":{\"k\":\"a\tb\"}}", 0, "control character"},
    {"{\"__metadata__\":{\"k\":\"\xff\"}}", 0, "UTF-8"},
    {"{\"__metadata__\":{\"k\":\"\xed\xa0\x80\"}}", 0, "UTF-8"}, /* a surrogate */
    {"{\"__metadata__\":{\"k\":\"\xc0\xaf\"}}", 0, "UTF-8"}, /* overlong '/' */
    {"{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, "u0000"},
};

/* Headers that look odd but are valid. */
static const bad_case g_good[] = {
    {"{}      ", 0, NULL}, /* space padding, as writers add */
    {"{}\n\t\r ", 0, NULL},
    {"{ \"w\" : { \"shape\" : [ 2 ] , \"data_offsets\" : [ 0 , 8 ], \"dtype\" : \"F32\", \"extra\": 1 } }", 8, NULL},
    {"{" T("b", "F32", "[1]", "4", "8") "," T("a", "F32", "[1]", "0", "4") "}", 8, NULL}, /* any header order */
    {"{" T("z", "F32", "[0]", "0", "0") "," T("a", "F32", "[1]", "0", "4") "," T("y", "U8", "[3,0]", "4", "4") "}", 4,
     NULL},
    {"{" T("s", "F64", "[]", "0", "8") "}", 8, NULL},
    {"{\"__metadata__\":{\"caf\\u00e9\":\"\xe2\x82\xac \\\"q\\\" \\n\"}}", 0, NULL},
    {"{" T("\xe2\x82\xac.weight", "BOOL", "[3]", "0", "3") "}", 3, NULL},
};

static void test_malformed(void **state)
{
    (void)state;
    char *path = tmp_path("bad.safetensors");
    uint8_t zeros[64] = {0};
    for (size_t i = 0; i < sizeof g_bad / sizeof g_bad[0]; i++) {
        write_st(path, g_bad[i].header, zeros, g_bad[i].data_len);
        expect_open_fails(path, g_bad[i].part);
    }
    for (size_t i = 0; i < sizeof g_good / sizeof g_good[0]; i++) {
        write_st(path, g_good[i].header, zeros, g_good[i].data_len);
        st_close(open_ok(path));
    }
    /* Header bytes strlen cannot carry: NUL padding (Rust rejects it too). */
    const uint8_t nul_pad[] = {4, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, 0};
    write_bytes(path, nul_pad, sizeof nul_pad);
    expect_open_fails(path, NULL);
    free(path);
}

/* The same rules through the in-memory entry point, with a data area that
 * is not aligned (header length 5) to exercise unaligned tensors. */
static void test_open_buffer(void **state)
{
    (void)state;
    const char hdr[] = "{" T("h", "F16", "[2]", "0", "4") "}";
    uint8_t img[256];
    size_t n = strlen(hdr);
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(img + 8, hdr, n);
    uint16_t h[2] = {llmq_f32_to_f16(1.5f), llmq_f32_to_f16(-2.0f)};
    memcpy(img + 8 + n, h, 4);
    st_file *f = NULL;
    if (st_open_buffer(&f, img, 8 + n + 4, "mem") != 0)
        fail_msg("%s", llmq_last_error());
    float out[2];
    assert_int_equal(st_read_f32(st_find(f, "h"), out), 0);
    assert_true(out[0] == 1.5f && out[1] == -2.0f);
    assert_string_equal(st_find(f, "h")->file, "mem");
    st_close(f);
    f = (st_file *)1;
    assert_int_equal(st_open_buffer(&f, img, 8 + n + 3, "mem"), -1);
    assert_null(f);
    expect_contains(llmq_last_error(), "mem: tensor 'h'");
}

/* ---- failed commits leave nothing ---- */

static void test_commit_failure(void **state)
{
    (void)state;
    sample_data d;
    fill_sample(&d);
    st_writer *w = sample_writer(&d);

    char *nodir = tmp_path("no/such/dir/x.safetensors");
    assert_int_equal(st_writer_commit(w, nodir), -1);
    expect_contains(llmq_last_error(), nodir);
    assert_false(llmq_file_exists(nodir));
    free(nodir);

    char *nodir2 = tmp_path("no_such_dir2");
    assert_int_equal(st_write_sharded(w, nodir2, 0), -1);
    assert_int_equal(st_write_sharded(w, nodir2, 16), -1);
    assert_false(llmq_file_exists(nodir2));
    free(nodir2);

    /* A write that fails part way (the file size limit stands in for a full
     * disk): no file, and no temporary left behind. */
    char *dir = fresh_dir("fsize");
    static float big[1 << 16];
    const int64_t shape[1] = {1 << 16};
    st_writer *wb = st_writer_new();
    assert_int_equal(st_writer_add(wb, "big", LLMQ_F32, 1, shape, big), 0);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 4096;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    char *out = llmq_path_join(dir, "model.safetensors");
    int rc = st_writer_commit(wb, out);
    int rc_sharded = st_write_sharded(wb, dir, 1000);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    assert_int_equal(rc, -1);
    assert_int_equal(rc_sharded, -1);
    expect_contains(llmq_last_error(), dir);
    assert_int_equal(count_dir_entries(dir), 0);
    free(out);
    st_writer_free(wb);

    /* A read-only directory (root ignores permissions: skip then). */
    if (geteuid() != 0) {
        char *ro = fresh_dir("readonly");
        assert_int_equal(chmod(ro, 0555), 0);
        char *p = llmq_path_join(ro, "x.safetensors");
        assert_int_equal(st_writer_commit(w, p), -1);
        expect_contains(llmq_last_error(), p);
        assert_int_equal(chmod(ro, 0755), 0);
        assert_int_equal(count_dir_entries(ro), 0);
        free(p);
        free(ro);
    }
    st_writer_free(w);
    free(dir);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    g_data_dir = test_data_dir();
    return test_make_tmpdir(g_tmp, sizeof g_tmp, "llmq_st_");
}

static int group_teardown(void **state)
{
    (void)state;
    llmq_remove_tree(g_tmp);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_model),     cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_read_f32),       cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_empty_file),     cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_sharded),        cmocka_unit_test(test_model_errors),
        cmocka_unit_test(test_truncated),      cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_malformed),      cmocka_unit_test(test_open_buffer),
        cmocka_unit_test(test_commit_failure),
    };
    return cmocka_run_group_tests_name("safetensors", tests, group_setup, group_teardown);
}
