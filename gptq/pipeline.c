#include "pipeline.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../calib/hessian.h"
#include "../calib/layerwise.h"
#include "../calib/sampling.h"
#include "../formats/hfdir.h"
#include "../quant/nf4.h"
#include "../quant/pack.h"
#include "../quant/rtn.h"
#include "../src/error.h"
#include "../src/fileio.h"
#include "../src/outdir.h"
#include "../src/progress.h"
#include "../src/qweight_load.h"
#include "gptq.h"
#include "gptq_cuda.h"
#include "job.h"

static const llmq_input g_lin_input[LIN_COUNT] = {IN_QKV, IN_QKV, IN_QKV, IN_O, IN_GATEUP, IN_GATEUP, IN_DOWN};
/* The reference's true-sequential order inside each stage: k, v, q; up, gate. */
static const llmq_lin g_stage_order[LIN_COUNT] = {LIN_K, LIN_V, LIN_Q, LIN_O, LIN_UP, LIN_GATE, LIN_DOWN};


int is_skipped(const job_state *js, int layer, llmq_lin w) { return js->skip[layer * LIN_COUNT + w]; }

/* Check every module against the export format before any work. The
 * message names each kind of module that does not fit, with its first layer
 * and how many layers share the problem. */
static int check_fit(job_state *js)
{
    const gptq_job *j = js->j;
    char bad[1024] = "";
    int nbad = 0;
    for (int w = 0; w < LIN_COUNT; w++) {
        int in, out, first = -1, count = 0;
        const char *why = NULL;
        config_lin_shape(js->c, (llmq_lin)w, &in, &out);
        for (int l = 0; l < js->c->n_layers; l++) {
            if (export_fits(j->format, &j->s, out, in, &why) == 0)
                continue;
            js->skip[l * LIN_COUNT + w] = 1;
            first = first < 0 ? l : first;
            count++;
        }
        if (!count)
            continue;
        nbad += count;
        size_t n = strlen(bad);
        char prefix[128];
        model_lin_prefix(first, (llmq_lin)w, prefix, sizeof prefix);
        snprintf(bad + n, sizeof bad - n, "%s%s [%d x %d]%s: %s", n ? "; " : "", prefix, out, in,
                 count > 1 ? " and the same in the other layers" : "", why ? why : "does not fit");
    }
    if (nbad && !j->skip_unfit)
        return llmq_fail("%d modules cannot be stored in the %s format: %s. Use --format llmq, or --skip-unfit to "
                         "keep them in float",
                         nbad, export_format_name(j->format), bad);
    if (nbad && !j->quiet)
        fprintf(stderr, "llmq-gptq: %d modules do not fit the %s layout and stay in float (%s)\n", nbad,
                export_format_name(j->format), bad);
    return 0;
}

/* quant_log.csv rows are kept per layer until the layer is done: they go
 * to the file and, in a resumable run, into the layer's save, from which a
 * resumed run copies them. */
int rows_append(job_state *js, const char *s, size_t n)
{
    if (js->rows_len + n + 1 > js->rows_cap) {
        size_t cap = js->rows_cap ? 2 * js->rows_cap : 1024;
        while (cap < js->rows_len + n + 1)
            cap *= 2;
        char *p = realloc(js->rows, cap);
        if (!p)
            return llmq_fail("out of memory for quant_log.csv rows");
        js->rows = p, js->rows_cap = cap;
    }
    memcpy(js->rows + js->rows_len, s, n);
    js->rows_len += n;
    js->rows[js->rows_len] = 0;
    return 0;
}

static int log_row(job_state *js, const char *fmt, ...) LLMQ_PRINTF(2, 3);
static int log_row(job_state *js, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line)
        return llmq_fail("quant_log.csv: row too long");
    return rows_append(js, line, (size_t)n);
}

/* Write the kept rows to quant_log.csv. */
int flush_rows(job_state *js)
{
    if (js->rows_len && fwrite(js->rows, 1, js->rows_len, js->log) != js->rows_len)
        return llmq_fail("quant_log.csv: write error");
    js->rows_len = 0;
    return ferror(js->log) ? llmq_fail("quant_log.csv: write error") : 0;
}

static int log_module(job_state *js, int layer, llmq_lin w, const llmq_qweight *qw, const float *W_orig,
                      const float *W_q, double loss, float damp, int retries, double secs)
{
    /* The weight error as well, so RTN / NF4 rows are comparable. */
    double err = 0, ref = 0;
    size_t n = (size_t)qw->out * qw->in;
    for (size_t i = 0; i < n; i++) {
        double d = (double)W_orig[i] - W_q[i];
        err += d * d, ref += (double)W_orig[i] * W_orig[i];
    }
    return log_row(js, "%d,%s,%d,%d,%s,%d,%d,%.6g,%.6g,%g,%d,%.4f\n", layer, config_lin_name(w), qw->out, qw->in,
                   js->j->s.method, qw->bits, qw->group, loss, sqrt(err / (ref > 0 ? ref : 1)), damp, retries, secs);
}

/* A host buffer kept across modules: fresh multi-hundred-MB allocations
 * per module would page-fault their way in every time. */
float *scratch_buf(float **buf, size_t *cap, size_t n)
{
    if (n > *cap) {
        free(*buf);
        *buf = malloc(n * sizeof(float));
        *cap = *buf ? n : 0;
        if (!*buf)
            llmq_fail("out of memory for %zu floats", n);
    }
    return *buf;
}

/* GPTQ on the GPU when the forward runs there (same contract and, up to
 * rounding ties, the same codes as the CPU solver: tests/gpu/test_gptq_cuda.c). */
static int solve(job_state *js, float *W, int out, int in, float *H, const gptq_params *p, llmq_qweight *qw,
                 gptq_stats *st)
{
#ifdef LLMQ_HAVE_CUDA
    if (js->gpu_solver)
        return gptq_solve_cuda(W, out, in, H, p, qw, st);
#endif
    (void)js;
    return gptq_solve(W, out, in, H, p, qw, st);
}

/* Quantize one weight W [out, in] (host fp32) with the job's method; W
 * becomes the dequantized result. H is used (and destroyed) by GPTQ. */
static int quantize_weight(job_state *js, int layer, llmq_lin w, float *W, int out, int in, float *H)
{
    const gptq_job *j = js->j;
    char prefix[128];
    model_lin_prefix(layer, w, prefix, sizeof prefix);
    float *orig = scratch_buf(&js->orig, &js->orig_cap, (size_t)out * in);
    if (!orig)
        return -1;
    memcpy(orig, W, (size_t)out * in * sizeof(float));
    double t0 = llmq_now(), loss = 0;
    gptq_stats stats = {0};
    int rc;
    if (!strcmp(j->s.method, "nf4")) {
        llmq_nf4 q;
        rc = nf4_quantize(W, (size_t)out * in, 64, j->s.nf4_double, &q);
        if (rc == 0 && (rc = nf4_dequantize(&q, W)) == 0) {
            double tp = llmq_now();
            rc = export_nf4(js->ex, prefix, &q, out, in);
            js->t_pack += llmq_now() - tp;
            if (rc == 0)
                rc = log_row(js, "%d,%s,%d,%d,nf4,4,64,0,%.6g,0,0,%.4f\n", layer, config_lin_name(w), out, in, 0.0,
                             llmq_now() - t0);
        }
        if (rc == 0)
            nf4_free(&q);
        return rc ? llmq_wrap("%s", prefix) : 0;
    }
    llmq_qweight qw = {0};
    /* Codes come from fp32 scales, as in the reference implementations;
     * the checkpoint stores the scales in fp16, so the weights used from
     * here on (and by the next layers' calibration) are dequantized with
     * the fp16-rounded scales: exactly what a reader of the file gets. */
    if (!strcmp(j->s.method, "rtn")) {
        rc = rtn_quantize(W, out, in, j->s.bits, j->s.group, j->s.sym, 0, &qw);
    } else {
        gptq_params p;
        gptq_params_default(&p);
        p.bits = j->s.bits, p.group = j->s.group, p.sym = j->s.sym, p.act_order = j->s.act_order;
        p.static_groups = j->s.static_groups, p.damp = j->s.damp, p.block = j->block, p.scale_f16 = 0;
        rc = solve(js, W, out, in, H, &p, &qw, &stats);
        loss = stats.loss;
        if (rc == 0 && stats.retries && !j->quiet)
            fprintf(stderr, "\nllmq-gptq: %s: Hessian not positive definite, retried %d times, damp %.3g\n", prefix,
                    stats.retries, stats.damp);
    }
    if (rc == 0) {
        llmq_round_through(qw.scales, (size_t)qw.ngroups * qw.out, LLMQ_F16);
        qweight_dequant(&qw, W);
    }
    double secs = llmq_now() - t0;
    js->t_solve += secs;
    if (rc == 0) {
        double tp = llmq_now();
        rc = export_qweight(js->ex, prefix, &qw);
        js->t_pack += llmq_now() - tp;
    }
    if (rc == 0)
        rc = log_module(js, layer, w, &qw, orig, W, loss, stats.damp, stats.retries, secs);
    qweight_free(&qw);
    return rc ? llmq_wrap("%s", prefix) : 0;
}

/* RTN / NF4: every weight on its own, straight from the file. */
static int run_weight_only(job_state *js)
{
    const llmq_config *c = js->c;
    llmq_progress pr;
    progress_start(&pr, "layer", c->n_layers, js->j->quiet);
    for (int l = 0; l < c->n_layers; l++) {
        for (int w = 0; w < LIN_COUNT; w++) {
            if (is_skipped(js, l, (llmq_lin)w))
                continue;
            char name[160];
            int in, out;
            model_lin_prefix(l, (llmq_lin)w, name, sizeof name);
            strcat(name, ".weight");
            config_lin_shape(c, (llmq_lin)w, &in, &out);
            const st_tensor *t = st_model_find(js->st, name);
            if (!t || t->numel != (int64_t)out * in)
                return llmq_fail("%s: tensor '%s' is missing or has the wrong size", js->j->model, name);
            float *W = malloc((size_t)out * in * sizeof(float));
            if (!W)
                return llmq_fail("out of memory");
            int rc = st_read_f32(t, W) || quantize_weight(js, l, (llmq_lin)w, W, out, in, NULL);
            free(W);
            if (rc)
                return -1;
        }
        if (flush_rows(js))
            return -1;
        progress_update(&pr, l + 1, NULL, 0, NULL);
    }
    progress_end(&pr);
    return 0;
}

static int dump_module(const char *dir, const char *prefix, const float *W, int out, int in, const float *H)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.W.f32", dir, prefix);
    if (llmq_write_file(path, W, (size_t)out * in * sizeof(float)))
        return -1;
    snprintf(path, sizeof path, "%s/%s.H.f32", dir, prefix);
    return llmq_write_file(path, H, (size_t)in * in * sizeof(float));
}

/* ---- stopping on SIGINT / SIGTERM ----
 * The handler only records the signal; the run checks it between modules
 * and layers and unwinds like an error, so OUT.tmp.<pid> is removed and
 * OUT.partial keeps every finished layer. */
static volatile sig_atomic_t g_signal;

static void on_signal(int sig) { g_signal = sig; }

/* SA_RESETHAND: a second Ctrl-C kills at once, for a user who will not wait
 * for the current module; SA_RESTART: file I/O in progress carries on. A
 * signal ignored on entry (nohup, `cmd &` in a script) stays ignored. */
static void catch_signals(struct sigaction old[2])
{
    const int sigs[2] = {SIGINT, SIGTERM};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    g_signal = 0;
    for (int i = 0; i < 2; i++)
        if (sigaction(sigs[i], NULL, &old[i]) == 0 && old[i].sa_handler != SIG_IGN)
            sigaction(sigs[i], &sa, NULL);
}

static void restore_signals(const struct sigaction old[2])
{
    sigaction(SIGINT, &old[0], NULL);
    sigaction(SIGTERM, &old[1], NULL);
}

/* -1 with the message the user sees once a signal came, working on `layer`. */
static int stop_requested(const job_state *js, int layer)
{
    if (!g_signal)
        return 0;
    if (!js->part.dir)
        return llmq_fail("interrupted");
    return llmq_fail("interrupted; rerun the same command to resume from layer %d",
                     layer > js->part.done ? layer : js->part.done);
}

/* Solve the modules of `stage` (a mask of inputs) of layer l, with the
 * Hessians just collected; put the dequantized weights back in the layer. */
static int solve_stage(job_state *js, llmq_model *m, calib_hessian *hs, int l, unsigned stage, int nsamples)
{
    llmq_backend *b = model_backend(m);
    llmq_layer *L = model_layer(m, l);
    int Hg_for = -1, rc = 0;
    for (int k = 0; k < LIN_COUNT && rc == 0; k++) {
        llmq_lin w = g_stage_order[k];
        llmq_input g = g_lin_input[w];
        if (!(stage & (1u << g)) || is_skipped(js, l, w))
            continue;
        if (stop_requested(js, l))
            return -1;
        llmq_linear *lin = &L->lin[w];
        size_t nw = (size_t)lin->out * lin->in, nh = (size_t)lin->in * lin->in;
        if (Hg_for != (int)g) {
            if (!scratch_buf(&js->hg, &js->hg_cap, nh) || hessian_get(hs, g, nsamples, js->hg))
                return -1;
            Hg_for = (int)g;
        }
        /* The CPU solver destroys H, the GPU one only reads it. */
        float *H = js->hg;
        if (!js->gpu_solver) {
            if (!(H = scratch_buf(&js->h, &js->h_cap, nh)))
                return -1;
            memcpy(H, js->hg, nh * sizeof(float));
        }
        float *W = scratch_buf(&js->w, &js->w_cap, nw);
        if (!W)
            return -1;
        rc = b->download_f32(b, W, lin->w, b->dt, nw);
        if (rc == 0 && js->j->dump_dir) {
            char prefix[128];
            model_lin_prefix(l, w, prefix, sizeof prefix);
            rc = dump_module(js->j->dump_dir, prefix, W, lin->out, lin->in, H);
        }
        if (rc == 0)
            rc = quantize_weight(js, l, w, W, lin->out, lin->in, H);
        if (rc == 0 && js->j->dump_dir) {
            /* The fake-quant weights, for the round trip against the export. */
            char path[512], prefix[128];
            model_lin_prefix(l, w, prefix, sizeof prefix);
            snprintf(path, sizeof path, "%s/%s.Wq.f32", js->j->dump_dir, prefix);
            rc = llmq_write_file(path, W, nw * sizeof(float));
        }
        if (rc == 0)
            rc = b->upload(b, lin->w, b->dt, W, LLMQ_F32, nw);
    }
    return rc;
}

/* Layer l: observe, solve and install each stage, then run the quantized
 * layer on the real hidden states for the next one, and save it. */
static int quantize_layer(job_state *js, llmq_model *m, calib_pass *pass, calib_hessian *hs, void *scratch, int l)
{
    llmq_backend *b = model_backend(m);
    const unsigned all = (1u << IN_COUNT) - 1;
    const unsigned stages_ts[4] = {1u << IN_QKV, 1u << IN_O, 1u << IN_GATEUP, 1u << IN_DOWN};
    int nstages = js->j->s.true_sequential ? 4 : 1, n = pass->set->n;
    if (save_begin(js))
        return -1;
    for (int s = 0; s < nstages; s++) {
        unsigned stage = nstages == 1 ? all : stages_ts[s];
        double tf = llmq_now();
        if (b->copy(b, scratch, pass->state, calib_pass_bytes(pass)) || hessian_begin(hs, l, stage) ||
            calib_pass_layer_on(pass, scratch, l, 0, n) || b->sync(b))
            return -1;
        js->t_forward += llmq_now() - tf;
        if (solve_stage(js, m, hs, l, stage, n))
            return -1;
    }
    double tf = llmq_now();
    hessian_begin(hs, -1, 0);
    if (calib_pass_layer(pass, l, 0, n) || b->sync(b))
        return -1;
    js->t_forward += llmq_now() - tf;
    model_unload_layer(m, l);
    if (save_layer(js, l) || flush_rows(js))
        return -1;
    if (l == js->part.fail_after)
        return llmq_fail("LLMQ_GPTQ_FAIL_AFTER_LAYER=%d: stopping after layer %d as if killed (test hook)", l, l);
    return 0;
}

static int run_gptq(job_state *js, llmq_backend *b)
{
    const gptq_job *j = js->j;
    llmq_tokenizer *tok = NULL;
    llmq_model *m = NULL;
    calib_hessian *hs = NULL;
    calib_set set = {0};
    calib_pass pass = {0};
    void *scratch = NULL;
    int rc = -1;
    if (tok_load(&tok, j->model) || calib_sample(&set, tok, j->data, j->field,
                                                 j->records ? CALIB_RECORDS : CALIB_WINDOWS, j->samples, j->seqlen,
                                                 j->seed))
        goto done;
    int chunk = calib_chunk_rows(&set, strcmp(b->name, "cpu") ? 16384 : 8192);
    if (model_open(&m, j->model, b, chunk) || hessian_new(&hs, m))
        goto done;
    llmq_hooks hooks = hessian_hooks(hs);
    model_set_hooks(m, &hooks);
    if (calib_pass_begin(&pass, m, &set) || !(scratch = calib_pass_alloc_like(&pass)))
        goto done;
    if (!j->quiet)
        fprintf(stderr,
                "llmq-gptq: %d calibration samples, %zu tokens; hidden states 2 x %.1f MiB on %s; solver on the %s\n",
                set.n, (size_t)set.off[set.n], (double)calib_pass_bytes(&pass) / 1048576.0, b->name,
                js->gpu_solver ? "GPU" : "CPU");
    llmq_progress pr;
    progress_start(&pr, "layer", js->c->n_layers, j->quiet);
    for (int l = 0; l < js->c->n_layers; l++) {
        if (stop_requested(js, l))
            goto done;
        if (l < js->part.done ? resume_layer(js, m, &pass, hs, l) : quantize_layer(js, m, &pass, hs, scratch, l))
            goto done;
        char extra[96];
        snprintf(extra, sizeof extra, "solve %.1fs forward %.1fs", js->t_solve, js->t_forward);
        progress_update(&pr, l + 1, NULL, 0, extra);
    }
    progress_end(&pr);
    rc = 0;
done:
    if (scratch)
        b->free(b, scratch);
    calib_pass_end(&pass);
    hessian_free(hs);
    calib_set_free(&set);
    model_close(m);
    tok_free(tok);
    return rc;
}

/* Every tensor that is not a quantized linear's weight, in file order. */
static int copy_float_tensors(job_state *js)
{
    int n = st_model_count(js->st);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_model_at(js->st, i);
        int quantized = 0, layer;
        char rest[96];
        if (sscanf(t->name, "model.layers.%d.%95s", &layer, rest) == 2 && layer >= 0 && layer < js->c->n_layers)
            for (int w = 0; w < LIN_COUNT; w++) {
                char want[120];
                snprintf(want, sizeof want, "%s.weight", config_lin_name((llmq_lin)w));
                if (!strcmp(rest, want) && !is_skipped(js, layer, (llmq_lin)w))
                    quantized = 1;
            }
        if (!quantized && export_copy_tensor(js->ex, t))
            return -1;
    }
    return 0;
}

int gptq_run(const gptq_job *j, llmq_backend *b, gptq_summary *sum)
{
    job_state js = {.j = j, .part.fail_after = -1};
    llmq_config cfg;
    llmq_outdir od = {0};
    int rc = -1, od_begun = 0, is_gptq = !strcmp(j->s.method, "gptq");
    struct sigaction old_sig[2];
    double t0 = llmq_now();
    if (config_load(&cfg, j->model))
        return -1;
    if (cfg.quant_method[0])
        return llmq_fail("%s: the model is already quantized (%s)", j->model, cfg.quant_method);
    js.c = &cfg;
    js.gpu_solver = is_gptq && strcmp(b->name, "cuda") == 0 && !j->cpu_solver;
    js.skip = calloc((size_t)cfg.n_layers * LIN_COUNT, 1);
    if (!js.skip)
        return llmq_fail("out of memory");
    if (is_gptq)
        catch_signals(old_sig);
    if (export_check_settings(j->format, &j->s) || check_fit(&js) || st_model_open(&js.st, j->model))
        goto done;
    if (llmq_outdir_begin(&od, j->out, j->model, j->force))
        goto done;
    od_begun = 1;
    if (llmq_outdir_create(&od) || export_new(&js.ex, j->format, &j->s) || partial_open(&js, od.out, b))
        goto done;
    char *log_path = llmq_path_join(od.tmp, "quant_log.csv");
    js.log = log_path ? fopen(log_path, "w") : NULL;
    free(log_path);
    if (!js.log) {
        llmq_fail("%s: cannot create quant_log.csv", od.tmp);
        goto done;
    }
    fprintf(js.log, "layer,module,out,in,method,bits,group,gptq_loss,weight_rel_err,damp,retries,seconds\n");
    if (is_gptq ? run_gptq(&js, b) : run_weight_only(&js))
        goto done;
    for (int l = 0; l < cfg.n_layers; l++)
        for (int w = 0; w < LIN_COUNT; w++)
            if (is_skipped(&js, l, (llmq_lin)w)) {
                char prefix[128];
                model_lin_prefix(l, (llmq_lin)w, prefix, sizeof prefix);
                if (export_skip(js.ex, prefix))
                    goto done;
            }
    char s[64];
    snprintf(s, sizeof s, "%d", j->samples);
    if (copy_float_tensors(&js) || export_meta(js.ex, "llmq_gptq_method", j->s.method) ||
        (!strcmp(j->s.method, "gptq") &&
         (export_meta(js.ex, "llmq_calib_corpus", j->data) || export_meta(js.ex, "llmq_calib_samples", s))))
        goto done;
    snprintf(s, sizeof s, "%d", j->seqlen);
    if (!strcmp(j->s.method, "gptq") && export_meta(js.ex, "llmq_calib_seqlen", s))
        goto done;
    snprintf(s, sizeof s, "%llu", (unsigned long long)j->seed);
    if (!strcmp(j->s.method, "gptq") && export_meta(js.ex, "llmq_calib_seed", s))
        goto done;
    if (fclose(js.log) != 0) {
        js.log = NULL;
        llmq_fail("quant_log.csv: write error");
        goto done;
    }
    js.log = NULL;
    double tw = llmq_now();
    if (stop_requested(&js, cfg.n_layers) ||
        export_write(js.ex, j->model, od.tmp, j->shard_bytes ? j->shard_bytes : hfdir_shard_bytes(js.st, j->model)) ||
        llmq_outdir_commit(&od))
        goto done;
    od_begun = 0;
    if (js.part.exists) {
        /* OUT is in place: the finished layers are no longer needed. */
        char *dir = strdup(js.part.dir);
        partial_free(&js);
        if (dir)
            llmq_remove_tree(dir);
        free(dir);
    }
    {
        double total = llmq_now() - t0, write = llmq_now() - tw;
        int skipped = 0;
        for (int i = 0; i < cfg.n_layers * LIN_COUNT; i++)
            skipped += js.skip[i];
        if (sum)
            *sum = (gptq_summary){total, js.t_forward, js.t_solve, js.t_pack, write,
                                  cfg.n_layers * LIN_COUNT - skipped, skipped, js.part.done};
        if (!j->quiet)
            fprintf(stderr,
                    "llmq-gptq: wrote %s in %.1fs (forward %.1fs, solve %.1fs, pack %.1fs, write %.1fs, other %.1fs: "
                    "sampling, loading, Hessian and weight transfers, dequantization)\n",
                    j->out, total, js.t_forward, js.t_solve, js.t_pack, write,
                    total - js.t_forward - js.t_solve - js.t_pack - write);
    }
    rc = 0;
done:
    if (js.log)
        fclose(js.log);
    if (od_begun)
        llmq_outdir_abort(&od);
    export_free(js.ex);
    partial_free(&js); /* after the export, which points into the saves */
    st_model_close(js.st);
    free(js.skip), free(js.w), free(js.orig), free(js.h), free(js.hg), free(js.rows);
    if (is_gptq) {
        if (rc && g_signal)
            rc = 128 + g_signal;
        restore_signals(old_sig);
    }
    return rc;
}
