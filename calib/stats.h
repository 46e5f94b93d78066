/* Activation statistics of every linear input, gathered through the model
 * runner's on_input seam, and their file (docs/ACT_SCALES.md). */
#ifndef LLMQ_CALIB_STATS_H
#define LLMQ_CALIB_STATS_H

#include <stdint.h>
#include <stdio.h>

#include "../src/model.h"

typedef struct calib_stats calib_stats;

/* heldout_cap: at most this many held-out tokens kept per linear group. */
int calib_stats_new(calib_stats **out, llmq_model *m, int heldout_cap);
void calib_stats_free(calib_stats *st);

/* Hooks to install on the model (ctx = st). */
llmq_hooks calib_stats_hooks(calib_stats *st);
/* While on, inputs are kept as held-out samples instead of counted. */
void calib_stats_set_heldout(calib_stats *st, int on);
/* Bring a finished layer's statistics to the host and free its device buffers. */
int calib_stats_finish_layer(calib_stats *st, int layer);
long calib_stats_tokens(const calib_stats *st);
long calib_stats_heldout_tokens(const calib_stats *st);

/* The token ids of the held-out samples (n samples, lens[i] tokens each,
 * ids back to back), stored as "heldout.ids" / "heldout.lengths" so that
 * llmq-smooth --alpha auto can score candidates by held-out loss. The
 * arrays must stay valid until calib_stats_write. */
void calib_stats_set_heldout_ids(calib_stats *st, const int32_t *ids, const int32_t *lens, int n);

/* Write act_scales.safetensors atomically; meta: n key/value pairs. */
int calib_stats_write(calib_stats *st, const char *path, const char *const (*meta)[2], int n);

/* Outlier report: per layer and input group, the largest channels and
 * max/median of the channel abs-max. */
void calib_stats_report(const calib_stats *st, FILE *out, int top);

#endif
