/* Writing a model directory as one transaction: build "OUT.tmp.<pid>",
 * then rename it onto OUT. A failed or interrupted run leaves no directory
 * named OUT (at worst a *.tmp.<pid> that is obviously incomplete), and
 * --force replaces an old OUT only once the new one is complete. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "outdir.h"

static int dir_is_empty(const char *path, int *empty)
{
    DIR *dir = opendir(path);
    if (!dir)
        return llmq_fail("%s: cannot read directory: %s", path, strerror(errno));
    struct dirent *e;
    *empty = 1;
    while ((e = readdir(dir)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            *empty = 0;
            break;
        }
    closedir(dir);
    return 0;
}

static char *with_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s) + strlen(suffix) + 32;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s%ld", s, suffix, (long)getpid());
    return p;
}

static void release(llmq_outdir *d)
{
    free(d->out);
    free(d->tmp);
    free(d->made_parent);
    memset(d, 0, sizeof *d);
}

/* Replacing OUT must never delete the model being read: refuse when OUT
 * is the source directory or contains it. */
static int check_not_source(const char *out, const char *src)
{
    char ro[PATH_MAX], rs[PATH_MAX];
    if (!src || !realpath(out, ro) || !realpath(src, rs))
        return 0;
    size_t n = strlen(ro);
    if (strcmp(ro, rs) == 0)
        return llmq_fail("%s: is the input model directory; write the smoothed model elsewhere", out);
    if (strncmp(ro, rs, n) == 0 && (rs[n] == '/' || n == 1))
        return llmq_fail("%s: contains the input model directory %s; refusing to replace it", out, src);
    return 0;
}

int llmq_outdir_begin(llmq_outdir *d, const char *out, const char *src, int force)
{
    memset(d, 0, sizeof *d);
    if (!out || !out[0])
        return llmq_fail("no output directory given");
    d->out = strdup(out);
    if (!d->out)
        return llmq_fail("out of memory");
    /* "out/" and "out" name the same directory; the temporary is a sibling. */
    for (size_t n = strlen(d->out); n > 1 && d->out[n - 1] == '/'; n--)
        d->out[n - 1] = 0;
    d->tmp = with_suffix(d->out, ".tmp.");
    if (!d->tmp) {
        release(d);
        return llmq_fail("out of memory");
    }
    struct stat st;
    int rc = 0;
    if (stat(d->out, &st) == 0) {
        int empty = 0;
        if (!S_ISDIR(st.st_mode))
            rc = llmq_fail("%s: exists and is not a directory", d->out);
        else
            rc = dir_is_empty(d->out, &empty);
        if (!rc)
            rc = check_not_source(d->out, src);
        if (!rc && !empty && !force)
            rc = llmq_fail("%s: exists and is not empty (use --force to replace it)", d->out);
        d->replace = !empty;
    } else if (errno != ENOENT) {
        rc = llmq_fail("%s: %s", d->out, strerror(errno));
    }
    if (!rc && llmq_file_exists(d->tmp))
        rc = llmq_fail("%s: already exists (left by an interrupted run?); remove it", d->tmp);
    if (rc)
        release(d);
    return rc;
}

/* mkdir -p the parent of d->out, remembering the highest directory made so
 * abort can remove exactly those. */
static int make_parents(llmq_outdir *d)
{
    char *p = strdup(d->out);
    if (!p)
        return llmq_fail("out of memory");
    char *slash = strrchr(p, '/');
    if (!slash || slash == p) {
        free(p);
        return 0; /* the parent is "." or "/" */
    }
    *slash = 0;
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != 0)
            continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0777) == 0) {
            if (!d->made_parent && !(d->made_parent = strdup(p)))
                rc = llmq_fail("out of memory");
        } else if (errno != EEXIST) {
            rc = llmq_fail("%s: cannot create directory: %s", p, strerror(errno));
        }
        *s = c;
        if (rc || c == 0)
            break;
    }
    free(p);
    return rc;
}

/* Remove the parents make_parents created, deepest first; rmdir only
 * removes empty directories, so nothing else can be lost. */
static void remove_parents(llmq_outdir *d)
{
    if (!d->made_parent)
        return;
    char *p = strdup(d->out);
    size_t top = strlen(d->made_parent);
    char *slash;
    while (p && (slash = strrchr(p, '/')) != NULL && (size_t)(slash - p) >= top) {
        *slash = 0;
        rmdir(p);
    }
    free(p);
}

int llmq_outdir_create(llmq_outdir *d)
{
    if (make_parents(d))
        return -1;
    if (mkdir(d->tmp, 0777) != 0)
        return llmq_fail("%s: cannot create directory: %s", d->tmp, strerror(errno));
    d->created = 1;
    return 0;
}

/* Make the renames durable: fsync the directory holding OUT. */
static void sync_parent(const char *out)
{
    char *p = strdup(out);
    if (!p)
        return;
    char *slash = strrchr(p, '/');
    const char *dir = slash ? (slash == p ? "/" : (*slash = 0, p)) : ".";
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(p);
}

int llmq_outdir_commit(llmq_outdir *d)
{
    int rc = 0;
    char *old = NULL;
    if (!d->replace) {
        /* rename(2) replaces an empty directory and fails on a non-empty one,
         * so an OUT that appeared meanwhile is not overwritten. */
        if (rename(d->tmp, d->out) != 0)
            rc = llmq_fail("%s: cannot move the new model into place: %s", d->out, strerror(errno));
    } else if (!(old = with_suffix(d->out, ".old."))) {
        rc = llmq_fail("out of memory");
    } else if (rename(d->out, old) != 0) {
        rc = llmq_fail("%s: cannot move the old directory aside: %s", d->out, strerror(errno));
    } else if (rename(d->tmp, d->out) != 0) {
        rc = llmq_fail("%s: cannot move the new model into place: %s", d->out, strerror(errno));
        rename(old, d->out); /* put the old one back */
    } else {
        llmq_remove_tree(old);
    }
    free(old);
    if (rc) {
        llmq_outdir_abort(d);
        return -1;
    }
    sync_parent(d->out);
    release(d);
    return 0;
}

void llmq_outdir_abort(llmq_outdir *d)
{
    if (d->created)
        llmq_remove_tree(d->tmp);
    remove_parents(d);
    release(d);
}
