/* fp16 / bf16 conversions against bit patterns from the IEEE 754 tables. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "src/dtype.h"

static void test_f16_known_values(void **state)
{
    (void)state;
    struct { float f; uint16_t h; } cases[] = { /* value, its nearest half */
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3c00}, {-2.0f, 0xc000}, {65504.0f, 0x7bff},
        {0.5f, 0x3800}, {6.103515625e-05f, 0x0400} /* smallest normal */, {5.960464477539063e-08f, 0x0001},
        {0.333333343f, 0x3555}, {65520.0f, 0x7c00} /* rounds to inf */, {INFINITY, 0x7c00}, {-INFINITY, 0xfc00},
        {1.0009765625f, 0x3c01}, {1.00048828125f, 0x3c00} /* tie -> even */, {1.00146484375f, 0x3c02} /* tie -> even */,
        {2.98023223876953125e-08f, 0x0000} /* half of smallest subnormal: tie -> 0 */,
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(llmq_f32_to_f16(cases[i].f), cases[i].h);
    }
    /* Values that are themselves halves come back exactly. */
    float exact[] = {0.0f, 1.0f, -2.0f, 65504.0f, 0.5f, 6.103515625e-05f, 5.960464477539063e-08f, 1.0009765625f};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        assert_true(llmq_f16_to_f32(llmq_f32_to_f16(exact[i])) == exact[i]);
    assert_true(isnan(llmq_f16_to_f32(llmq_f32_to_f16(NAN))));
}

static void test_f16_roundtrip_all(void **state)
{
    (void)state;
    /* Every finite half survives half -> float -> half. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00)
            continue;
        assert_int_equal(llmq_f32_to_f16(llmq_f16_to_f32((uint16_t)h)), h);
    }
}

static void test_bf16(void **state)
{
    (void)state;
    assert_int_equal(llmq_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(llmq_f32_to_bf16(-2.5f), 0xc020);
    /* 1 + 2^-8 is a tie between 1 and 1 + 2^-7: rounds to even (1.0). */
    assert_int_equal(llmq_f32_to_bf16(1.00390625f), 0x3f80);
    assert_int_equal(llmq_f32_to_bf16(1.01171875f), 0x3f82);
    assert_true(llmq_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(isnan(llmq_bf16_to_f32(llmq_f32_to_bf16(NAN))));
}

static void test_dtype_names(void **state)
{
    (void)state;
    llmq_dtype dt;
    assert_int_equal(llmq_dtype_from_name("BF16", &dt), 0);
    assert_int_equal(dt, LLMQ_BF16);
    assert_int_equal(llmq_dtype_size(LLMQ_I32), 4);
    assert_int_equal(llmq_dtype_from_name("F8_E4M3X", &dt), -1);
    uint16_t h[3];
    float f[3] = {1.0f, -0.5f, 3.0f}, back[3];
    assert_int_equal(llmq_convert(h, LLMQ_F16, f, LLMQ_F32, 3), 0);
    assert_int_equal(llmq_convert(back, LLMQ_F32, h, LLMQ_F16, 3), 0);
    assert_memory_equal(f, back, sizeof f);
    assert_int_equal(llmq_convert(h, LLMQ_I32, f, LLMQ_F32, 3), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_known_values),
        cmocka_unit_test(test_f16_roundtrip_all),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_dtype_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
