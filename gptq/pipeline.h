/* llmq-gptq's job: quantize every linear of a model and export it.
 *
 * GPTQ runs sequentially, layer by layer, as the reference does: the
 * calibration activations of layer i come from layers 0..i-1 already
 * quantized. For each layer, the inputs are observed on a scratch copy of
 * the hidden states (accumulating the Hessians), the modules are solved and
 * their dequantized weights put back into the layer, and then the quantized
 * layer runs on the real hidden states to feed the next one. With
 * true-sequential the observation is split in four stages (q/k/v, o,
 * gate/up, down), each seeing the modules of the earlier stages quantized.
 * RTN and NF4 need no calibration data: each weight is quantized on its own.
 *
 * A GPTQ run can be resumed: each finished layer's packed tensors and
 * quant_log rows are saved in "OUT.partial" (next to OUT) with job.json,
 * everything that determines the result. A rerun with the same job re-adds
 * those tensors, installs their dequantized weights, re-runs the finished
 * layers' forward to rebuild the hidden states and goes on from the first
 * missing layer: the output is byte-identical to an uninterrupted run.
 * SIGINT / SIGTERM stop the run between modules, keeping OUT.partial. */
#ifndef LLMQ_GPTQ_PIPELINE_H
#define LLMQ_GPTQ_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "../formats/export.h"
#include "../src/backend.h"

typedef struct {
    const char *model, *data, *field, *out;
    int samples, seqlen;
    uint64_t seed;
    int records; /* SmoothQuant-style record sampling instead of windows */
    export_format format;
    export_settings s; /* method, bits, group, sym, act_order, static_groups, true_sequential, damp */
    int block;
    int skip_unfit, force, quiet;
    size_t shard_bytes; /* 0 = shard like the input */
    const char *dump_dir; /* write W and H of every module here (for the reference check) */
    int cpu_solver;       /* solve on the CPU even when the forward runs on CUDA */
    int restart;          /* discard OUT.partial and start over */
    int no_resume;        /* neither read nor write OUT.partial */
} gptq_job;

/* Where the time went, and what was done (for --json and the log line). */
typedef struct {
    double seconds, forward, solve, pack, write;
    int modules, skipped, resumed_layers;
} gptq_summary;

/* Run the job; sum (may be NULL) receives the summary on success. Returns
 * 0 on success, -1 on error, 128 + the signal number when SIGINT or SIGTERM
 * stopped a GPTQ run (the message says how to resume); the caller prints
 * llmq_last_error() and exits with the status. */
int gptq_run(const gptq_job *j, llmq_backend *b, gptq_summary *sum);

#endif
