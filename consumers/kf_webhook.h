/*
 * kf_webhook: the pure parts of webhook delivery, kept apart from Kafka and curl so they can be
 * unit-tested and fuzzed on their own.
 *
 *   - Standard Webhooks signing (https://www.standardwebhooks.com): the signed content is
 *     "<webhook-id>.<webhook-timestamp>.<body>", the signature HMAC-SHA256 keyed with the
 *     base64-DECODED part of the tenant's "whsec_<base64>" secret, sent as
 *     `webhook-signature: v1,<base64 of the 32-byte MAC>`. A header may carry several
 *     space-separated signatures (key rotation); a verifier accepts any that matches.
 *   - SSRF guard: classification of the socket address a delivery is about to connect to
 *     (loopback, private, link-local, cloud metadata, CGNAT, multicast, ...), IPv4-mapped,
 *     NAT64 and 6to4 IPv6 forms looked through to the IPv4 address inside, and an allowlist of
 *     CIDR blocks that overrides the classification (tests allow 127.0.0.1/32).
 *   - Retry policy: the schedule ("5s,5m,30m,..."), jitter, Retry-After parsing (delta seconds
 *     or an HTTP-date), and the decision after one attempt (delivered, retry after N ms,
 *     failed, endpoint gone).
 *
 * Everything here is stateless and thread-safe except kf_webhook_cidrs_t, which is immutable
 * after kf_webhook_cidrs_parse() and may then be shared by any number of threads.
 */
#ifndef KF_WEBHOOK_H
#define KF_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "kf_err.h"

/* ---- signing ------------------------------------------------------------------------------ */

#define KF_WEBHOOK_SECRET_PREFIX "whsec_"
/* Largest decoded key accepted (the spec suggests 24 to 64 bytes). */
#define KF_WEBHOOK_KEY_MAX 64
/* Size of a signature string: "v1," + 44 base64 chars + NUL. */
#define KF_WEBHOOK_SIG_SIZE 48

/* Decodes a tenant secret ("whsec_" + base64; a bare base64 string is accepted too, as the
 * reference libraries do) into the HMAC key bytes. out_key must hold KF_WEBHOOK_KEY_MAX bytes.
 * KF_ERR_INVALID_ARG (never echoing the secret) when it is not valid base64 or decodes to fewer
 * than 1 or more than KF_WEBHOOK_KEY_MAX bytes. */
kf_err_t kf_webhook_secret_decode(const char *secret,
                                  unsigned char *out_key,
                                  size_t *out_key_len,
                                  char *errstr,
                                  size_t errstr_size);

/* Writes "v1,<base64(HMAC-SHA256(key, msg_id "." timestamp "." body))>" into out_sig.
 * msg_id must not be empty; KF_ERR_INVALID_ARG otherwise, KF_ERR_INTERNAL if OpenSSL fails. */
kf_err_t kf_webhook_sign(const unsigned char *key,
                         size_t key_len,
                         const char *msg_id,
                         int64_t timestamp,
                         const void *body,
                         size_t body_len,
                         char out_sig[KF_WEBHOOK_SIG_SIZE]);

/* Verifies a received delivery (outside bytes: every header may be anything). `timestamp` is
 * the webhook-timestamp header text (decimal seconds), `sig_header` the webhook-signature
 * header (space-separated "v1,<base64>" entries; other versions are skipped). When
 * tolerance_s > 0, a timestamp further than that from now_s is rejected (replay protection).
 * Comparison is constant-time. KF_OK on a match; KF_ERR_PARSE for a malformed timestamp;
 * KF_ERR_INVALID_ARG for a stale timestamp or when no signature matches. */
kf_err_t kf_webhook_verify(const unsigned char *key,
                           size_t key_len,
                           const char *msg_id,
                           const char *timestamp,
                           const void *body,
                           size_t body_len,
                           const char *sig_header,
                           int64_t now_s,
                           int64_t tolerance_s,
                           char *errstr,
                           size_t errstr_size);

/* ---- SSRF guard --------------------------------------------------------------------------- */

typedef enum kf_webhook_addr_class {
    KF_WEBHOOK_ADDR_PUBLIC = 0,  /* globally routable: allowed */
    KF_WEBHOOK_ADDR_LOOPBACK,    /* 127/8, ::1 */
    KF_WEBHOOK_ADDR_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, fc00::/7 */
    KF_WEBHOOK_ADDR_LINK_LOCAL,  /* 169.254/16, fe80::/10 */
    KF_WEBHOOK_ADDR_METADATA,    /* 169.254.169.254, fd00:ec2::254 (cloud instance metadata) */
    KF_WEBHOOK_ADDR_CGNAT,       /* 100.64/10 (shared address space) */
    KF_WEBHOOK_ADDR_MULTICAST,   /* 224/4, ff00::/8 */
    KF_WEBHOOK_ADDR_UNSPECIFIED, /* 0.0.0.0/8, :: */
    KF_WEBHOOK_ADDR_RESERVED,    /* 240/4, broadcast, 192.0.0/24, 198.18/15, docs ranges... */
    KF_WEBHOOK_ADDR_UNSUPPORTED, /* not AF_INET / AF_INET6 (e.g. a Unix socket) */
} kf_webhook_addr_class_t;

/* Static name of a class ("loopback", "private", ...). */
const char *kf_webhook_addr_class_str(kf_webhook_addr_class_t cls);

/* Classifies a socket address. IPv6 forms that embed an IPv4 address (::ffff:a.b.c.d mapped,
 * ::a.b.c.d compatible, 64:ff9b::/96 NAT64, 2002::/16 6to4) take the class of that IPv4
 * address, so a mapped private address is as private as the plain one. */
kf_webhook_addr_class_t kf_webhook_addr_classify(const struct sockaddr *sa, size_t salen);

/* An allowlist of CIDR blocks. */
typedef struct kf_webhook_cidrs kf_webhook_cidrs_t;

/* Parses a comma- or space-separated list of CIDR blocks ("127.0.0.1/32, ::1/128"; a bare
 * address means a single host). "" gives an empty list. KF_ERR_INVALID_ARG names the bad
 * entry (bad address, prefix out of range, host bits set are accepted and masked). */
kf_err_t kf_webhook_cidrs_parse(const char *list,
                                kf_webhook_cidrs_t **out_cidrs,
                                char *errstr,
                                size_t errstr_size);
void kf_webhook_cidrs_destroy(kf_webhook_cidrs_t *cidrs);
/* Number of blocks in the list. */
size_t kf_webhook_cidrs_count(const kf_webhook_cidrs_t *cidrs);
/* Non-zero when the address lies in one of the blocks. An IPv4-mapped IPv6 address also
 * matches the IPv4 blocks (and an IPv4 address the ::ffff:0:0/96 forms). cidrs may be NULL. */
int
kf_webhook_cidrs_match(const kf_webhook_cidrs_t *cidrs, const struct sockaddr *sa, size_t salen);

/* The guard's decision for one address: KF_OK when it is public or allowlisted, otherwise
 * KF_ERR_INVALID_ARG with "blocked <class> address <text>" in errstr. */
kf_err_t kf_webhook_addr_check(const kf_webhook_cidrs_t *allow,
                               const struct sockaddr *sa,
                               size_t salen,
                               char *errstr,
                               size_t errstr_size);

/* Checks a callback URL before any connection: absolute http:// or https:// URL with a host,
 * no user:password part, at most 2048 bytes. KF_ERR_INVALID_ARG naming the problem. */
kf_err_t kf_webhook_url_check(const char *url, char *errstr, size_t errstr_size);

/* ---- retry policy ------------------------------------------------------------------------- */

#define KF_WEBHOOK_SCHEDULE_MAX 32
/* The default schedule: delays before retries 1..9 (attempts 2..10). */
#define KF_WEBHOOK_SCHEDULE_DEFAULT "5s,5m,30m,2h,5h,10h,14h,20h,24h"

typedef struct kf_webhook_schedule {
    size_t n;                                  /* number of retries after the first attempt */
    int64_t delay_ms[KF_WEBHOOK_SCHEDULE_MAX]; /* delay_ms[i]: before attempt i + 2 */
} kf_webhook_schedule_t;

/* Parses a comma-separated list of durations ("200ms,0.4s,5m,2h"; units ms, s, m, h; a bare
 * number is seconds; fractions allowed). Every delay must be > 0 and <= 7 days; 1 to
 * KF_WEBHOOK_SCHEDULE_MAX entries. KF_ERR_INVALID_ARG names the bad entry. */
kf_err_t kf_webhook_schedule_parse(const char *text,
                                   kf_webhook_schedule_t *out_sched,
                                   char *errstr,
                                   size_t errstr_size);

/* Parses a Retry-After header value (outside bytes): delta seconds ("120") or an HTTP-date
 * (IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", also RFC 850 and asctime forms). A date in
 * the past gives 0. *out_delay_ms gets the delay from now_ms, capped at 30 days.
 * KF_ERR_PARSE when the value is neither form. */
kf_err_t kf_webhook_retry_after_parse(const char *value, int64_t now_ms, int64_t *out_delay_ms);

typedef enum kf_webhook_outcome {
    KF_WEBHOOK_DELIVERED = 0, /* 2xx */
    KF_WEBHOOK_RETRY,         /* transport error, timeout, 408, 429, 5xx: try again later */
    KF_WEBHOOK_FAILED,        /* any other status (incl. 3xx), blocked address, bad URL: final */
    KF_WEBHOOK_GONE,          /* 410: final, and the endpoint is disabled */
} kf_webhook_outcome_t;

const char *kf_webhook_outcome_str(kf_webhook_outcome_t outcome);

/* What one attempt ended with. */
typedef struct kf_webhook_attempt {
    int attempt;            /* number of the attempt just made, from 1 */
    long http_status;       /* final response status; 0 when no response arrived */
    int transport_error;    /* non-zero: no response (connect failure, timeout, reset) */
    int blocked;            /* non-zero: the SSRF guard or the URL check refused it */
    int64_t retry_after_ms; /* parsed Retry-After of the response; < 0 when absent */
} kf_webhook_attempt_t;

/* What to do next. */
typedef struct kf_webhook_decision {
    kf_webhook_outcome_t outcome; /* DELIVERED, RETRY (not final), FAILED or GONE */
    int exhausted;                /* 1 when it would have retried but the schedule is used up
                                     (outcome is then FAILED) */
    int64_t delay_ms;             /* RETRY: how long to wait before the next attempt */
} kf_webhook_decision_t;

/* Decides the step after an attempt. RETRY waits the schedule's delay for the next attempt,
 * scaled by a jitter factor in [1 - jitter, 1 + jitter] chosen by `u` (uniform in [0, 1)),
 * and never less than Retry-After (capped at retry_after_max_ms). */
kf_webhook_decision_t kf_webhook_decide(const kf_webhook_schedule_t *sched,
                                        const kf_webhook_attempt_t *at,
                                        double jitter,
                                        double u,
                                        int64_t retry_after_max_ms);

#endif /* KF_WEBHOOK_H */
