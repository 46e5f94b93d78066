#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

int llmq_read_file(const char *path, char **data, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return llmq_fail("%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 65536 * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(fp);
                return llmq_fail("%s: out of memory", path);
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, fp);
        n += r;
        if (r == 0)
            break;
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) {
        free(buf);
        return llmq_fail("%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    if (len)
        *len = n;
    return 0;
}

int llmq_atomic_open(llmq_atomic *a, const char *path)
{
    memset(a, 0, sizeof *a);
    size_t n = strlen(path) + 32;
    a->path = strdup(path);
    a->tmp = malloc(n);
    if (!a->path || !a->tmp) {
        free(a->path);
        free(a->tmp);
        return llmq_fail("%s: out of memory", path);
    }
    snprintf(a->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    a->fp = fopen(a->tmp, "wb");
    if (!a->fp) {
        int e = errno;
        free(a->path);
        free(a->tmp);
        a->path = a->tmp = NULL;
        return llmq_fail("%s: cannot create: %s", path, strerror(e));
    }
    return 0;
}

static void atomic_release(llmq_atomic *a)
{
    free(a->path);
    free(a->tmp);
    a->path = a->tmp = NULL;
    a->fp = NULL;
}

int llmq_atomic_commit(llmq_atomic *a)
{
    int bad = 0, e = 0;
    if (fflush(a->fp) != 0 || ferror(a->fp)) {
        bad = 1;
        e = errno;
    }
    if (!bad && fsync(fileno(a->fp)) != 0) {
        bad = 1;
        e = errno;
    }
    if (fclose(a->fp) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    a->fp = NULL;
    if (!bad && rename(a->tmp, a->path) != 0) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(a->tmp);
        llmq_fail("%s: write failed: %s", a->path, strerror(e ? e : EIO));
        atomic_release(a);
        return -1;
    }
    atomic_release(a);
    return 0;
}

void llmq_atomic_abort(llmq_atomic *a)
{
    if (!a->tmp)
        return;
    if (a->fp)
        fclose(a->fp);
    unlink(a->tmp);
    atomic_release(a);
}

int llmq_write_file(const char *path, const void *data, size_t len)
{
    llmq_atomic a;
    if (llmq_atomic_open(&a, path))
        return -1;
    if (len && fwrite(data, 1, len, a.fp) != len) {
        int e = errno;
        llmq_atomic_abort(&a);
        return llmq_fail("%s: write failed: %s", path, strerror(e));
    }
    return llmq_atomic_commit(&a);
}

int llmq_copy_file(const char *src, const char *dst)
{
    char *data;
    size_t len;
    if (llmq_read_file(src, &data, &len))
        return -1;
    int rc = llmq_write_file(dst, data, len);
    free(data);
    return rc;
}

int llmq_mkdirs(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return llmq_fail("out of memory");
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                int e = errno;
                llmq_fail("%s: cannot create directory: %s", p, strerror(e));
                free(p);
                return -1;
            }
            *s = '/';
        }
    }
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
        int e = errno;
        llmq_fail("%s: cannot create directory: %s", p, strerror(e));
        free(p);
        return -1;
    }
    free(p);
    return 0;
}

char *llmq_path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", dir, name);
    return s;
}

int llmq_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0; /* keep going: remove as much as we can */
}

void llmq_remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }
