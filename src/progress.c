#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double llmq_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_start(llmq_progress *p, const char *what, long total, int quiet)
{
    p->what = what;
    p->total = total;
    p->t0 = p->last = llmq_now();
    p->tty = isatty(fileno(stderr));
    p->quiet = quiet;
    p->drawn = 0;
}

static void format_eta(double s, char *buf, size_t n)
{
    if (s < 0 || s > 1e7)
        snprintf(buf, n, "?");
    else if (s >= 3600)
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, n, "%.0fs", s);
}

void progress_update(llmq_progress *p, long done, const char *rate_label, double rate, const char *extra)
{
    if (p->quiet)
        return;
    double now = llmq_now();
    int finished = done >= p->total;
    if (!finished && now - p->last < (p->tty ? 0.2 : 10.0))
        return;
    p->last = now;
    double el = now - p->t0;
    char eta[32];
    format_eta(done > 0 ? el * (double)(p->total - done) / (double)done : -1, eta, sizeof eta);
    fprintf(stderr, "%s%s %ld/%ld", p->tty ? "\r\033[K" : "", p->what, done, p->total);
    if (rate_label)
        fprintf(stderr, "  %.0f %s", rate, rate_label);
    fprintf(stderr, "  elapsed %.1fs  ETA %s", el, eta);
    if (extra)
        fprintf(stderr, "  %s", extra);
    if (!p->tty)
        fputc('\n', stderr);
    p->drawn = p->tty;
    fflush(stderr);
}

void progress_end(llmq_progress *p)
{
    if (p->drawn && !p->quiet)
        fputc('\n', stderr);
    p->drawn = 0;
}
