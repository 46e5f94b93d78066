/* Progress of long steps: "what i/N, rate, ETA" redrawn in place on a
 * terminal; on a pipe or file a plain line at most every 10 s (so logs stay
 * readable); nothing with quiet. */
#ifndef LLMQ_PROGRESS_H
#define LLMQ_PROGRESS_H

typedef struct {
    const char *what; /* "windows", "layer", ... */
    long total;
    double t0, last;
    int tty, quiet, drawn;
} llmq_progress;

double llmq_now(void); /* monotonic seconds */

void progress_start(llmq_progress *p, const char *what, long total, int quiet);
/* done: units finished; units_per_s_label: e.g. "tok/s" with rate value
 * (both may be NULL/0); extra: a short free text or NULL. */
void progress_update(llmq_progress *p, long done, const char *rate_label, double rate, const char *extra);
void progress_end(llmq_progress *p);

#endif
