/* Fuzz harness for the safetensors reader.
 *
 * libFuzzer build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DLLMQ_LIBFUZZER -I. \
 *       tests/fuzz_safetensors.c formats/safetensors.c src/dtype.c src/error.c src/fileio.c \
 *       -lcjson -lm -o /tmp/fuzz_safetensors
 *   /tmp/fuzz_safetensors -max_total_time=60 -max_len=4096 CORPUS_DIR
 * A useful -dict file holds tokens such as "dtype" "shape" "data_offsets"
 * "__metadata__" "F32" "BF16" "[" "]" and '{' .
 *
 * Without libFuzzer the same checks run on files named on the command line:
 *   gcc -std=c11 -D_GNU_SOURCE -g -fsanitize=address,undefined -I. tests/fuzz_safetensors.c \
 *       formats/safetensors.c src/dtype.c src/error.c src/fileio.c -lcjson -lm -o /tmp/fuzz_st
 *   /tmp/fuzz_st FILE...
 *
 * Each input goes through st_open_buffer on an exact-size heap copy (so ASan
 * sees any read past the end). When the reader accepts an input, everything
 * it hands out is touched (st_at, st_find, st_metadata, st_read_f32 over all
 * the data), and the tensors are written back with st_writer and reopened
 * from disk with st_open: the two views must agree. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "src/error.h"
#include "src/fileio.h"

#define FUZZ_CHECK(cond)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);     \
            abort(); /* a harness finding, not user input handling: stop the fuzzer here */ \
        }                                                                                      \
    } while (0)

/* Read every byte the reader handed out; returns a checksum so the loads
 * are not optimised away. */
static uint32_t touch_tensor(const st_tensor *t)
{
    uint32_t sum = 0;
    const uint8_t *p = t->data;
    for (size_t i = 0; i < t->nbytes; i++)
        sum += p[i];
    if (llmq_dtype_is_float(t->dtype) && t->numel <= (1 << 20)) {
        float *f = malloc((size_t)t->numel * sizeof *f + 1);
        FUZZ_CHECK(f);
        FUZZ_CHECK(st_read_f32(t, f) == 0);
        free(f);
    }
    return sum;
}

/* Write the accepted file's tensors out again and compare. Names the writer
 * refuses (control characters reached through \u escapes) end the check. */
static void check_rewrite(const st_file *f)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/fuzz_st_%ld.safetensors", (long)getpid());
    st_writer *w = st_writer_new();
    FUZZ_CHECK(w);
    int ok = 1;
    for (int i = 0; i < st_count(f) && ok; i++) {
        const st_tensor *t = st_at(f, i);
        ok = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data) == 0;
    }
    if (ok && st_writer_commit(w, path) == 0) {
        st_file *g = NULL;
        FUZZ_CHECK(st_open(&g, path) == 0);
        FUZZ_CHECK(st_count(g) == st_count(f));
        for (int i = 0; i < st_count(f); i++) {
            const st_tensor *a = st_at(f, i), *b = st_at(g, i);
            FUZZ_CHECK(strcmp(a->name, b->name) == 0);
            FUZZ_CHECK(a->dtype == b->dtype && a->ndim == b->ndim && a->nbytes == b->nbytes);
            FUZZ_CHECK(memcmp(a->shape, b->shape, sizeof a->shape) == 0);
            FUZZ_CHECK(a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0);
        }
        st_close(g);
        unlink(path);
    }
    st_writer_free(w);
}

static void run_one(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    FUZZ_CHECK(copy);
    if (size)
        memcpy(copy, data, size);
    st_file *f = NULL;
    if (st_open_buffer(&f, copy, size, "fuzz") == 0) {
        uint32_t sum = 0;
        for (int i = 0; i < st_count(f); i++) {
            const st_tensor *t = st_at(f, i);
            FUZZ_CHECK(st_find(f, t->name) == t);
            FUZZ_CHECK((const uint8_t *)t->data >= copy && (const uint8_t *)t->data + t->nbytes <= copy + size);
            sum += touch_tensor(t);
        }
        (void)st_metadata(f, "format");
        (void)sum;
        check_rewrite(f);
        st_close(f);
    } else {
        FUZZ_CHECK(f == NULL);
        FUZZ_CHECK(strncmp(llmq_last_error(), "fuzz", 4) == 0); /* every message names the file */
    }
    free(copy);
}

/* Most mutations of a raw file break the 8-byte header length, and the
 * parser then never sees the JSON. So each input is also read as
 * [tail length byte][header text][tail bytes] with a correct length in
 * front: the mutator works on the JSON directly. */
static void run_framed(const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    size_t tail = data[0] < size - 1 ? data[0] : size - 1;
    size_t hlen = size - 1 - tail;
    uint8_t *img = malloc(8 + size);
    FUZZ_CHECK(img);
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(img + 8, data + 1, size - 1);
    run_one(img, 8 + size - 1);
    free(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_one(data, size);
    run_framed(data, size);
    return 0;
}

#ifndef LLMQ_LIBFUZZER
int main(int argc, char **argv)
{
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        char *buf;
        size_t len;
        if (llmq_read_file(argv[i], &buf, &len) != 0) {
            llmq_print_error(argv[0]);
            bad = 1;
            continue;
        }
        LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
        free(buf);
        /* Through the mmap path as well. */
        st_file *f = NULL;
        if (st_open(&f, argv[i]) == 0)
            st_close(f);
        printf("%s: ok\n", argv[i]);
    }
    return bad;
}
#endif
