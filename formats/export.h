/* Writing quantized checkpoints as Hugging Face directories.
 *
 *  - EXPORT_GPTQ ("gptq", v1): what vLLM and transformers load. qweight /
 *    qzeros (zero - 1) / fp16 scales / g_idx per linear, "format": "pt"
 *    metadata, quantization_config in config.json and quantize_config.json
 *    with every field vLLM reads to pick its Marlin kernel.
 *  - EXPORT_GPTQ_V2 ("gptq_v2"): the same with exact zeros (needed for
 *    asymmetric grids, where v1's zero - 1 loses a zero of 0).
 *  - EXPORT_LLMQ: llmq's own layout (docs/LLMQ_FORMAT.md): any shape, bits
 *    2..8, NF4.
 * Unquantized tensors keep their names, shapes and dtypes. Modules a GPTQ
 * layout cannot hold may be kept in float and listed in
 * quantization_config.dynamic as skipped ("-:" rules, GPTQModel's
 * convention that vLLM reads). */
#ifndef LLMQ_EXPORT_H
#define LLMQ_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "../quant/nf4.h"
#include "../quant/qweight.h"
#include "safetensors.h"

typedef enum { EXPORT_GPTQ = 0, EXPORT_GPTQ_V2, EXPORT_LLMQ } export_format;

typedef struct {
    const char *method; /* "gptq", "rtn" or "nf4" */
    int bits, group, sym, act_order, static_groups, true_sequential, nf4_double;
    float damp;
} export_settings;

/* Parse "gptq" | "gptq_v2" | "llmq". */
int export_format_parse(const char *name, export_format *out);
const char *export_format_name(export_format f);

/* Whether format f can hold a [out, in] linear quantized with s (checked for
 * every module before any work starts). 0 = yes; -1 with *why. */
int export_fits(export_format f, const export_settings *s, int out, int in, const char **why);
/* Whether the settings as a whole are expressible in f (bits, NF4, asym v1). */
int export_check_settings(export_format f, const export_settings *s);

typedef struct export_ctx export_ctx;

int export_new(export_ctx **out, export_format f, const export_settings *s);
void export_free(export_ctx *e);

/* Copy a tensor unchanged (its data must stay mapped until export_write). */
int export_copy_tensor(export_ctx *e, const st_tensor *t);
/* A quantized linear "<prefix>" (codes in original channel order). */
int export_qweight(export_ctx *e, const char *prefix, const llmq_qweight *qw);
/* An NF4 linear (llmq format only). */
int export_nf4(export_ctx *e, const char *prefix, const llmq_nf4 *q, int out, int in);
/* A linear kept in float because the format cannot hold it: recorded as a
 * skip rule in quantization_config.dynamic. The caller copies its weight. */
int export_skip(export_ctx *e, const char *prefix);
/* An extra __metadata__ entry (provenance: corpus, samples, seed, ...). */
int export_meta(export_ctx *e, const char *key, const char *value);
/* From now on also add every packed tensor and per-module metadata entry
 * (export_qweight, export_nf4) to w; NULL stops. w only borrows the data,
 * which e owns until export_free. llmq-gptq saves each finished layer's
 * share of the checkpoint this way, so that a resumed run re-adds exactly
 * the bytes the interrupted one produced. */
void export_tee(export_ctx *e, st_writer *w);

/* Write into dir (which must exist): weights (one file, or shards of at most
 * max_shard_bytes when larger; 0 = one file), config.json (src's with
 * quantization_config), quantize_config.json (GPTQ formats) and the
 * tokenizer / generation files of src. */
int export_write(export_ctx *e, const char *src_dir, const char *dir, size_t max_shard_bytes);

#endif
