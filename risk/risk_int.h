/*
 * risk_int.h: helpers shared inside risk/ only (never installed, never included from outside):
 * the date range the module accepts and a small string-to-index hash map used by the input
 * builder and the CSV loader.
 */
#ifndef KF_RISK_INT_H
#define KF_RISK_INT_H

#include <stddef.h>
#include <stdint.h>

/* Days since 1970-01-01 of 1900-01-01 and 2999-12-31: the dates the module accepts. */
#define KF_RISK_DATE_MIN (-25567)
#define KF_RISK_DATE_MAX 376199

int32_t kf_risk_days_from_civil(int y, int m, int d);

/* Open-addressing map from borrowed NUL-terminated keys to non-negative indexes. The keys must
 * outlive the map (callers store them in their own arrays). */
typedef struct kf_risk_map {
    const char **keys;
    int *vals;
    size_t cap, n; /* cap is a power of two, kept at most half full */
} kf_risk_map_t;

void kf_risk_map_free(kf_risk_map_t *map);
/* Index stored for key, or -1. */
int kf_risk_map_get(const kf_risk_map_t *map, const char *key);
/* Stores key -> val (replacing). Returns 0, or -1 when out of memory. */
int kf_risk_map_put(kf_risk_map_t *map, const char *key, int val);

#endif /* KF_RISK_INT_H */
