#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[2048];

int llmq_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return -1;
}

int llmq_wrap(const char *fmt, ...)
{
    char ctx[1024], old[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    /* Context first, then as much of the old message as still fits. */
    size_t n = (size_t)snprintf(g_msg, sizeof g_msg, "%s", ctx);
    if (old[0] && n + 2 < sizeof g_msg)
        snprintf(g_msg + n, sizeof g_msg - n, ": %.*s", (int)(sizeof g_msg - n - 3), old);
    return -1;
}

const char *llmq_last_error(void) { return g_msg; }

void llmq_clear_error(void) { g_msg[0] = 0; }

void llmq_print_error(const char *prog)
{
    fprintf(stderr, "%s: error: %s\n", prog, g_msg[0] ? g_msg : "unknown error");
}
