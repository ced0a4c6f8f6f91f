/*
 * Configuration store: registered tables of typed keys plus kafka.* pass-through pairs.
 *
 * Values are kept both as the text that was given (for dumps) and parsed (for getters), so a
 * getter never parses and never fails. Lookups are linear: a process has a few dozen keys and
 * reads them at start-up, so a hash table would buy nothing.
 */
#include "kf_conf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <librdkafka/rdkafka.h>

#include "kf_log.h"

extern char **environ;

const kf_conf_prop_t kf_core_conf_props[] = {
    {.name = "log.level",
     .type = KF_CONF_STRING,
     .def = "info",
     .choices = "debug|info|warn|error|off",
     .desc = "Lowest log level written to stderr."},
    {.name = "metrics.port",
     .type = KF_CONF_INT,
     .def = "0",
     .min = 0,
     .max = 65535,
     .desc = "TCP port of the Prometheus /metrics endpoint; 0 disables it."},
    {.name = NULL},
};

/* One registered key and its current value. */
typedef struct kf_conf_ent {
    const kf_conf_prop_t *prop;
    const char *section;
    char *text; /* value as given (NULL: unset) */
    kf_conf_source_t source;
    union {
        int64_t i; /* INT, BOOL, DURATION (ms) */
        double d;  /* DOUBLE */
    } v;
} kf_conf_ent_t;

/* One kafka.* pair; name is stored without the prefix. */
typedef struct kf_conf_kv {
    char *name;
    char *value;
    kf_conf_source_t source;
} kf_conf_kv_t;

/* A registered table, kept to write docs in registration order. */
typedef struct kf_conf_tab {
    const char *section;
    const kf_conf_prop_t *props;
} kf_conf_tab_t;

struct kf_conf {
    kf_conf_ent_t *ents;
    size_t nents, cap_ents;
    kf_conf_kv_t *kvs;
    size_t nkvs, cap_kvs;
    kf_conf_tab_t *tabs;
    size_t ntabs, cap_tabs;
    /* Scratch librdkafka conf used only to check kafka.* names and values early, so a typo
     * fails with its file line instead of at rd_kafka_new() time. */
    rd_kafka_conf_t *rk_check;
};

static const char kf_conf_kafka_prefix[] = "kafka.";
#define KF_CONF_KAFKA_PREFIX_LEN (sizeof(kf_conf_kafka_prefix) - 1)

static const char *const kf_conf_type_names[] = {"int", "double", "bool", "string", "duration"};
static const char *const kf_conf_src_names[] = {"default", "file", "env", "set"};

static int
kf_conf_is_kafka(const char *key)
{
    return strncmp(key, kf_conf_kafka_prefix, KF_CONF_KAFKA_PREFIX_LEN) == 0 &&
           key[KF_CONF_KAFKA_PREFIX_LEN] != '\0';
}

/* Grows an array of `elem` sized items to hold at least `need` items; aborts on OOM like the
 * rest of start-up code would have to anyway. */
static void *
kf_conf_grow(void *arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return arr;
    size_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(arr, ncap * elem);
    KF_ASSERT(p != NULL);
    *cap = ncap;
    return p;
}

static char *
kf_conf_strdup(const char *s)
{
    char *p = strdup(s);
    KF_ASSERT(p != NULL);
    return p;
}

kf_conf_t *
kf_conf_new(void)
{
    kf_conf_t *conf = calloc(1, sizeof(*conf));
    KF_ASSERT(conf != NULL);
    char errstr[256];
    kf_err_t err = kf_conf_add_table(conf, "core", kf_core_conf_props, errstr, sizeof(errstr));
    KF_ASSERT(err == KF_OK); /* the core table is ours: a failure is a bug */
    return conf;
}

void
kf_conf_destroy(kf_conf_t *conf)
{
    if (!conf)
        return;
    for (size_t i = 0; i < conf->nents; i++)
        free(conf->ents[i].text);
    for (size_t i = 0; i < conf->nkvs; i++) {
        free(conf->kvs[i].name);
        free(conf->kvs[i].value);
    }
    free(conf->ents);
    free(conf->kvs);
    free(conf->tabs);
    if (conf->rk_check)
        rd_kafka_conf_destroy(conf->rk_check);
    free(conf);
}

static kf_conf_ent_t *
kf_conf_find(const kf_conf_t *conf, const char *key)
{
    for (size_t i = 0; i < conf->nents; i++)
        if (strcmp(conf->ents[i].prop->name, key) == 0)
            return &conf->ents[i];
    return NULL;
}

static kf_conf_kv_t *
kf_conf_find_kv(const kf_conf_t *conf, const char *name)
{
    for (size_t i = 0; i < conf->nkvs; i++)
        if (strcmp(conf->kvs[i].name, name) == 0)
            return &conf->kvs[i];
    return NULL;
}

kf_err_t
kf_conf_parse_duration(const char *text, int64_t *out_ms)
{
    if (!text || !out_ms)
        return KF_ERR_INVALID_ARG;
    /* Digits first: strtoll would also accept a sign or leading spaces, which we do not. */
    if (!isdigit((unsigned char)text[0]))
        return KF_ERR_INVALID_ARG;
    errno = 0;
    char *end;
    long long n = strtoll(text, &end, 10);
    if (errno == ERANGE)
        return KF_ERR_INVALID_ARG;
    int64_t mult;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        mult = 3600 * 1000;
    else
        return KF_ERR_INVALID_ARG;
    if (n > INT64_MAX / mult)
        return KF_ERR_INVALID_ARG;
    *out_ms = (int64_t)n * mult;
    return KF_OK;
}

/* Non-zero when `value` is one of the '|'-separated `choices`. */
static int
kf_conf_in_choices(const char *choices, const char *value)
{
    size_t vlen = strlen(value);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == vlen && strncmp(p, value, n) == 0)
            return 1;
        if (!bar)
            break;
        p = bar + 1;
    }
    return 0;
}

/* Parses and range-checks `text` for `prop`; fills *ent_v on success. The message names the
 * key and the value, the two things a user needs to fix it. */
static kf_err_t
kf_conf_parse_value(const kf_conf_prop_t *prop,
                    const char *text,
                    int64_t *out_i,
                    double *out_d,
                    char *errstr,
                    size_t errstr_size)
{
    const char *name = prop->name;
    int ranged = !(prop->min == 0 && prop->max == 0);
    switch (prop->type) {
    case KF_CONF_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(text, &end, 10);
        if (text[0] == '\0' || isspace((unsigned char)text[0]) || *end != '\0' || errno)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "key '%s': value '%s' is not an integer", name, text);
        if (ranged && ((double)n < prop->min || (double)n > prop->max))
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "key '%s': value '%s' is out of range [%.0f, %.0f]", name, text,
                              prop->min, prop->max);
        *out_i = n;
        return KF_OK;
    }
    case KF_CONF_DOUBLE: {
        char *end;
        errno = 0;
        double d = strtod(text, &end);
        if (text[0] == '\0' || isspace((unsigned char)text[0]) || *end != '\0' || errno ||
            !isfinite(d))
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "key '%s': value '%s' is not a finite number", name, text);
        if (ranged && (d < prop->min || d > prop->max))
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "key '%s': value '%s' is out of range [%g, %g]", name, text,
                              prop->min, prop->max);
        *out_d = d;
        return KF_OK;
    }
    case KF_CONF_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (size_t i = 0; i < 4; i++) {
            if (strcasecmp(text, yes[i]) == 0) {
                *out_i = 1;
                return KF_OK;
            }
            if (strcasecmp(text, no[i]) == 0) {
                *out_i = 0;
                return KF_OK;
            }
        }
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                          "key '%s': value '%s' is not a boolean (true/false)", name, text);
    }
    case KF_CONF_DURATION: {
        int64_t ms;
        if (kf_conf_parse_duration(text, &ms) != KF_OK)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "key '%s': value '%s' is not a duration (e.g. 250ms, 30s, 5m, 1h)",
                              name, text);
        if (ranged && ((double)ms < prop->min || (double)ms > prop->max))
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "key '%s': value '%s' is out of range [%.0fms, %.0fms]", name, text,
                              prop->min, prop->max);
        *out_i = ms;
        return KF_OK;
    }
    case KF_CONF_STRING:
        if (prop->choices && !kf_conf_in_choices(prop->choices, text))
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "key '%s': value '%s' is not one of %s", name, text, prop->choices);
        return KF_OK;
    }
    return kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "key '%s': bad type", name);
}

/* Validates then stores `text` into ent; on failure ent is unchanged. */
static kf_err_t
kf_conf_ent_set(
    kf_conf_ent_t *ent, const char *text, kf_conf_source_t source, char *errstr, size_t errstr_size)
{
    int64_t i = 0;
    double d = 0;
    kf_err_t err = kf_conf_parse_value(ent->prop, text, &i, &d, errstr, errstr_size);
    if (err)
        return err;
    char *copy = kf_conf_strdup(text);
    free(ent->text);
    ent->text = copy;
    ent->source = source;
    if (ent->prop->type == KF_CONF_DOUBLE)
        ent->v.d = d;
    else
        ent->v.i = i;
    return KF_OK;
}

/* Two declarations of one key agree when type and default are the same. */
static int
kf_conf_prop_same(const kf_conf_prop_t *a, const kf_conf_prop_t *b)
{
    if (a->type != b->type)
        return 0;
    if (!a->def || !b->def)
        return a->def == b->def;
    return strcmp(a->def, b->def) == 0;
}

kf_err_t
kf_conf_add_table(kf_conf_t *conf,
                  const char *section,
                  const kf_conf_prop_t *props,
                  char *errstr,
                  size_t errstr_size)
{
    KF_ASSERT(conf && section && props);
    for (size_t t = 0; t < conf->ntabs; t++)
        if (conf->tabs[t].props == props)
            return KF_OK; /* idempotent: two modules may both register a shared table */
    /* Check the whole table before adding anything, so a failure leaves conf unchanged. */
    size_t n = 0;
    for (const kf_conf_prop_t *p = props; p->name; p++, n++) {
        if (kf_conf_is_kafka(p->name))
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "table '%s': key '%s' is in the kafka.* pass-through namespace",
                              section, p->name);
        /* Stages that share a key (topics.*, pg.dsn) may each declare it: an identical
         * declaration is the same key and is kept once; a conflicting one is an error. */
        const kf_conf_ent_t *prev = kf_conf_find(conf, p->name);
        if (prev && kf_conf_prop_same(prev->prop, p))
            continue;
        if (prev)
            return kf_err_set(errstr, errstr_size, KF_ERR_EXISTS,
                              "table '%s': key '%s' is already registered by table '%s' with a "
                              "different type or default",
                              section, p->name, prev->section);
        for (const kf_conf_prop_t *q = props; q < p; q++)
            if (strcmp(q->name, p->name) == 0)
                return kf_err_set(errstr, errstr_size, KF_ERR_EXISTS,
                                  "table '%s': key '%s' appears twice", section, p->name);
        if (p->def) {
            int64_t i;
            double d;
            kf_err_t err = kf_conf_parse_value(p, p->def, &i, &d, errstr, errstr_size);
            if (err)
                return err;
        }
    }
    conf->ents = kf_conf_grow(conf->ents, &conf->cap_ents, conf->nents + n, sizeof(*conf->ents));
    for (const kf_conf_prop_t *p = props; p->name; p++) {
        if (kf_conf_find(conf, p->name))
            continue; /* identical shared key, checked above */
        kf_conf_ent_t *ent = &conf->ents[conf->nents++];
        memset(ent, 0, sizeof(*ent));
        ent->prop = p;
        ent->section = section;
        if (p->def)
            (void)kf_conf_ent_set(ent, p->def, KF_CONF_SRC_DEFAULT, errstr, errstr_size);
    }
    conf->tabs = kf_conf_grow(conf->tabs, &conf->cap_tabs, conf->ntabs + 1, sizeof(*conf->tabs));
    conf->tabs[conf->ntabs++] = (kf_conf_tab_t){.section = section, .props = props};
    return KF_OK;
}

/* Checks a kafka.* property against librdkafka. Returns RD_KAFKA_CONF_OK, _UNKNOWN or
 * _INVALID with librdkafka's message in errstr. */
static rd_kafka_conf_res_t
kf_conf_kafka_check(kf_conf_t *conf, const char *name, const char *value, char *msg, size_t size)
{
    if (!conf->rk_check)
        conf->rk_check = rd_kafka_conf_new();
    return rd_kafka_conf_set(conf->rk_check, name, value, msg, size);
}

static kf_err_t
kf_conf_set_src(kf_conf_t *conf,
                const char *key,
                const char *value,
                kf_conf_source_t source,
                char *errstr,
                size_t errstr_size)
{
    if (kf_conf_is_kafka(key)) {
        const char *name = key + KF_CONF_KAFKA_PREFIX_LEN;
        char msg[512];
        rd_kafka_conf_res_t res = kf_conf_kafka_check(conf, name, value, msg, sizeof(msg));
        if (res != RD_KAFKA_CONF_OK)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "key '%s': %s", key, msg);
        kf_conf_kv_t *kv = kf_conf_find_kv(conf, name);
        if (!kv) {
            conf->kvs = kf_conf_grow(conf->kvs, &conf->cap_kvs, conf->nkvs + 1, sizeof(*kv));
            kv = &conf->kvs[conf->nkvs++];
            kv->name = kf_conf_strdup(name);
            kv->value = NULL;
        }
        char *copy = kf_conf_strdup(value);
        free(kv->value);
        kv->value = copy;
        kv->source = source;
        return KF_OK;
    }
    kf_conf_ent_t *ent = kf_conf_find(conf, key);
    if (!ent)
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "unknown key '%s'", key);
    return kf_conf_ent_set(ent, value, source, errstr, errstr_size);
}

kf_err_t
kf_conf_set_assignment(kf_conf_t *conf, const char *assignment, char *errstr, size_t errstr_size)
{
    const char *eq = strchr(assignment, '=');
    if (!eq)
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "--set needs KEY=VALUE, got '%s'",
                          assignment);
    char *key = strndup(assignment, (size_t)(eq - assignment));
    if (!key)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    kf_err_t err = kf_conf_set(conf, key, eq + 1, errstr, errstr_size);
    free(key);
    return err;
}

kf_err_t
kf_conf_set(kf_conf_t *conf, const char *key, const char *value, char *errstr, size_t errstr_size)
{
    if (!conf || !key || !value)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "kf_conf_set: NULL argument");
    return kf_conf_set_src(conf, key, value, KF_CONF_SRC_SET, errstr, errstr_size);
}

/* ---- file parsing ---- */

static int
kf_conf_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* Parses one line [p, end) into key and value (written NUL-terminated into `out`, which has
 * room for the line). Returns 0 for a blank/comment line, 1 for a pair, -1 with a message. */
static int
kf_conf_parse_line(const char *p,
                   const char *end,
                   char *out,
                   const char **out_key,
                   const char **out_value,
                   const char **out_why)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
        p++;
    if (p == end || *p == '#')
        return 0;
    const char *k0 = p;
    while (p < end && kf_conf_key_char(*p))
        p++;
    size_t klen = (size_t)(p - k0);
    if (klen == 0) {
        *out_why = "expected a key (letters, digits, '.', '_', '-')";
        return -1;
    }
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p == end || *p != '=') {
        *out_why = "expected '=' after the key";
        return -1;
    }
    p++;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    memcpy(out, k0, klen);
    out[klen] = '\0';
    *out_key = out;
    char *v = out + klen + 1;
    *out_value = v;
    size_t vlen = 0;
    if (p < end && *p == '"') {
        /* Quoted: keeps '#' and surrounding spaces; only \" and \\ are escapes. */
        p++;
        for (;;) {
            if (p == end) {
                *out_why = "unterminated double quote";
                return -1;
            }
            if (*p == '"')
                break;
            if (*p == '\\' && p + 1 < end && (p[1] == '"' || p[1] == '\\'))
                p++;
            v[vlen++] = *p++;
        }
        p++;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
            p++;
        if (p < end && *p != '#') {
            *out_why = "unexpected text after the closing quote";
            return -1;
        }
    } else {
        while (p < end && *p != '#')
            v[vlen++] = *p++;
        while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t' || v[vlen - 1] == '\r'))
            vlen--;
    }
    v[vlen] = '\0';
    if (memchr(v, '\0', vlen)) {
        *out_why = "NUL byte in the value";
        return -1;
    }
    return 1;
}

kf_err_t
kf_conf_load_string(kf_conf_t *conf,
                    const char *text,
                    size_t len,
                    const char *origin,
                    char *errstr,
                    size_t errstr_size)
{
    if (!conf || (!text && len))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "kf_conf_load: NULL argument");
    if (!origin)
        origin = "<string>";
    const char *p = text, *end = text + len;
    char *scratch = NULL;
    size_t scratch_cap = 0;
    kf_err_t err = KF_OK;
    for (int lineno = 1; p < end; lineno++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        size_t need = (size_t)(eol - p) + 2;
        if (need > scratch_cap) {
            free(scratch);
            scratch = malloc(need);
            KF_ASSERT(scratch != NULL);
            scratch_cap = need;
        }
        const char *key, *value, *why = NULL;
        int r = kf_conf_parse_line(p, eol, scratch, &key, &value, &why);
        if (r < 0) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s:%d: %s", origin, lineno, why);
            goto out;
        }
        if (r > 0) {
            char msg[512];
            err = kf_conf_set_src(conf, key, value, KF_CONF_SRC_FILE, msg, sizeof(msg));
            if (err) {
                kf_err_set(errstr, errstr_size, err, "%s:%d: %s", origin, lineno, msg);
                goto out;
            }
        }
        p = nl ? nl + 1 : end;
    }
out:
    free(scratch);
    return err;
}

kf_err_t
kf_conf_load_file(kf_conf_t *conf, const char *path, char *errstr, size_t errstr_size)
{
    if (!conf || !path)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "kf_conf_load_file: NULL");
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return kf_err_set(errstr, errstr_size, KF_ERR_IO, "%s: cannot open: %s", path,
                          strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    kf_err_t err = KF_OK;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            /* A configuration file is small; refuse anything absurd rather than eat memory. */
            if (cap > (64u << 20)) {
                err = kf_err_set(errstr, errstr_size, KF_ERR_LIMIT, "%s: larger than 64 MiB", path);
                goto out;
            }
            char *nb = realloc(buf, cap);
            KF_ASSERT(nb != NULL);
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, fp);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(fp)) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_IO, "%s: read error", path);
        goto out;
    }
    err = kf_conf_load_string(conf, buf, len, path, errstr, errstr_size);
out:
    free(buf);
    fclose(fp);
    return err;
}

/* ---- environment ---- */

size_t
kf_conf_env_name(const char *key, char *buf, size_t size)
{
    static const char prefix[] = "KINFER_";
    size_t n = 0, klen = strlen(key);
    size_t total = sizeof(prefix) - 1 + klen;
    for (size_t i = 0; i < total; i++) {
        char c = i < sizeof(prefix) - 1 ? prefix[i] : key[i - (sizeof(prefix) - 1)];
        if (c == '.' || c == '-')
            c = '_';
        c = (char)toupper((unsigned char)c);
        if (n + 1 < size)
            buf[n++] = c;
    }
    if (size)
        buf[n] = '\0';
    return total;
}

kf_err_t
kf_conf_load_env(kf_conf_t *conf, char *const *envp, char *errstr, size_t errstr_size)
{
    if (!conf)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "kf_conf_load_env: NULL");
    if (!envp)
        envp = environ;
    static const char kprefix[] = "KINFER_KAFKA_";
    for (char *const *e = envp; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || strncmp(*e, "KINFER_", 7) != 0)
            continue;
        size_t nlen = (size_t)(eq - *e);
        const char *value = eq + 1;
        /* Registered keys first: their env name is computed from the key, never guessed. */
        int matched = 0;
        for (size_t i = 0; i < conf->nents && !matched; i++) {
            char name[256];
            size_t full = kf_conf_env_name(conf->ents[i].prop->name, name, sizeof(name));
            if (full != nlen || strncmp(name, *e, nlen) != 0)
                continue;
            matched = 1;
            char msg[512];
            kf_err_t err =
                kf_conf_ent_set(&conf->ents[i], value, KF_CONF_SRC_ENV, msg, sizeof(msg));
            if (err)
                return kf_err_set(errstr, errstr_size, err, "environment %.*s: %s", (int)nlen, *e,
                                  msg);
        }
        if (matched || nlen <= sizeof(kprefix) - 1 || strncmp(*e, kprefix, sizeof(kprefix) - 1))
            continue;
        /* KINFER_KAFKA_A_B -> kafka.a.b; kept only when librdkafka knows the name. */
        char key[256];
        if (nlen >= sizeof(key))
            continue;
        size_t k = 0;
        for (size_t i = 7; i < nlen; i++) {
            char c = (char)tolower((unsigned char)(*e)[i]);
            key[k++] = c == '_' ? '.' : c;
        }
        key[k] = '\0';
        char msg[512];
        rd_kafka_conf_res_t res =
            kf_conf_kafka_check(conf, key + KF_CONF_KAFKA_PREFIX_LEN, value, msg, sizeof(msg));
        if (res == RD_KAFKA_CONF_UNKNOWN)
            continue;
        if (res != RD_KAFKA_CONF_OK)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "environment %.*s: key '%s': %s",
                              (int)nlen, *e, key, msg);
        kf_err_t err = kf_conf_set_src(conf, key, value, KF_CONF_SRC_ENV, msg, sizeof(msg));
        if (err)
            return kf_err_set(errstr, errstr_size, err, "environment %.*s: %s", (int)nlen, *e, msg);
    }
    return KF_OK;
}

/* ---- getters ---- */

static const kf_conf_ent_t *
kf_conf_get(const kf_conf_t *conf, const char *key, kf_conf_type_t type)
{
    KF_ASSERT(conf && key);
    const kf_conf_ent_t *ent = kf_conf_find(conf, key);
    if (!ent || ent->prop->type != type) {
        fprintf(stderr, "kinfer: config key '%s' is %s\n", key,
                ent ? "read with the wrong type" : "not registered");
        KF_ASSERT(!"config key misuse");
    }
    return ent;
}

int64_t
kf_conf_get_int(const kf_conf_t *conf, const char *key)
{
    return kf_conf_get(conf, key, KF_CONF_INT)->v.i;
}

double
kf_conf_get_double(const kf_conf_t *conf, const char *key)
{
    return kf_conf_get(conf, key, KF_CONF_DOUBLE)->v.d;
}

int
kf_conf_get_bool(const kf_conf_t *conf, const char *key)
{
    return (int)kf_conf_get(conf, key, KF_CONF_BOOL)->v.i;
}

const char *
kf_conf_get_str(const kf_conf_t *conf, const char *key)
{
    return kf_conf_get(conf, key, KF_CONF_STRING)->text;
}

int64_t
kf_conf_get_duration_ms(const kf_conf_t *conf, const char *key)
{
    return kf_conf_get(conf, key, KF_CONF_DURATION)->v.i;
}

kf_conf_source_t
kf_conf_source(const kf_conf_t *conf, const char *key)
{
    KF_ASSERT(conf && key);
    if (kf_conf_is_kafka(key)) {
        const kf_conf_kv_t *kv = kf_conf_find_kv(conf, key + KF_CONF_KAFKA_PREFIX_LEN);
        return kv ? kv->source : KF_CONF_SRC_DEFAULT;
    }
    const kf_conf_ent_t *ent = kf_conf_find(conf, key);
    return ent ? ent->source : KF_CONF_SRC_DEFAULT;
}

int
kf_conf_has(const kf_conf_t *conf, const char *key)
{
    KF_ASSERT(conf && key);
    if (kf_conf_is_kafka(key))
        return kf_conf_find_kv(conf, key + KF_CONF_KAFKA_PREFIX_LEN) != NULL;
    return kf_conf_find(conf, key) != NULL;
}

size_t
kf_conf_kafka_count(const kf_conf_t *conf)
{
    KF_ASSERT(conf);
    return conf->nkvs;
}

void
kf_conf_kafka_at(const kf_conf_t *conf, size_t idx, const char **out_name, const char **out_value)
{
    KF_ASSERT(conf && idx < conf->nkvs);
    if (out_name)
        *out_name = conf->kvs[idx].name;
    if (out_value)
        *out_value = conf->kvs[idx].value;
}

void
kf_conf_apply_core(const kf_conf_t *conf)
{
    /* log.level is validated against the same names kf_log_level_parse accepts. */
    int level = kf_log_level_parse(kf_conf_get_str(conf, "log.level"));
    if (level >= 0)
        kf_log_set_level((kf_log_level_t)level);
}

/* ---- dump and docs ---- */

/* Writes a value so that kf_conf_load_file reads it back unchanged: quoted when it holds
 * '#', '"', leading/trailing blanks, or is empty. */
static void
kf_conf_write_value(FILE *fp, const char *v)
{
    size_t n = strlen(v);
    int quote = n == 0 || strpbrk(v, "#\"\\") || isspace((unsigned char)v[0]) ||
                isspace((unsigned char)v[n - 1]);
    if (!quote) {
        fputs(v, fp);
        return;
    }
    fputc('"', fp);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\')
            fputc('\\', fp);
        fputc(*p, fp);
    }
    fputc('"', fp);
}

static int
kf_conf_kafka_secret(const char *name)
{
    return strstr(name, "password") || strstr(name, "secret");
}

/* Sort helpers: dumps are sorted so two dumps can be diffed. */
static int
kf_conf_cmp_ent(const void *a, const void *b)
{
    const kf_conf_ent_t *const *x = a, *const *y = b;
    return strcmp((*x)->prop->name, (*y)->prop->name);
}

static int
kf_conf_cmp_kv(const void *a, const void *b)
{
    const kf_conf_kv_t *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

void
kf_conf_dump(const kf_conf_t *conf, FILE *fp)
{
    KF_ASSERT(conf && fp);
    const kf_conf_ent_t **ents = calloc(conf->nents + 1, sizeof(*ents));
    const kf_conf_kv_t **kvs = calloc(conf->nkvs + 1, sizeof(*kvs));
    KF_ASSERT(ents && kvs);
    for (size_t i = 0; i < conf->nents; i++)
        ents[i] = &conf->ents[i];
    for (size_t i = 0; i < conf->nkvs; i++)
        kvs[i] = &conf->kvs[i];
    qsort(ents, conf->nents, sizeof(*ents), kf_conf_cmp_ent);
    qsort(kvs, conf->nkvs, sizeof(*kvs), kf_conf_cmp_kv);
    for (size_t i = 0; i < conf->nents; i++) {
        const kf_conf_ent_t *ent = ents[i];
        if (!ent->text)
            fprintf(fp, "# %s is unset", ent->prop->name);
        else {
            fprintf(fp, "%s = ", ent->prop->name);
            if (ent->prop->flags & KF_CONF_F_SECRET)
                fputs("***", fp);
            else
                kf_conf_write_value(fp, ent->text);
        }
        fprintf(fp, "  # %s\n", kf_conf_src_names[ent->source]);
    }
    for (size_t i = 0; i < conf->nkvs; i++) {
        fprintf(fp, "kafka.%s = ", kvs[i]->name);
        if (kf_conf_kafka_secret(kvs[i]->name))
            fputs("***", fp);
        else
            kf_conf_write_value(fp, kvs[i]->value);
        fprintf(fp, "  # %s\n", kf_conf_src_names[kvs[i]->source]);
    }
    free(ents);
    free(kvs);
}

/* Markdown cells must not contain '|' unescaped. */
static void
kf_conf_md_cell(FILE *fp, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            fputc('\\', fp);
        fputc(*s, fp);
    }
}

void
kf_conf_write_docs(const kf_conf_t *conf, FILE *fp)
{
    KF_ASSERT(conf && fp);
    for (size_t t = 0; t < conf->ntabs; t++) {
        fprintf(fp, "### Section `%s`\n\n", conf->tabs[t].section);
        fputs("| Key | Type | Default | Range | Environment | Description |\n", fp);
        fputs("|---|---|---|---|---|---|\n", fp);
        for (const kf_conf_prop_t *p = conf->tabs[t].props; p->name; p++) {
            char env[256];
            kf_conf_env_name(p->name, env, sizeof(env));
            fprintf(fp, "| `%s` | %s | ", p->name, kf_conf_type_names[p->type]);
            if (p->def && p->def[0]) {
                fputc('`', fp);
                kf_conf_md_cell(fp, p->def);
                fputc('`', fp);
            } else {
                fputs("(unset)", fp);
            }
            fputs(" | ", fp);
            if (p->type == KF_CONF_STRING && p->choices) {
                kf_conf_md_cell(fp, p->choices);
            } else if (!(p->min == 0 && p->max == 0)) {
                const char *unit = p->type == KF_CONF_DURATION ? "ms" : "";
                fprintf(fp, "%.15g%s .. %.15g%s", p->min, unit, p->max, unit);
            }
            fprintf(fp, " | `%s` | ", env);
            kf_conf_md_cell(fp, p->desc ? p->desc : "");
            if (p->flags & KF_CONF_F_SECRET)
                fputs(" Secret: masked in dumps.", fp);
            fputs(" |\n", fp);
        }
        fputc('\n', fp);
    }
}
