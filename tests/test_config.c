/* config.json parsing: the shipped model, the Llama family's variants, and
 * refusals by name. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/testutil.h"
#include <unistd.h>

#include "formats/config.h"
#include "src/error.h"
#include "src/fileio.h"
#include "src/rope.h"

static char g_dir[256];


static void write_config(const char *json)
{
    char *p = llmq_path_join(g_dir, "config.json");
    assert_int_equal(llmq_write_file(p, json, strlen(json)), 0);
    free(p);
}

static void test_stories260k(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/stories260K", test_data_dir());
    llmq_config c;
    assert_int_equal(config_load(&c, dir), 0);
    assert_string_equal(c.model_type, "llama");
    assert_int_equal(c.hidden, 64);
    assert_int_equal(c.ffn, 172);
    assert_int_equal(c.n_layers, 5);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.n_kv, 4);
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(c.vocab, 512);
    assert_int_equal(c.max_pos, 512);
    assert_true(c.tied);
    assert_false(c.attn_bias);
    assert_int_equal(c.dtype, LLMQ_F32);
    assert_true(fabsf(c.eps - 1e-5f) < 1e-12f);
}

static void test_qwen2_and_defaults(void **state)
{
    (void)state;
    write_config("{\"model_type\":\"qwen2\",\"hidden_size\":896,\"intermediate_size\":4864,"
                 "\"num_hidden_layers\":24,\"num_attention_heads\":14,\"num_key_value_heads\":2,"
                 "\"vocab_size\":151936,\"rope_theta\":1000000.0,\"tie_word_embeddings\":true,"
                 "\"torch_dtype\":\"bfloat16\",\"sliding_window\":32768,\"use_sliding_window\":false}");
    llmq_config c;
    assert_int_equal(config_load(&c, g_dir), 0);
    assert_int_equal(c.head_dim, 64); /* hidden / heads */
    assert_true(c.attn_bias);
    assert_false(c.o_bias);
    assert_int_equal(c.sliding_window, 0);
    assert_int_equal(c.dtype, LLMQ_BF16);
    assert_true(c.rope_theta == 1000000.0f);
}

static void test_llama3_rope(void **state)
{
    (void)state;
    write_config("{\"model_type\":\"llama\",\"hidden_size\":4096,\"intermediate_size\":14336,"
                 "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,"
                 "\"vocab_size\":128256,\"rope_theta\":500000.0,\"max_position_embeddings\":131072,"
                 "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                 "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}}");
    llmq_config c;
    assert_int_equal(config_load(&c, g_dir), 0);
    assert_true(c.rope_llama3);
    /* Position 1 of the table holds cos/sin of the frequencies themselves.
     * Band edges (wavelen 2048 and 8192 tokens): i = 0 is short (kept),
     * the last i (wavelen ~ 2.6M) is divided by 8, and one in the middle band
     * is interpolated: check all three against the formula in double. */
    float *t = malloc(sizeof(float) * 2 * 128);
    rope_table(&c, 2, t);
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < 64; i++) {
        double f = pow(500000.0, -2.0 * i / 128), wl = 2 * pi / f, g;
        if (wl < 8192.0 / 4)
            g = f;
        else if (wl > 8192.0)
            g = f / 8;
        else {
            double s = (8192.0 / wl - 1) / (4 - 1);
            g = (1 - s) * f / 8 + s * f;
        }
        assert_true(fabs(t[128 + i] - cos(g)) < 2e-6);
        assert_true(fabs(t[128 + 64 + i] - sin(g)) < 2e-6);
    }
    free(t);
}

static void test_refusals(void **state)
{
    (void)state;
    llmq_config c;
    write_config("{\"model_type\":\"gpt2\",\"n_embd\":768}");
    assert_int_equal(config_load(&c, g_dir), -1);
    assert_non_null(strstr(llmq_last_error(), "gpt2"));
    assert_non_null(strstr(llmq_last_error(), "config.json"));

    write_config("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,"
                 "\"num_attention_heads\":8,\"vocab_size\":10,\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4}}");
    assert_int_equal(config_load(&c, g_dir), -1);
    assert_non_null(strstr(llmq_last_error(), "yarn"));

    write_config("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":1,\"num_hidden_layers\":1,"
                 "\"num_attention_heads\":8,\"num_key_value_heads\":3,\"vocab_size\":10}");
    assert_int_equal(config_load(&c, g_dir), -1);
    assert_non_null(strstr(llmq_last_error(), "num_key_value_heads"));

    write_config("{\"model_type\":\"llama\",\"hidden_size\":64,\"hidden_act\":\"gelu\",\"intermediate_size\":1,"
                 "\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":10}");
    assert_int_equal(config_load(&c, g_dir), -1);
    assert_non_null(strstr(llmq_last_error(), "gelu"));

    write_config("{\"model_type\": \"llama\", \"hidden_size\": 64,");
    assert_int_equal(config_load(&c, g_dir), -1);
    assert_non_null(strstr(llmq_last_error(), "invalid JSON"));

    write_config("{\"model_type\":\"llama\",\"hidden_size\":-4,\"intermediate_size\":1,\"num_hidden_layers\":1,"
                 "\"num_attention_heads\":8,\"vocab_size\":10}");
    assert_int_equal(config_load(&c, g_dir), -1);
    assert_non_null(strstr(llmq_last_error(), "hidden_size"));

    assert_int_equal(config_load(&c, "/nonexistent/model"), -1);
    assert_non_null(strstr(llmq_last_error(), "/nonexistent/model/config.json"));
}

static void test_gptq_quantization_config(void **state)
{
    (void)state;
    write_config("{\"model_type\":\"mistral\",\"hidden_size\":4096,\"intermediate_size\":14336,"
                 "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,"
                 "\"vocab_size\":32000,\"sliding_window\":4096,\"quantization_config\":{\"quant_method\":\"gptq\","
                 "\"bits\":4,\"group_size\":128,\"desc_act\":true,\"sym\":true,\"checkpoint_format\":\"gptq\"}}");
    llmq_config c;
    assert_int_equal(config_load(&c, g_dir), 0);
    assert_int_equal(c.sliding_window, 4096);
    assert_string_equal(c.quant_method, "gptq");
    assert_int_equal(c.q_bits, 4);
    assert_int_equal(c.q_group, 128);
    assert_true(c.q_desc_act);
    assert_string_equal(c.q_checkpoint_format, "gptq");
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/llmq_test_config_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char *p = llmq_path_join(g_dir, "config.json");
    remove(p);
    free(p);
    return rmdir(g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k),       cmocka_unit_test(test_qwen2_and_defaults),
        cmocka_unit_test(test_llama3_rope),       cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_gptq_quantization_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
