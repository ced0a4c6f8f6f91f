/*
 * Prometheus registry. Values are doubles stored as their bit patterns in 64-bit atomics, so
 * updates never take a lock; adds use a compare-and-swap loop. Histogram buckets are counted
 * non-cumulatively (one atomic increment per observation) and accumulated when rendering;
 * _count is the sum of the buckets so a page is always self-consistent even while observations
 * race with the render.
 */
#include "kf_metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef enum kf_metrics_kind {
    KF_METRICS_COUNTER,
    KF_METRICS_GAUGE,
    KF_METRICS_HISTOGRAM,
} kf_metrics_kind_t;

static const char *const kf_metrics_kind_names[] = {"counter", "gauge", "histogram"};

struct kf_metrics_series {
    kf_metrics_family_t *fam;
    char **values;             /* one per label name */
    _Atomic uint64_t bits;     /* counter/gauge value, or histogram sum */
    _Atomic uint64_t *buckets; /* histogram: nbuckets + 1 counts, last is +Inf */
    kf_metrics_series_t *next;
};

struct kf_metrics_family {
    kf_metrics_t *reg;
    kf_metrics_kind_t kind;
    char *name;
    char *help;
    char *label_spec; /* as registered, to compare re-registrations */
    char **labels;
    size_t nlabels;
    double *bounds;
    size_t nbounds;
    kf_metrics_series_t *head, *tail;
    size_t nseries;
    kf_metrics_family_t *next;
};

struct kf_metrics {
    pthread_mutex_t lock;
    kf_metrics_family_t *head, *tail;
};

static uint64_t
kf_metrics_d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double
kf_metrics_u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

kf_metrics_t *
kf_metrics_new(void)
{
    kf_metrics_t *reg = calloc(1, sizeof(*reg));
    KF_ASSERT(reg != NULL);
    pthread_mutex_init(&reg->lock, NULL);
    return reg;
}

static void
kf_metrics_series_free(kf_metrics_series_t *s, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->buckets);
    free(s);
}

void
kf_metrics_destroy(kf_metrics_t *reg)
{
    if (!reg)
        return;
    kf_metrics_family_t *fam = reg->head;
    while (fam) {
        kf_metrics_family_t *fnext = fam->next;
        kf_metrics_series_t *s = fam->head;
        while (s) {
            kf_metrics_series_t *snext = s->next;
            kf_metrics_series_free(s, fam->nlabels);
            s = snext;
        }
        for (size_t i = 0; i < fam->nlabels; i++)
            free(fam->labels[i]);
        free(fam->labels);
        free(fam->bounds);
        free(fam->name);
        free(fam->help);
        free(fam->label_spec);
        free(fam);
        fam = fnext;
    }
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

/* Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names: the same without ':' and not "__*". */
static int
kf_metrics_valid_name(const char *s, int is_label)
{
    if (!s || !*s)
        return 0;
    if (is_label && strncmp(s, "__", 2) == 0)
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (!is_label && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

static char *
kf_metrics_strdup(const char *s)
{
    char *p = strdup(s);
    KF_ASSERT(p != NULL);
    return p;
}

static kf_metrics_series_t *kf_metrics_series_new(kf_metrics_family_t *fam,
                                                  const char *const *values);

static kf_metrics_family_t *
kf_metrics_family(kf_metrics_t *reg,
                  kf_metrics_kind_t kind,
                  const char *name,
                  const char *help,
                  const char *label_names,
                  const double *buckets,
                  size_t nbuckets)
{
    KF_ASSERT(reg && help);
    KF_ASSERT(kf_metrics_valid_name(name, 0));
    const char *spec = label_names ? label_names : "";
    pthread_mutex_lock(&reg->lock);
    for (kf_metrics_family_t *f = reg->head; f; f = f->next) {
        if (strcmp(f->name, name) != 0)
            continue;
        /* Same name: only an identical re-registration is allowed. */
        int same = f->kind == kind && strcmp(f->label_spec, spec) == 0 && f->nbounds == nbuckets;
        for (size_t i = 0; same && i < nbuckets; i++)
            same = f->bounds[i] == buckets[i];
        pthread_mutex_unlock(&reg->lock);
        KF_ASSERT(same);
        return f;
    }
    kf_metrics_family_t *fam = calloc(1, sizeof(*fam));
    KF_ASSERT(fam != NULL);
    fam->reg = reg;
    fam->kind = kind;
    fam->name = kf_metrics_strdup(name);
    fam->help = kf_metrics_strdup(help);
    fam->label_spec = kf_metrics_strdup(spec);
    /* Split "a,b" into label names. */
    if (*spec) {
        char *copy = kf_metrics_strdup(spec), *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            KF_ASSERT(kf_metrics_valid_name(tok, 1));
            KF_ASSERT(!(kind == KF_METRICS_HISTOGRAM && strcmp(tok, "le") == 0));
            fam->labels = realloc(fam->labels, (fam->nlabels + 1) * sizeof(*fam->labels));
            KF_ASSERT(fam->labels != NULL);
            fam->labels[fam->nlabels++] = kf_metrics_strdup(tok);
        }
        free(copy);
    }
    if (kind == KF_METRICS_HISTOGRAM) {
        KF_ASSERT(buckets && nbuckets >= 1 && nbuckets <= KF_METRICS_MAX_BUCKETS);
        fam->bounds = malloc(nbuckets * sizeof(*fam->bounds));
        KF_ASSERT(fam->bounds != NULL);
        for (size_t i = 0; i < nbuckets; i++) {
            KF_ASSERT(isfinite(buckets[i]));
            KF_ASSERT(i == 0 || buckets[i] > buckets[i - 1]);
            fam->bounds[i] = buckets[i];
        }
        fam->nbounds = nbuckets;
    }
    if (reg->tail)
        reg->tail->next = fam;
    else
        reg->head = fam;
    reg->tail = fam;
    /* An unlabelled family always has its one series, so it renders 0 before any update. */
    if (fam->nlabels == 0)
        kf_metrics_series_new(fam, NULL);
    pthread_mutex_unlock(&reg->lock);
    return fam;
}

kf_metrics_family_t *
kf_metrics_counter(kf_metrics_t *reg, const char *name, const char *help, const char *label_names)
{
    return kf_metrics_family(reg, KF_METRICS_COUNTER, name, help, label_names, NULL, 0);
}

kf_metrics_family_t *
kf_metrics_gauge(kf_metrics_t *reg, const char *name, const char *help, const char *label_names)
{
    return kf_metrics_family(reg, KF_METRICS_GAUGE, name, help, label_names, NULL, 0);
}

kf_metrics_family_t *
kf_metrics_histogram(kf_metrics_t *reg,
                     const char *name,
                     const char *help,
                     const char *label_names,
                     const double *buckets,
                     size_t nbuckets)
{
    return kf_metrics_family(reg, KF_METRICS_HISTOGRAM, name, help, label_names, buckets, nbuckets);
}

/* Caller holds the registry lock. */
static kf_metrics_series_t *
kf_metrics_series_new(kf_metrics_family_t *fam, const char *const *values)
{
    if (fam->nseries >= KF_METRICS_MAX_SERIES)
        return NULL;
    kf_metrics_series_t *s = calloc(1, sizeof(*s));
    KF_ASSERT(s != NULL);
    s->fam = fam;
    if (fam->nlabels) {
        s->values = calloc(fam->nlabels, sizeof(*s->values));
        KF_ASSERT(s->values != NULL);
        for (size_t i = 0; i < fam->nlabels; i++)
            s->values[i] = kf_metrics_strdup(values[i]);
    }
    atomic_init(&s->bits, kf_metrics_d2u(0.0));
    if (fam->kind == KF_METRICS_HISTOGRAM) {
        s->buckets = calloc(fam->nbounds + 1, sizeof(*s->buckets));
        KF_ASSERT(s->buckets != NULL);
        for (size_t i = 0; i <= fam->nbounds; i++)
            atomic_init(&s->buckets[i], 0);
    }
    if (fam->tail)
        fam->tail->next = s;
    else
        fam->head = s;
    fam->tail = s;
    fam->nseries++;
    return s;
}

kf_metrics_series_t *
kf_metrics_labels(kf_metrics_family_t *fam, const char *const *values)
{
    KF_ASSERT(fam);
    KF_ASSERT(fam->nlabels == 0 || values != NULL);
    for (size_t i = 0; i < fam->nlabels; i++)
        KF_ASSERT(values[i] != NULL);
    pthread_mutex_lock(&fam->reg->lock);
    kf_metrics_series_t *s;
    for (s = fam->head; s; s = s->next) {
        size_t i = 0;
        while (i < fam->nlabels && strcmp(s->values[i], values[i]) == 0)
            i++;
        if (i == fam->nlabels)
            break;
    }
    if (!s)
        s = kf_metrics_series_new(fam, values);
    pthread_mutex_unlock(&fam->reg->lock);
    return s;
}

/* Atomically adds v to the double held in *bits. */
static void
kf_metrics_atomic_add(_Atomic uint64_t *bits, double v)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(bits, &old,
                                                  kf_metrics_d2u(kf_metrics_u2d(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void
kf_metrics_add(kf_metrics_series_t *s, double v)
{
    if (!s)
        return;
    KF_ASSERT(s->fam->kind != KF_METRICS_HISTOGRAM);
    if (s->fam->kind == KF_METRICS_COUNTER && !(v >= 0))
        return;
    kf_metrics_atomic_add(&s->bits, v);
}

void
kf_metrics_set(kf_metrics_series_t *s, double v)
{
    if (!s)
        return;
    KF_ASSERT(s->fam->kind == KF_METRICS_GAUGE);
    atomic_store_explicit(&s->bits, kf_metrics_d2u(v), memory_order_relaxed);
}

void
kf_metrics_observe(kf_metrics_series_t *s, double v)
{
    if (!s)
        return;
    KF_ASSERT(s->fam->kind == KF_METRICS_HISTOGRAM);
    if (isnan(v))
        return; /* a NaN would poison _sum forever */
    size_t i = 0;
    while (i < s->fam->nbounds && v > s->fam->bounds[i])
        i++;
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    kf_metrics_atomic_add(&s->bits, v);
}

double
kf_metrics_value(const kf_metrics_series_t *s)
{
    if (!s)
        return 0;
    return kf_metrics_u2d(
        atomic_load_explicit(&((kf_metrics_series_t *)s)->bits, memory_order_relaxed));
}

/* ---- rendering ---- */

/* Shortest text that reads back as the same double; Inf and NaN spelled as Prometheus does. */
static kf_err_t
kf_metrics_put_double(kf_buf_t *buf, double d)
{
    if (isnan(d))
        return kf_buf_append_str(buf, "NaN");
    if (isinf(d))
        return kf_buf_append_str(buf, d > 0 ? "+Inf" : "-Inf");
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "%.15g", d);
    if (strtod(tmp, NULL) != d)
        snprintf(tmp, sizeof(tmp), "%.17g", d);
    return kf_buf_append_str(buf, tmp);
}

/* HELP text escapes \ and newline; label values also escape the double quote. */
static kf_err_t
kf_metrics_put_escaped(kf_buf_t *buf, const char *s, int quote)
{
    kf_err_t err = KF_OK;
    for (const char *p = s; *p && !err; p++) {
        if (*p == '\\')
            err = kf_buf_append(buf, "\\\\", 2);
        else if (*p == '\n')
            err = kf_buf_append(buf, "\\n", 2);
        else if (quote && *p == '"')
            err = kf_buf_append(buf, "\\\"", 2);
        else
            err = kf_buf_append(buf, p, 1);
    }
    return err;
}

/* Writes `{a="x",b="y"` plus an optional le label, and the closing brace; nothing when empty. */
static kf_err_t
kf_metrics_put_labels(kf_buf_t *buf, const kf_metrics_series_t *s, const char *le)
{
    const kf_metrics_family_t *fam = s->fam;
    if (fam->nlabels == 0 && !le)
        return KF_OK;
    kf_err_t err = kf_buf_append(buf, "{", 1);
    for (size_t i = 0; i < fam->nlabels && !err; i++) {
        err = kf_buf_appendf(buf, "%s%s=\"", i ? "," : "", fam->labels[i]);
        if (!err)
            err = kf_metrics_put_escaped(buf, s->values[i], 1);
        if (!err)
            err = kf_buf_append(buf, "\"", 1);
    }
    if (!err && le)
        err = kf_buf_appendf(buf, "%sle=\"%s\"", fam->nlabels ? "," : "", le);
    if (!err)
        err = kf_buf_append(buf, "}", 1);
    return err;
}

static kf_err_t
kf_metrics_render_series(kf_buf_t *buf, const kf_metrics_series_t *s)
{
    const kf_metrics_family_t *fam = s->fam;
    double value = kf_metrics_value(s);
    kf_err_t err;
    if (fam->kind != KF_METRICS_HISTOGRAM) {
        err = kf_buf_append_str(buf, fam->name);
        if (!err)
            err = kf_metrics_put_labels(buf, s, NULL);
        if (!err)
            err = kf_buf_append(buf, " ", 1);
        if (!err)
            err = kf_metrics_put_double(buf, value);
        if (!err)
            err = kf_buf_append(buf, "\n", 1);
        return err;
    }
    uint64_t cum = 0;
    for (size_t i = 0; i <= fam->nbounds; i++) {
        cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        char le[64];
        if (i == fam->nbounds) {
            strcpy(le, "+Inf");
        } else {
            snprintf(le, sizeof(le), "%.15g", fam->bounds[i]);
            if (strtod(le, NULL) != fam->bounds[i])
                snprintf(le, sizeof(le), "%.17g", fam->bounds[i]);
        }
        err = kf_buf_appendf(buf, "%s_bucket", fam->name);
        if (!err)
            err = kf_metrics_put_labels(buf, s, le);
        if (!err)
            err = kf_buf_appendf(buf, " %llu\n", (unsigned long long)cum);
        if (err)
            return err;
    }
    err = kf_buf_appendf(buf, "%s_sum", fam->name);
    if (!err)
        err = kf_metrics_put_labels(buf, s, NULL);
    if (!err)
        err = kf_buf_append(buf, " ", 1);
    if (!err)
        err = kf_metrics_put_double(buf, value);
    if (!err)
        err = kf_buf_appendf(buf, "\n%s_count", fam->name);
    if (!err)
        err = kf_metrics_put_labels(buf, s, NULL);
    if (!err)
        err = kf_buf_appendf(buf, " %llu\n", (unsigned long long)cum);
    return err;
}

kf_err_t
kf_metrics_render(kf_metrics_t *reg, kf_buf_t *buf)
{
    KF_ASSERT(reg && buf);
    kf_err_t err = KF_OK;
    pthread_mutex_lock(&reg->lock);
    for (kf_metrics_family_t *fam = reg->head; fam && !err; fam = fam->next) {
        err = kf_buf_appendf(buf, "# HELP %s ", fam->name);
        if (!err)
            err = kf_metrics_put_escaped(buf, fam->help, 0);
        if (!err)
            err = kf_buf_appendf(buf, "\n# TYPE %s %s\n", fam->name,
                                 kf_metrics_kind_names[fam->kind]);
        for (kf_metrics_series_t *s = fam->head; s && !err; s = s->next)
            err = kf_metrics_render_series(buf, s);
    }
    pthread_mutex_unlock(&reg->lock);
    return err;
}
