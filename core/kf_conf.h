/*
 * kf_conf: declarative configuration for every kinfer module.
 *
 * Each module describes its keys once, in a static table (librdkafka's rd_kafka_properties[],
 * Redis' static_configs[]):
 *
 *   static const kf_conf_prop_t kf_worker_conf_props[] = {
 *       {.name = "worker.batch.max", .type = KF_CONF_INT, .def = "32", .min = 1, .max = 4096,
 *        .desc = "Largest number of requests decoded in one batch."},
 *       {.name = "worker.api.key", .type = KF_CONF_STRING, .flags = KF_CONF_F_SECRET,
 *        .desc = "Key sent to the upstream API."},
 *       {.name = NULL}};
 *
 * and registers it on a kf_conf_t with kf_conf_add_table(). The same table drives parsing,
 * validation (type, min, max, choices), --dump-config (kf_conf_dump) and the key tables of
 * docs/configuration.md (kf_conf_write_docs).
 *
 * Sources, later ones win: table default < file (kf_conf_load_file, `key = value` lines) <
 * environment (kf_conf_load_env: KINFER_ + key upper-cased with '.' -> '_', e.g.
 * log.level <- KINFER_LOG_LEVEL) < kf_conf_set() (command line).
 * Keys starting with "kafka." are not in any table: they pass through untyped to
 * rd_kafka_conf_set() (the name is checked against librdkafka when loaded) and are listed with
 * kf_conf_kafka_count()/kf_conf_kafka_at(). From the environment, KINFER_KAFKA_A_B maps to
 * kafka.a.b (librdkafka names have no '_'); names librdkafka does not know are ignored there,
 * because the environment is shared with other tools (KINFER_KAFKA_BROKERS of the dev stack).
 *
 * Thread-safety: build and load a kf_conf_t from one thread; once loading is done, any number
 * of threads may call the getters concurrently.
 */
#ifndef KF_CONF_H
#define KF_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kf_err.h"

typedef struct kf_conf kf_conf_t;

typedef enum kf_conf_type {
    KF_CONF_INT,      /* 64-bit signed integer, decimal */
    KF_CONF_DOUBLE,   /* finite floating point number */
    KF_CONF_BOOL,     /* true/false, yes/no, on/off, 1/0 (case-insensitive) */
    KF_CONF_STRING,   /* any text; optional .choices restricts it */
    KF_CONF_DURATION, /* integer with unit ms, s, m or h ("250ms", "30s"); a bare number is ms */
} kf_conf_type_t;

/* kf_conf_prop_t.flags */
#define KF_CONF_F_SECRET 0x1 /* value masked as "***" by kf_conf_dump (passwords, keys, DSNs) */

typedef struct kf_conf_prop {
    const char *name; /* dotted lowercase key, e.g. "pg.statement.timeout"; NULL ends a table */
    kf_conf_type_t type;
    const char *def;     /* default written as in a file ("30s", "true"); NULL: unset */
    double min, max;     /* inclusive bounds for INT, DOUBLE, DURATION (in ms); unchecked when
                            both are 0 */
    const char *choices; /* STRING only: allowed values separated by '|', e.g. "debug|info";
                            NULL: any */
    int flags;           /* KF_CONF_F_* */
    const char *desc;    /* one sentence for the docs and --help */
} kf_conf_prop_t;

/* Where the current value of a key came from. */
typedef enum kf_conf_source {
    KF_CONF_SRC_DEFAULT,
    KF_CONF_SRC_FILE,
    KF_CONF_SRC_ENV,
    KF_CONF_SRC_SET, /* kf_conf_set(): command line or code */
} kf_conf_source_t;

/* The core table (log.level, ...), registered by kf_conf_new(). NULL-name terminated. */
extern const kf_conf_prop_t kf_core_conf_props[];

/* Creates an empty configuration holding the core table with its defaults. Never NULL. */
kf_conf_t *kf_conf_new(void);
void kf_conf_destroy(kf_conf_t *conf);

/* Registers a table (NULL-name terminated, borrowed: it must outlive conf; use static const).
 * `section` names the table in docs and dumps ("worker"). Defaults are validated here.
 * Adding the same table twice is a no-op. Errors: KF_ERR_EXISTS when a key is already
 * registered by another table, KF_ERR_CONFIG for an invalid default or a "kafka." key. */
kf_err_t kf_conf_add_table(kf_conf_t *conf,
                           const char *section,
                           const kf_conf_prop_t *props,
                           char *errstr,
                           size_t errstr_size);

/* Parses `key = value` lines: '#' starts a comment (outside double quotes), blank lines are
 * skipped, whitespace around key and value is trimmed, a value may be double-quoted (\" and
 * \\ escapes inside). Errors name the file, line, key and value: KF_ERR_IO (cannot read),
 * KF_ERR_PARSE (malformed line), KF_ERR_CONFIG (unknown key, bad value). On error, lines before
 * the bad one stay applied. kf_conf_load_string takes the text itself; `origin` names it in
 * messages in place of a file name (NULL: "<string>"). */
kf_err_t kf_conf_load_file(kf_conf_t *conf, const char *path, char *errstr, size_t errstr_size);
kf_err_t kf_conf_load_string(kf_conf_t *conf,
                             const char *text,
                             size_t len,
                             const char *origin,
                             char *errstr,
                             size_t errstr_size);

/* Applies KINFER_* overrides from `envp` (NULL-terminated "NAME=value" strings; NULL means the
 * process environment). Registered keys map as KINFER_ + upper(key) with '.' -> '_'; variables
 * matching no key are ignored. Errors: KF_ERR_CONFIG naming the variable, key and value. */
kf_err_t kf_conf_load_env(kf_conf_t *conf, char *const *envp, char *errstr, size_t errstr_size);

/* Sets one key (registered or kafka.*) from text, source KF_CONF_SRC_SET. Errors: KF_ERR_CONFIG
 * for an unknown key or a value that fails validation (message names both). */
kf_err_t
kf_conf_set(kf_conf_t *conf, const char *key, const char *value, char *errstr, size_t errstr_size);

/* Sets one "KEY=VALUE" assignment (the argument of a --set option); KF_ERR_CONFIG naming the
 * text when it has no '='. */
kf_err_t
kf_conf_set_assignment(kf_conf_t *conf, const char *assignment, char *errstr, size_t errstr_size);

/* Applies the core keys to the process: log.level -> kf_log_set_level(). Call after loading. */
void kf_conf_apply_core(const kf_conf_t *conf);

/* Typed getters for registered keys. Asking for an unregistered key or with the wrong type is a
 * programmer error (KF_ASSERT). kf_conf_get_str returns borrowed memory valid until the key is
 * set again, or NULL when the key has no value. Durations are in milliseconds. */
int64_t kf_conf_get_int(const kf_conf_t *conf, const char *key);
double kf_conf_get_double(const kf_conf_t *conf, const char *key);
int kf_conf_get_bool(const kf_conf_t *conf, const char *key);
const char *kf_conf_get_str(const kf_conf_t *conf, const char *key);
int64_t kf_conf_get_duration_ms(const kf_conf_t *conf, const char *key);
/* Source of a registered or kafka.* key; KF_CONF_SRC_DEFAULT when never set. */
kf_conf_source_t kf_conf_source(const kf_conf_t *conf, const char *key);
/* Non-zero when `key` is registered (or is a kafka.* key that was set). */
int kf_conf_has(const kf_conf_t *conf, const char *key);

/* Pass-through librdkafka properties, in the order first set. out_name has no "kafka." prefix
 * ("bootstrap.servers"). Borrowed strings, valid until conf changes. */
size_t kf_conf_kafka_count(const kf_conf_t *conf);
void
kf_conf_kafka_at(const kf_conf_t *conf, size_t idx, const char **out_name, const char **out_value);

/* Writes every key, sorted, as `key = value  # source` lines (the --dump-config output, itself
 * loadable by kf_conf_load_file). Secret keys, and kafka.* keys whose name contains "password"
 * or "secret", print "***" when set. */
void kf_conf_dump(const kf_conf_t *conf, FILE *fp);

/* Writes a Markdown table per registered section (key, type, default, range, description) for
 * docs/configuration.md. */
void kf_conf_write_docs(const kf_conf_t *conf, FILE *fp);

/* The environment variable of a key: "KINFER_" + upper(key), '.' -> '_'. Writes at most
 * size bytes (NUL-terminated) and returns the full length, like snprintf. */
size_t kf_conf_env_name(const char *key, char *buf, size_t size);

/* Parses a duration ("250ms", "30s", "5m", "1h", bare number = ms) into milliseconds.
 * KF_ERR_INVALID_ARG on anything else. */
kf_err_t kf_conf_parse_duration(const char *text, int64_t *out_ms);

#endif /* KF_CONF_H */
