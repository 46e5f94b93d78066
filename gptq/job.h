/* The state of one llmq-gptq job, shared by gptq/pipeline.c (the run)
 * and gptq/resume.c (OUT.partial). Private to gptq/. */
#ifndef LLMQ_GPTQ_JOB_H
#define LLMQ_GPTQ_JOB_H

#include <stddef.h>

#include "../calib/hessian.h"
#include "../calib/layerwise.h"
#include "../formats/export.h"
#include "../formats/safetensors.h"
#include "../src/model.h"
#include "pipeline.h"

typedef struct cJSON cJSON;

/* A resumable GPTQ run's work directory "OUT.partial": job.json (the
 * job_json fields) and layer_<i>.safetensors per finished layer, holding
 * the layer's packed tensors exactly as in the checkpoint, their
 * "llmq.quant.*" entries and the layer's quant_log rows in __metadata__. */
typedef struct {
    char *dir;        /* NULL: not resumable (RTN / NF4, --no-resume) */
    cJSON *job;       /* this run's job.json */
    int exists;       /* dir holds this job's job.json (found, or made at the first save) */
    int done;         /* layers finished by earlier runs */
    st_file **files;  /* [n_layers] their saves, mapped until the export is written */
    st_writer *layer; /* the share of the checkpoint of the layer being quantized */
    int fail_after;   /* LLMQ_GPTQ_FAIL_AFTER_LAYER test hook, -1 = off */
} gptq_partial;

typedef struct {
    const gptq_job *j;
    const llmq_config *c;
    st_model *st;
    export_ctx *ex;
    FILE *log;
    char *rows; /* quant_log.csv rows of the current layer (log_row) */
    size_t rows_len, rows_cap;
    unsigned char *skip; /* [n_layers * LIN_COUNT] kept in float */
    double t_solve, t_forward, t_pack;
    int gpu_solver;
    float *w, *orig, *h, *hg; /* per-module host buffers, reused */
    size_t w_cap, orig_cap, h_cap, hg_cap;
    gptq_partial part;
} job_state;

/* ---- gptq/pipeline.c ---- */
int is_skipped(const job_state *js, int layer, llmq_lin w);
/* A host buffer of n floats kept across modules (grown as needed). */
float *scratch_buf(float **buf, size_t *cap, size_t n);
/* quant_log.csv rows of the current layer, and writing them out. */
int rows_append(job_state *js, const char *s, size_t n);
int flush_rows(job_state *js);

/* ---- gptq/resume.c ---- */
/* Open or create OUT.partial for this job (resumable GPTQ runs only). */
int partial_open(job_state *js, const char *out, const llmq_backend *b);
void partial_free(job_state *js);
/* Around quantizing a layer: start its save, then write it (atomically). */
int save_begin(job_state *js);
int save_layer(job_state *js, int l);
/* Layer l was finished earlier: re-add its save, install its weights, run it. */
int resume_layer(job_state *js, llmq_model *m, calib_pass *pass, calib_hessian *hs, int l);

#endif
