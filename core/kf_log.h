/*
 * kf_log: structured logging, one JSON object per line on stderr (or a chosen FILE).
 *
 *   kf_log(KF_LOG_INFO, "consumer", "assigned %d partitions", n);
 *   kf_logkv(KF_LOG_WARN, "dispatch", "topic=kinfer.results partition=3 offset=42",
 *            "callback failed: %s", why);
 *
 * Lines look like
 *   {"ts":"2026-11-22T15:00:00.123Z","level":"info","subsys":"consumer","msg":"...",
 *    "topic":"kinfer.results","partition":"3"}
 * The level is checked before any formatting. Thread-safe: each line is written with a
 * single fwrite under a mutex. Payloads and secrets must never be logged above debug.
 */
#ifndef KF_LOG_H
#define KF_LOG_H

#include <stdio.h>

typedef enum kf_log_level {
    KF_LOG_DEBUG = 0,
    KF_LOG_INFO = 1,
    KF_LOG_WARN = 2,
    KF_LOG_ERROR = 3,
    KF_LOG_OFF = 4
} kf_log_level_t;

/* Sets the minimum level (default: KF_LOG_INFO, or KINFER_LOG_LEVEL from the environment
 * at the first call). */
void kf_log_set_level(kf_log_level_t level);
kf_log_level_t kf_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "off"; returns -1 for anything else. */
int kf_log_level_parse(const char *name);
/* Sends log lines to fp (default stderr). Borrowed: fp must outlive logging. */
void kf_log_set_output(FILE *fp);

/* Non-zero when a message at `level` would be written. */
int kf_log_enabled(kf_log_level_t level);

/* Writes one line. `kv` is NULL or space-separated key=value context pairs (values without
 * spaces), copied into the JSON object as string fields. */
void kf_log_write(kf_log_level_t level, const char *subsys, const char *kv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define kf_log(level, subsys, ...)                          \
    do {                                                    \
        if (kf_log_enabled(level))                          \
            kf_log_write(level, subsys, NULL, __VA_ARGS__); \
    } while (0)

#define kf_logkv(level, subsys, kv, ...)                  \
    do {                                                  \
        if (kf_log_enabled(level))                        \
            kf_log_write(level, subsys, kv, __VA_ARGS__); \
    } while (0)

#endif /* KF_LOG_H */
