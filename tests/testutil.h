/* Helpers shared by the unit tests. */
#ifndef LLMQ_TESTUTIL_H
#define LLMQ_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>

/* The test data folder: $LLMQ_TEST_DATA (meson sets it), else tests/data. */
static inline const char *test_data_dir(void)
{
    const char *d = getenv("LLMQ_TEST_DATA");
    return d && *d ? d : "tests/data";
}

/* A fresh directory "$TMPDIR/<prefix>XXXXXX" in buf; 0 on success. */
static inline int test_make_tmpdir(char *buf, size_t n, const char *prefix)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, n, "%s/%sXXXXXX", base && *base ? base : "/tmp", prefix);
    return mkdtemp(buf) ? 0 : -1;
}

#endif
