/*
 * kf_metrics: a Prometheus registry rendered in text exposition format 0.0.4.
 *
 *   kf_metrics_t *reg = kf_metrics_new();
 *   kf_metrics_family_t *req = kf_metrics_counter(reg, "kinfer_requests_total",
 *                                                 "Requests accepted.", "route,status");
 *   kf_metrics_series_t *ok = kf_metrics_labels(req, (const char *[]){"/v1/infer", "200"});
 *   kf_metrics_add(ok, 1);                    // hot path: one atomic operation
 *   kf_metrics_render(reg, &buf);             // GET /metrics
 *
 * Families are counters, gauges or histograms (fixed upper bounds; `le="+Inf"` is implied),
 * with zero or more label names given as a comma-separated list. A series is one set of label
 * values; look it up once and keep the pointer (it lives as long as the registry).
 * Families render in registration order, series in creation order, so output is stable and
 * testable. Label values and HELP text are escaped as the format requires.
 *
 * Errors: metric and label names are fixed strings in code, so an invalid name, or registering
 * a name twice with a different type or labels, is a programmer error (KF_ASSERT). Registering
 * the same name with the same type and labels returns the existing family. Label values come
 * from run time: once a family holds KF_METRICS_MAX_SERIES series, kf_metrics_labels returns
 * NULL, and every update function accepts NULL and does nothing, so a label explosion costs a
 * missing series, never memory or a crash.
 *
 * Thread-safety: every function may be called from any thread. Updates are lock-free atomics;
 * registration, series lookup and rendering take the registry's mutex.
 */
#ifndef KF_METRICS_H
#define KF_METRICS_H

#include <stddef.h>

#include "kf_buf.h"
#include "kf_err.h"

typedef struct kf_metrics kf_metrics_t;
typedef struct kf_metrics_family kf_metrics_family_t;
typedef struct kf_metrics_series kf_metrics_series_t;

#define KF_METRICS_MAX_SERIES  10000
#define KF_METRICS_MAX_BUCKETS 64

kf_metrics_t *kf_metrics_new(void);
/* Frees the registry with all its families and series. NULL is fine. */
void kf_metrics_destroy(kf_metrics_t *reg);

/* label_names: NULL or "" for none, else "a,b". help is copied. Never NULL. */
kf_metrics_family_t *
kf_metrics_counter(kf_metrics_t *reg, const char *name, const char *help, const char *label_names);
kf_metrics_family_t *
kf_metrics_gauge(kf_metrics_t *reg, const char *name, const char *help, const char *label_names);
/* buckets: strictly increasing finite upper bounds, 1..KF_METRICS_MAX_BUCKETS of them. */
kf_metrics_family_t *kf_metrics_histogram(kf_metrics_t *reg,
                                          const char *name,
                                          const char *help,
                                          const char *label_names,
                                          const double *buckets,
                                          size_t nbuckets);

/* The series for one label-value set: `values` has one string per label name (NULL when the
 * family has no labels). Creates it at zero on first use. NULL past KF_METRICS_MAX_SERIES. */
kf_metrics_series_t *kf_metrics_labels(kf_metrics_family_t *fam, const char *const *values);

/* Counter: add v >= 0 (negative v is ignored: counters never go down). Gauge: add any v. */
void kf_metrics_add(kf_metrics_series_t *s, double v);
/* Gauge only: set to v. */
void kf_metrics_set(kf_metrics_series_t *s, double v);
/* Histogram only: records one observation. */
void kf_metrics_observe(kf_metrics_series_t *s, double v);
/* Current value of a counter or gauge series (tests, health checks); 0 for NULL. */
double kf_metrics_value(const kf_metrics_series_t *s);

/* Appends the whole registry to buf in exposition format 0.0.4. KF_ERR_LIMIT/KF_ERR_NOMEM from
 * the buffer; on error buf holds a partial page (the caller discards it). */
kf_err_t kf_metrics_render(kf_metrics_t *reg, kf_buf_t *buf);

/* Content-Type of the rendered page. */
#define KF_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif /* KF_METRICS_H */
