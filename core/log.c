/*
 * JSON-lines logger. Formatting happens into a stack buffer, then the whole line is
 * written at once so concurrent threads never interleave inside a line.
 */
#include "kf_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static pthread_mutex_t kf_log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *kf_log_fp;
static int kf_log_level = -1; /* -1: not initialised yet */

static const char *const kf_log_names[] = {"debug", "info", "warn", "error", "off"};

int
kf_log_level_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i <= KF_LOG_OFF; i++)
        if (strcasecmp(name, kf_log_names[i]) == 0)
            return i;
    if (strcasecmp(name, "warning") == 0)
        return KF_LOG_WARN;
    return -1;
}

static int
kf_log_level_now(void)
{
    /* Racy first read is harmless: every thread computes the same value. */
    if (kf_log_level < 0) {
        int lv = kf_log_level_parse(getenv("KINFER_LOG_LEVEL"));
        kf_log_level = lv < 0 ? KF_LOG_INFO : lv;
    }
    return kf_log_level;
}

void
kf_log_set_level(kf_log_level_t level)
{
    kf_log_level = (int)level;
}

kf_log_level_t
kf_log_get_level(void)
{
    return (kf_log_level_t)kf_log_level_now();
}

void
kf_log_set_output(FILE *fp)
{
    pthread_mutex_lock(&kf_log_lock);
    kf_log_fp = fp;
    pthread_mutex_unlock(&kf_log_lock);
}

int
kf_log_enabled(kf_log_level_t level)
{
    return level != KF_LOG_OFF && (int)level >= kf_log_level_now();
}

/* Appends s to buf as JSON string content (without quotes), escaping as needed. */
static size_t
kf_log_escape(char *buf, size_t pos, size_t cap, const char *s, size_t n)
{
    for (size_t i = 0; i < n && pos + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[pos++] = '\\';
            buf[pos++] = (char)c;
        } else if (c == '\n') {
            buf[pos++] = '\\';
            buf[pos++] = 'n';
        } else if (c < 0x20) {
            pos += (size_t)snprintf(buf + pos, cap - pos, "\\u%04x", c);
        } else {
            buf[pos++] = (char)c;
        }
    }
    return pos;
}

static size_t
kf_log_append(char *buf, size_t pos, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (pos + n >= cap)
        n = cap - pos - 1;
    memcpy(buf + pos, s, n);
    return pos + n;
}

void
kf_log_write(kf_log_level_t level, const char *subsys, const char *kv, const char *fmt, ...)
{
    char msg[2048], line[4096], ts[40];
    struct timespec now;
    struct tm tm;
    va_list ap;
    size_t pos = 0, cap = sizeof(line) - 2;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);

    pos += (size_t)snprintf(line, cap, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"subsys\":\"", ts,
                            now.tv_nsec / 1000000L, kf_log_names[level]);
    pos = kf_log_escape(line, pos, cap, subsys ? subsys : "", strlen(subsys ? subsys : ""));
    pos = kf_log_append(line, pos, cap, "\",\"msg\":\"");
    pos = kf_log_escape(line, pos, cap, msg, strlen(msg));
    pos = kf_log_append(line, pos, cap, "\"");

    /* key=value context pairs become extra string fields. */
    for (const char *p = kv; p && *p;) {
        while (*p == ' ')
            p++;
        const char *end = p + strcspn(p, " ");
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq && eq > p) {
            pos = kf_log_append(line, pos, cap, ",\"");
            pos = kf_log_escape(line, pos, cap, p, (size_t)(eq - p));
            pos = kf_log_append(line, pos, cap, "\":\"");
            pos = kf_log_escape(line, pos, cap, eq + 1, (size_t)(end - eq - 1));
            pos = kf_log_append(line, pos, cap, "\"");
        }
        p = end;
    }
    line[pos++] = '}';
    line[pos++] = '\n';

    pthread_mutex_lock(&kf_log_lock);
    FILE *fp = kf_log_fp ? kf_log_fp : stderr;
    fwrite(line, 1, pos, fp);
    fflush(fp);
    pthread_mutex_unlock(&kf_log_lock);
}
