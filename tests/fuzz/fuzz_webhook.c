/*
 * libFuzzer target for the parsers in consumers/kf_webhook.h that read outside bytes:
 * Retry-After values (from webhook receivers), webhook-signature / webhook-timestamp headers
 * (kf_webhook_verify, what a receiver runs), tenant secrets, CIDR allowlists, callback URLs
 * and retry schedules (configuration and API input).
 *
 * The first byte picks the parser; the rest is its input. Besides "never crash", it checks
 * properties: a Retry-After delay is within [0, 30 days]; a parsed schedule has 1..32
 * positive delays; a decoded secret has 1..64 bytes; a signature made with kf_webhook_sign
 * always verifies and never verifies for a different body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kf_webhook.h"

static char *
fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 6;
    data++;
    size--;
    char *s = fuzz_cstr(data, size);
    char err[256];
    static const unsigned char key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    switch (mode) {
    case 0: {
        int64_t d = -1;
        if (kf_webhook_retry_after_parse(s, 1700000000000LL, &d) == KF_OK &&
            (d < 0 || d > 30LL * 86400 * 1000))
            abort();
        break;
    }
    case 1: {
        /* "timestamp\nsignature-header\nbody" */
        char *nl1 = strchr(s, '\n');
        char *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;
        if (!nl1 || !nl2)
            break;
        *nl1 = *nl2 = '\0';
        const char *body = nl2 + 1;
        kf_webhook_verify(key, sizeof(key), "msg_fuzz", s, body, strlen(body), nl1 + 1, 1700000000,
                          300, err, sizeof(err));
        /* Our own signature over the same body always verifies; over another never. */
        char sig[KF_WEBHOOK_SIG_SIZE];
        if (kf_webhook_sign(key, sizeof(key), "msg_fuzz", 1700000000, body, strlen(body), sig) !=
            KF_OK)
            abort();
        if (kf_webhook_verify(key, sizeof(key), "msg_fuzz", "1700000000", body, strlen(body), sig,
                              0, 0, err, sizeof(err)) != KF_OK)
            abort();
        if (kf_webhook_verify(key, sizeof(key), "msg_fuzz", "1700000000", "x", 1, sig, 0, 0, err,
                              sizeof(err)) == KF_OK &&
            strcmp(body, "x") != 0)
            abort();
        break;
    }
    case 2: {
        unsigned char out[KF_WEBHOOK_KEY_MAX];
        size_t n = 0;
        if (kf_webhook_secret_decode(s, out, &n, err, sizeof(err)) == KF_OK &&
            (n < 1 || n > KF_WEBHOOK_KEY_MAX))
            abort();
        break;
    }
    case 3: {
        kf_webhook_cidrs_t *c = NULL;
        if (kf_webhook_cidrs_parse(s, &c, err, sizeof(err)) == KF_OK) {
            struct sockaddr_storage ss;
            memset(&ss, 0, sizeof(ss));
            ss.ss_family = AF_INET;
            kf_webhook_cidrs_match(c, (struct sockaddr *)&ss, sizeof(ss));
            ss.ss_family = AF_INET6;
            kf_webhook_cidrs_match(c, (struct sockaddr *)&ss, sizeof(ss));
        }
        kf_webhook_cidrs_destroy(c);
        break;
    }
    case 4:
        kf_webhook_url_check(s, err, sizeof(err));
        break;
    case 5: {
        kf_webhook_schedule_t sched;
        if (kf_webhook_schedule_parse(s, &sched, err, sizeof(err)) == KF_OK) {
            if (sched.n < 1 || sched.n > KF_WEBHOOK_SCHEDULE_MAX)
                abort();
            for (size_t i = 0; i < sched.n; i++)
                if (sched.delay_ms[i] < 1)
                    abort();
        }
        break;
    }
    }
    free(s);
    return 0;
}
