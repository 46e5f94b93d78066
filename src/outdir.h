#ifndef LLMQ_OUTDIR_H
#define LLMQ_OUTDIR_H

/* Writing a model directory as one transaction.
 *
 * Everything is written into "OUT.tmp.<pid>" and renamed onto OUT only when
 * complete, so an error or a crash never leaves a directory that looks like
 * a model. */
typedef struct {
    char *out, *tmp;
    int replace;       /* OUT exists and is not empty: replaced at commit (--force) */
    char *made_parent; /* the highest parent directory we created, removed on abort */
    int created;       /* tmp exists */
} llmq_outdir;

/* Check OUT before any work: a non-empty OUT is refused without force, as
 * is OUT being (or resolving to) the input directory `src`. Creates nothing. */
int llmq_outdir_begin(llmq_outdir *d, const char *out, const char *src, int force);
/* Create the parents of OUT as needed, then the temporary directory. After
 * begin succeeds, every path ends in commit or abort (which also undoes a
 * failed create). */
int llmq_outdir_create(llmq_outdir *d);
/* Rename the temporary onto OUT (replacing the old OUT only after the new
 * one is in place) and release d. */
int llmq_outdir_commit(llmq_outdir *d);
/* Remove the temporary directory and any parents created; release d. */
void llmq_outdir_abort(llmq_outdir *d);

#endif
