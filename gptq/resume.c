/* Resumable GPTQ runs: the work directory "OUT.partial" next to the
 * output, with job.json (everything that determines the result) and one
 * safetensors save per finished layer; a rerun of the same job re-adds the
 * saves to the export, installs their weights, replays those layers'
 * quantized forward and goes on where the earlier run stopped. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../src/error.h"
#include "../src/fileio.h"
#include "../src/progress.h"
#include "../src/qweight_load.h"
#include "job.h"

static int jstr(cJSON *o, const char *key, const char *v)
{
    return cJSON_AddStringToObject(o, key, v) ? 0 : llmq_fail("out of memory");
}

static int jnum(cJSON *o, const char *key, double v)
{
    return cJSON_AddNumberToObject(o, key, v) ? 0 : llmq_fail("out of memory");
}

static int jbool(cJSON *o, const char *key, int v)
{
    return cJSON_AddBoolToObject(o, key, v) ? 0 : llmq_fail("out of memory");
}

/* Size and modification time: a rewritten input file (re-downloaded,
 * regenerated) makes the finished layers stale. */
static int add_stamp(cJSON *o, const char *key, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return llmq_fail("%s: %s", path, strerror(errno));
    char v[96];
    snprintf(v, sizeof v, "%lld bytes, mtime %lld.%09ld", (long long)st.st_size, (long long)st.st_mtim.tv_sec,
             (long)st.st_mtim.tv_nsec);
    return jstr(o, key, v);
}

/* Absolute where possible: the same files reached from another working
 * directory are the same job. */
static int add_path(cJSON *o, const char *key, const char *path)
{
    char abs[PATH_MAX];
    return jstr(o, key, realpath(path, abs) ? abs : path);
}

/* config.json and every weight file the model's tensors come from. */
static int add_model_files(cJSON *job, const job_state *js)
{
    cJSON *files = cJSON_AddObjectToObject(job, "model_files");
    char *cfg = llmq_path_join(js->j->model, "config.json");
    int rc = files && cfg ? add_stamp(files, "config.json", cfg) : llmq_fail("out of memory");
    free(cfg);
    for (int i = 0; rc == 0 && i < st_model_count(js->st); i++) {
        const char *path = st_model_at(js->st, i)->file, *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        if (!cJSON_GetObjectItemCaseSensitive(files, base))
            rc = add_stamp(files, base, path);
    }
    return rc;
}

/* job.json: everything that determines the bytes of the result. The
 * device, dtype and solver are part of it: the forward's rounding and the
 * solvers' tie-breaking differ between them. */
static cJSON *job_json(const job_state *js, const llmq_backend *b)
{
    const gptq_job *j = js->j;
    const export_settings *s = &j->s;
    char seed[32], damp[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)j->seed);
    /* The value as typed (0.01) when that names the same float, else exact. */
    snprintf(damp, sizeof damp, "%.6g", (double)s->damp);
    if (strtof(damp, NULL) != s->damp)
        snprintf(damp, sizeof damp, "%.9g", (double)s->damp);
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        llmq_fail("out of memory");
        return NULL;
    }
    int rc = jstr(o, "llmq_version", LLMQ_VERSION) || add_path(o, "model", j->model) || add_model_files(o, js) ||
             add_path(o, "data", j->data) || add_stamp(o, "data_file", j->data) ||
             jstr(o, "field", j->field ? j->field : "") || jnum(o, "samples", j->samples) ||
             jnum(o, "seqlen", j->seqlen) || jstr(o, "seed", seed) || jbool(o, "records", j->records) ||
             jstr(o, "method", s->method) || jnum(o, "bits", s->bits) || jnum(o, "group", s->group) ||
             jbool(o, "sym", s->sym) || jbool(o, "act_order", s->act_order) ||
             jbool(o, "static_groups", s->static_groups) || jbool(o, "true_sequential", s->true_sequential) ||
             jstr(o, "damp", damp) || jnum(o, "block", j->block) || jstr(o, "format", export_format_name(j->format)) ||
             jbool(o, "skip_unfit", j->skip_unfit) || jstr(o, "device", b->name) ||
             jstr(o, "dtype", llmq_dtype_name(b->dt)) || jstr(o, "solver", js->gpu_solver ? "GPU" : "CPU");
    if (rc) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Refuse finished layers of another job, naming the first field that
 * differs (and the file, for the model's files). */
static int compare_jobs(const char *path, const cJSON *was, const cJSON *now, const char *parent)
{
    for (const cJSON *it = now->child; it; it = it->next) {
        const cJSON *old = cJSON_GetObjectItemCaseSensitive(was, it->string);
        if (old && cJSON_Compare(old, it, 1))
            continue;
        char field[256];
        snprintf(field, sizeof field, "%s%s%s", parent ? parent : "", parent ? " " : "", it->string);
        if (old && cJSON_IsObject(old) && cJSON_IsObject(it))
            return compare_jobs(path, old, it, field);
        char *a = old ? cJSON_PrintUnformatted(old) : NULL, *b = cJSON_PrintUnformatted(it);
        llmq_fail("%s: the finished layers there come from another job: %s was %s, is now %s. Rerun with the same "
                  "settings to resume, or add --restart to discard them",
                  path, field, a ? a : "absent", b ? b : "?");
        free(a), free(b);
        return -1;
    }
    return 0;
}

static char *layer_path(const gptq_partial *p, int l)
{
    char name[64];
    snprintf(name, sizeof name, "layer_%d.safetensors", l);
    char *path = llmq_path_join(p->dir, name);
    if (!path)
        llmq_fail("out of memory");
    return path;
}

/* OUT.partial exists: resume if it holds this job, counting the layers
 * saved in order (a save is renamed into place whole, so it exists only
 * complete). */
static int partial_check(job_state *js)
{
    gptq_partial *p = &js->part;
    char *path = llmq_path_join(p->dir, "job.json"), *text = NULL;
    size_t len;
    cJSON *was = NULL;
    int rc = -1;
    if (!path) {
        llmq_fail("out of memory");
        goto done;
    }
    if (!llmq_file_exists(path)) {
        llmq_fail("%s: exists but has no job.json (not left by llmq-gptq?); remove it or add --restart", p->dir);
        goto done;
    }
    if (llmq_read_file(path, &text, &len))
        goto done;
    if (!(was = cJSON_ParseWithLength(text, len)) || !cJSON_IsObject(was)) {
        llmq_fail("%s: invalid JSON; add --restart to start over", path);
        goto done;
    }
    if (compare_jobs(path, was, p->job, NULL))
        goto done;
    p->exists = 1;
    for (char *lp; p->done < js->c->n_layers; p->done++) {
        if (!(lp = layer_path(p, p->done)))
            goto done;
        int saved = llmq_file_exists(lp);
        free(lp);
        if (!saved)
            break;
    }
    if (p->done && !js->j->quiet)
        fprintf(stderr, "llmq-gptq: resuming at layer %d/%d (finished layers in %s)\n", p->done, js->c->n_layers,
                p->dir);
    rc = 0;
done:
    cJSON_Delete(was);
    free(text);
    free(path);
    return rc;
}

/* Test hook (tests/e2e/gptq_resume.sh): LLMQ_GPTQ_FAIL_AFTER_LAYER=i makes
 * the run fail right after layer i is saved, as if it had been killed
 * there, to check that the rerun resumes with the same bytes. */
static int fail_after_hook(void)
{
    const char *v = getenv("LLMQ_GPTQ_FAIL_AFTER_LAYER");
    return v && *v ? atoi(v) : -1;
}

/* Decide what OUT.partial means for this run: nothing (RTN / NF4 are fast
 * and need no resume; --no-resume), a fresh start (absent; --restart
 * removes it), or finished layers to resume from. Nothing is created
 * until the first layer is saved, so a run refused early leaves nothing. */
int partial_open(job_state *js, const char *out, const llmq_backend *b)
{
    gptq_partial *p = &js->part;
    const gptq_job *j = js->j;
    p->fail_after = fail_after_hook();
    if (strcmp(j->s.method, "gptq"))
        return 0;
    size_t n = strlen(out) + sizeof ".partial";
    char *dir = malloc(n);
    if (!dir)
        return llmq_fail("out of memory");
    snprintf(dir, n, "%s.partial", out);
    if (j->restart && llmq_file_exists(dir)) {
        llmq_remove_tree(dir);
        if (llmq_file_exists(dir)) {
            llmq_fail("%s: cannot remove it (--restart)", dir);
            free(dir);
            return -1;
        }
        if (!j->quiet)
            fprintf(stderr, "llmq-gptq: --restart: removed %s\n", dir);
    }
    if (j->no_resume) {
        free(dir);
        return 0;
    }
    p->dir = dir;
    if (!(p->files = calloc((size_t)js->c->n_layers, sizeof *p->files)) || !(p->job = job_json(js, b)))
        return p->files ? -1 : llmq_fail("out of memory");
    return llmq_file_exists(dir) ? partial_check(js) : 0;
}

/* Close the saves (after the export is written) and free. */
void partial_free(job_state *js)
{
    gptq_partial *p = &js->part;
    for (int l = 0; p->files && l < js->c->n_layers; l++)
        st_close(p->files[l]);
    st_writer_free(p->layer);
    cJSON_Delete(p->job);
    free(p->files), free(p->dir);
    memset(p, 0, sizeof *p);
}

/* OUT.partial and its job.json, at the first save. */
static int partial_create(gptq_partial *p)
{
    if (p->exists)
        return 0;
    if (mkdir(p->dir, 0777) != 0)
        return llmq_fail("%s: cannot create directory: %s", p->dir, strerror(errno));
    char *text = cJSON_Print(p->job), *path = llmq_path_join(p->dir, "job.json");
    int rc = text && path ? 0 : llmq_fail("out of memory");
    if (rc == 0) {
        size_t n = strlen(text);
        text[n] = '\n'; /* cJSON_Print's buffer has room: the NUL */
        rc = llmq_write_file(path, text, n + 1);
    }
    free(text), free(path);
    p->exists = rc == 0;
    return rc;
}

/* Start collecting layer l's share of the checkpoint (export_tee). */
int save_begin(job_state *js)
{
    if (!js->part.dir)
        return 0;
    if (!(js->part.layer = st_writer_new()))
        return llmq_fail("out of memory");
    export_tee(js->ex, js->part.layer);
    return 0;
}

/* Save layer l's packed tensors and quant_log rows, right after its
 * quantized forward: from here on a crash costs only the layers after l.
 * The safetensors writer renames the file into place whole. */
int save_layer(job_state *js, int l)
{
    gptq_partial *p = &js->part;
    if (!p->layer)
        return 0;
    char num[16];
    snprintf(num, sizeof num, "%d", l);
    char *path = layer_path(p, l);
    int rc = !path || st_writer_meta(p->layer, "llmq_gptq.layer", num) ||
             st_writer_meta(p->layer, "llmq_gptq.quant_log", js->rows_len ? js->rows : "") || partial_create(p) ||
             st_writer_commit(p->layer, path);
    export_tee(js->ex, NULL);
    st_writer_free(p->layer);
    p->layer = NULL;
    free(path);
    return rc ? -1 : 0;
}

/* Install the saved layer l's dequantized weights into the loaded layer:
 * the fp16-scale dequantization of the packed tensors, the same weights
 * quantize_weight put there in the interrupted run and a reader of the
 * checkpoint gets. */
static int install_layer(job_state *js, llmq_model *m, const st_file *f, const char *path, int l)
{
    llmq_backend *b = model_backend(m);
    llmq_layer *L = model_layer(m, l);
    /* Read the save as llmq-eval reads a checkpoint (src/qweight_load.c). */
    qw_source src = {.file = f, .where = path};
    llmq_config qcfg = *js->c;
    const export_settings *s = &js->j->s;
    snprintf(qcfg.quant_method, sizeof qcfg.quant_method, "%s", js->j->format == EXPORT_LLMQ ? "llmq" : "gptq");
    qcfg.q_bits = s->bits, qcfg.q_group = s->group, qcfg.q_sym = s->sym;
    snprintf(qcfg.q_checkpoint_format, sizeof qcfg.q_checkpoint_format, "%s", export_format_name(js->j->format));
    for (int w = 0; w < LIN_COUNT; w++) {
        if (is_skipped(js, l, (llmq_lin)w))
            continue;
        llmq_linear *lin = &L->lin[w];
        size_t nw = (size_t)lin->out * lin->in;
        char prefix[128];
        model_lin_prefix(l, (llmq_lin)w, prefix, sizeof prefix);
        float *W = scratch_buf(&js->w, &js->w_cap, nw);
        int rc = !W || qweight_load_from(&src, &qcfg, prefix, lin->out, lin->in, W) ||
                 b->upload(b, lin->w, b->dt, W, LLMQ_F32, nw);
        if (rc)
            return llmq_wrap("%s", prefix);
    }
    return 0;
}

/* Re-add a save's tensors to the export in their order, each module's
 * "llmq.quant.<module>" entry with them, and its quant_log rows: the export
 * then holds what the interrupted run had added for this layer. */
static int readd_layer(job_state *js, const st_file *f, const char *path, int l)
{
    const char *num = st_metadata(f, "llmq_gptq.layer"), *rows = st_metadata(f, "llmq_gptq.quant_log");
    char want[32], prev[160] = "";
    snprintf(want, sizeof want, "model.layers.%d.", l);
    if (!num || atoi(num) != l || !rows)
        return llmq_fail("%s: not the save of layer %d; add --restart to start over", path, l);
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        const char *dot = strrchr(t->name, '.');
        size_t n = dot ? (size_t)(dot - t->name) : strlen(t->name);
        if (strncmp(t->name, want, strlen(want)) || n >= sizeof prev)
            return llmq_fail("%s: tensor '%s' does not belong to layer %d", path, t->name, l);
        if (export_copy_tensor(js->ex, t))
            return llmq_wrap("%s", path);
        if (strlen(prev) == n && !strncmp(prev, t->name, n))
            continue;
        memcpy(prev, t->name, n), prev[n] = 0;
        char key[192];
        snprintf(key, sizeof key, "llmq.quant.%s", prev);
        const char *meta = st_metadata(f, key);
        if (meta && export_meta(js->ex, key, meta))
            return -1;
    }
    return rows_append(js, rows, strlen(rows)) || flush_rows(js) ? -1 : 0;
}

/* Layer l was finished by an earlier run: re-add its save to the export,
 * install its quantized weights and run it, so that the hidden states reach
 * layer l + 1 exactly as in an uninterrupted run. */
int resume_layer(job_state *js, llmq_model *m, calib_pass *pass, calib_hessian *hs, int l)
{
    llmq_backend *b = model_backend(m);
    char *path = layer_path(&js->part, l);
    int rc = path ? st_open(&js->part.files[l], path) : -1;
    if (rc == 0)
        rc = readd_layer(js, js->part.files[l], path, l) || model_load_layer(m, l) ||
             install_layer(js, m, js->part.files[l], path, l);
    if (rc == 0) {
        double tf = llmq_now();
        rc = hessian_begin(hs, -1, 0) || calib_pass_layer(pass, l, 0, pass->set->n) || b->sync(b);
        js->t_forward += llmq_now() - tf;
    }
    model_unload_layer(m, l);
    free(path);
    return rc ? -1 : 0;
}

