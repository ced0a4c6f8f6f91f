/*
 * Unit tests of consumers/kf_webhook.h: Standard Webhooks signatures against published and
 * independently computed vectors, the SSRF address classification (IPv4, IPv6, mapped and
 * embedded forms), allowlists, URL checks, the retry schedule, Retry-After parsing and the
 * decision taken after each attempt.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kf_webhook.h"

/* The Standard Webhooks specification's test vector (also used by its reference libraries). */
#define SPEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SPEC_ID     "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SPEC_TS     1614265330
#define SPEC_BODY   "{\"test\": 2432232314}"
#define SPEC_SIG    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

/* Computed once with python3's hmac/base64 (key = bytes 0..31, UTF-8 body). */
#define PY_SECRET "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define PY_BODY                                                                    \
    "{\"type\":\"inference.completed\",\"data\":{\"request_id\":\"r-1\",\"text\":" \
    "\"h\xc3\xa9llo\"}}"
#define PY_SIG "v1,Q2+6o6OAAJoWEQ40zShg6/JjK4OBjlHPUetnLwJWpqA="

static void
test_sign_spec_vector(void **state)
{
    (void)state;
    unsigned char key[KF_WEBHOOK_KEY_MAX];
    size_t klen = 0;
    char err[128];
    assert_int_equal(kf_webhook_secret_decode(SPEC_SECRET, key, &klen, err, sizeof(err)), KF_OK);
    assert_int_equal(klen, 24);
    char sig[KF_WEBHOOK_SIG_SIZE];
    assert_int_equal(
        kf_webhook_sign(key, klen, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), sig), KF_OK);
    assert_string_equal(sig, SPEC_SIG);
    /* A bare base64 secret (no prefix) is the same key. */
    size_t klen2 = 0;
    unsigned char key2[KF_WEBHOOK_KEY_MAX];
    assert_int_equal(kf_webhook_secret_decode(&SPEC_SECRET[6], key2, &klen2, err, sizeof(err)),
                     KF_OK);
    assert_int_equal(klen2, klen);
    assert_memory_equal(key, key2, klen);
}

static void
test_sign_python_vector(void **state)
{
    (void)state;
    unsigned char key[KF_WEBHOOK_KEY_MAX];
    size_t klen = 0;
    assert_int_equal(kf_webhook_secret_decode(PY_SECRET, key, &klen, NULL, 0), KF_OK);
    assert_int_equal(klen, 32);
    for (int i = 0; i < 32; i++)
        assert_int_equal(key[i], i);
    char sig[KF_WEBHOOK_SIG_SIZE];
    assert_int_equal(
        kf_webhook_sign(key, klen, "msg_r-1", 1700000000, PY_BODY, strlen(PY_BODY), sig), KF_OK);
    assert_string_equal(sig, PY_SIG);
}

static void
test_verify(void **state)
{
    (void)state;
    unsigned char key[KF_WEBHOOK_KEY_MAX];
    size_t klen = 0;
    char err[128];
    assert_int_equal(kf_webhook_secret_decode(SPEC_SECRET, key, &klen, NULL, 0), KF_OK);
    const char *b = SPEC_BODY;
    size_t bl = strlen(b);
    /* Exact, and with tolerance around the signing time. */
    assert_int_equal(kf_webhook_verify(key, klen, SPEC_ID, "1614265330", b, bl, SPEC_SIG, 0, 0, err,
                                       sizeof(err)),
                     KF_OK);
    assert_int_equal(kf_webhook_verify(key, klen, SPEC_ID, "1614265330", b, bl, SPEC_SIG,
                                       SPEC_TS + 100, 300, err, sizeof(err)),
                     KF_OK);
    /* Several signatures (rotation): one matching is enough; unknown versions are skipped. */
    assert_int_equal(
        kf_webhook_verify(key, klen, SPEC_ID, "1614265330", b, bl,
                          "v1a,xyz v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " SPEC_SIG, 0, 0,
                          err, sizeof(err)),
        KF_OK);
    /* Unpadded base64 is the same MAC (lenient like the reference libraries' decoders). */
    assert_int_equal(kf_webhook_verify(key, klen, SPEC_ID, "1614265330", b, bl,
                                       "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", 0, 0, err,
                                       sizeof(err)),
                     KF_OK);
    /* Stale timestamp. */
    assert_int_equal(kf_webhook_verify(key, klen, SPEC_ID, "1614265330", b, bl, SPEC_SIG,
                                       SPEC_TS + 301, 300, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "tolerance"));
    /* Tampered body, id or timestamp. */
    assert_int_equal(kf_webhook_verify(key, klen, SPEC_ID, "1614265330", "{\"test\": 2432232315}",
                                       bl, SPEC_SIG, 0, 0, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    assert_int_equal(kf_webhook_verify(key, klen, "msg_other", "1614265330", b, bl, SPEC_SIG, 0, 0,
                                       err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    assert_int_equal(kf_webhook_verify(key, klen, SPEC_ID, "1614265331", b, bl, SPEC_SIG, 0, 0, err,
                                       sizeof(err)),
                     KF_ERR_INVALID_ARG);
    /* Malformed headers never crash and never match. */
    assert_int_equal(kf_webhook_verify(key, klen, SPEC_ID, "16x4265330", b, bl, SPEC_SIG, 0, 0, err,
                                       sizeof(err)),
                     KF_ERR_PARSE);
    assert_int_equal(
        kf_webhook_verify(key, klen, SPEC_ID, "", b, bl, SPEC_SIG, 0, 0, err, sizeof(err)),
        KF_ERR_PARSE);
    const char *bad[] = {"",
                         "v1,",
                         "v1",
                         "v1,!!!!",
                         "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                         "   ",
                         "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_not_equal(kf_webhook_verify(key, klen, SPEC_ID, "1614265330", b, bl, bad[i], 0,
                                               0, err, sizeof(err)),
                             KF_OK);
}

static void
test_secret_decode_errors(void **state)
{
    (void)state;
    unsigned char key[KF_WEBHOOK_KEY_MAX];
    size_t klen;
    char err[160];
    const char *bad[] = {"whsec_", "whsec_***", "whsec_A", "whsec_AB=C", "whsec_ YWJj",
                         /* 66 bytes: over KF_WEBHOOK_KEY_MAX */
                         "whsec_"
                         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                         "AAAAAAAAAAAAAAAAAAA",
                         /* non-zero padding bits */
                         "whsec_YWJjZB=="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(kf_webhook_secret_decode(bad[i], key, &klen, err, sizeof(err)),
                         KF_ERR_INVALID_ARG);
        assert_true(strlen(err) > 0);
        /* The message never repeats the secret. */
        if (strlen(bad[i]) > 8)
            assert_null(strstr(err, bad[i] + 6));
    }
    assert_int_equal(kf_webhook_secret_decode("whsec_YWJjZA==", key, &klen, err, sizeof(err)),
                     KF_OK);
    assert_int_equal(klen, 4);
    assert_memory_equal(key, "abcd", 4);
    assert_int_equal(kf_webhook_secret_decode("whsec_YWJjZA", key, &klen, err, sizeof(err)), KF_OK);
    assert_int_equal(klen, 4);
}

/* ---- SSRF classification ---- */

static kf_webhook_addr_class_t
classify(const char *text)
{
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    memset(&in4, 0, sizeof(in4));
    memset(&in6, 0, sizeof(in6));
    if (inet_pton(AF_INET, text, &in4.sin_addr) == 1) {
        in4.sin_family = AF_INET;
        return kf_webhook_addr_classify((struct sockaddr *)&in4, sizeof(in4));
    }
    if (inet_pton(AF_INET6, text, &in6.sin6_addr) == 1) {
        in6.sin6_family = AF_INET6;
        return kf_webhook_addr_classify((struct sockaddr *)&in6, sizeof(in6));
    }
    fail_msg("bad test address %s", text);
    return KF_WEBHOOK_ADDR_UNSUPPORTED;
}

static void
test_classify(void **state)
{
    (void)state;
    static const struct {
        const char *addr;
        kf_webhook_addr_class_t cls;
    } cases[] = {
        {"8.8.8.8", KF_WEBHOOK_ADDR_PUBLIC},
        {"1.1.1.1", KF_WEBHOOK_ADDR_PUBLIC},
        {"93.184.216.34", KF_WEBHOOK_ADDR_PUBLIC},
        {"172.15.255.255", KF_WEBHOOK_ADDR_PUBLIC},
        {"172.32.0.0", KF_WEBHOOK_ADDR_PUBLIC},
        {"100.63.255.255", KF_WEBHOOK_ADDR_PUBLIC},
        {"100.128.0.0", KF_WEBHOOK_ADDR_PUBLIC},
        {"169.253.255.255", KF_WEBHOOK_ADDR_PUBLIC},
        {"223.255.255.255", KF_WEBHOOK_ADDR_PUBLIC},
        {"127.0.0.1", KF_WEBHOOK_ADDR_LOOPBACK},
        {"127.0.0.2", KF_WEBHOOK_ADDR_LOOPBACK},
        {"127.255.255.254", KF_WEBHOOK_ADDR_LOOPBACK},
        {"10.0.0.1", KF_WEBHOOK_ADDR_PRIVATE},
        {"10.255.255.255", KF_WEBHOOK_ADDR_PRIVATE},
        {"172.16.0.1", KF_WEBHOOK_ADDR_PRIVATE},
        {"172.31.255.255", KF_WEBHOOK_ADDR_PRIVATE},
        {"192.168.1.1", KF_WEBHOOK_ADDR_PRIVATE},
        {"169.254.0.1", KF_WEBHOOK_ADDR_LINK_LOCAL},
        {"169.254.169.253", KF_WEBHOOK_ADDR_LINK_LOCAL},
        {"169.254.169.254", KF_WEBHOOK_ADDR_METADATA},
        {"100.64.0.1", KF_WEBHOOK_ADDR_CGNAT},
        {"100.127.255.255", KF_WEBHOOK_ADDR_CGNAT},
        {"224.0.0.1", KF_WEBHOOK_ADDR_MULTICAST},
        {"239.255.255.250", KF_WEBHOOK_ADDR_MULTICAST},
        {"0.0.0.0", KF_WEBHOOK_ADDR_UNSPECIFIED},
        {"0.1.2.3", KF_WEBHOOK_ADDR_UNSPECIFIED},
        {"255.255.255.255", KF_WEBHOOK_ADDR_RESERVED},
        {"240.0.0.1", KF_WEBHOOK_ADDR_RESERVED},
        {"192.0.2.10", KF_WEBHOOK_ADDR_RESERVED},
        {"198.18.0.1", KF_WEBHOOK_ADDR_RESERVED},
        /* IPv6 */
        {"2606:4700:4700::1111", KF_WEBHOOK_ADDR_PUBLIC},
        {"2a00:1450:4001:80b::200e", KF_WEBHOOK_ADDR_PUBLIC},
        {"::1", KF_WEBHOOK_ADDR_LOOPBACK},
        {"::", KF_WEBHOOK_ADDR_UNSPECIFIED},
        {"fc00::1", KF_WEBHOOK_ADDR_PRIVATE},
        {"fd12:3456::1", KF_WEBHOOK_ADDR_PRIVATE},
        {"fe80::1", KF_WEBHOOK_ADDR_LINK_LOCAL},
        {"febf::1", KF_WEBHOOK_ADDR_LINK_LOCAL},
        {"fec0::1", KF_WEBHOOK_ADDR_PRIVATE},
        {"fd00:ec2::254", KF_WEBHOOK_ADDR_METADATA},
        {"ff02::1", KF_WEBHOOK_ADDR_MULTICAST},
        {"2001:db8::1", KF_WEBHOOK_ADDR_RESERVED},
        /* IPv4 inside IPv6: mapped, compatible, NAT64, 6to4 */
        {"::ffff:127.0.0.1", KF_WEBHOOK_ADDR_LOOPBACK},
        {"::ffff:7f00:2", KF_WEBHOOK_ADDR_LOOPBACK},
        {"::ffff:10.1.2.3", KF_WEBHOOK_ADDR_PRIVATE},
        {"::ffff:169.254.169.254", KF_WEBHOOK_ADDR_METADATA},
        {"::ffff:100.64.1.1", KF_WEBHOOK_ADDR_CGNAT},
        {"::ffff:8.8.8.8", KF_WEBHOOK_ADDR_PUBLIC},
        {"::ffff:0.0.0.0", KF_WEBHOOK_ADDR_UNSPECIFIED},
        {"::10.0.0.1", KF_WEBHOOK_ADDR_PRIVATE},
        {"64:ff9b::192.168.0.1", KF_WEBHOOK_ADDR_PRIVATE},
        {"64:ff9b::8.8.4.4", KF_WEBHOOK_ADDR_PUBLIC},
        {"2002:a9fe:a9fe::1", KF_WEBHOOK_ADDR_METADATA},
        {"2002:0808:0808::1", KF_WEBHOOK_ADDR_PUBLIC},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kf_webhook_addr_class_t got = classify(cases[i].addr);
        if (got != cases[i].cls)
            fail_msg("%s: got %s, want %s", cases[i].addr, kf_webhook_addr_class_str(got),
                     kf_webhook_addr_class_str(cases[i].cls));
    }
    struct sockaddr sa = {.sa_family = AF_UNIX};
    assert_int_equal(kf_webhook_addr_classify(&sa, sizeof(sa)), KF_WEBHOOK_ADDR_UNSUPPORTED);
    assert_int_equal(kf_webhook_addr_classify(NULL, 0), KF_WEBHOOK_ADDR_UNSUPPORTED);
    /* A truncated sockaddr is not trusted. */
    struct sockaddr_in in4 = {.sin_family = AF_INET};
    assert_int_equal(kf_webhook_addr_classify((struct sockaddr *)&in4, 4),
                     KF_WEBHOOK_ADDR_UNSUPPORTED);
}

static kf_err_t
check(const kf_webhook_cidrs_t *allow, const char *text, char *err, size_t errsz)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        return kf_webhook_addr_check(allow, (struct sockaddr *)in4, sizeof(*in4), err, errsz);
    }
    assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
    in6->sin6_family = AF_INET6;
    return kf_webhook_addr_check(allow, (struct sockaddr *)in6, sizeof(*in6), err, errsz);
}

static void
test_allowlist(void **state)
{
    (void)state;
    kf_webhook_cidrs_t *allow = NULL;
    char err[160];
    assert_int_equal(
        kf_webhook_cidrs_parse("127.0.0.1/32, 10.1.0.0/16 fd00::/8,::1", &allow, err, sizeof(err)),
        KF_OK);
    assert_int_equal(kf_webhook_cidrs_count(allow), 4);
    assert_int_equal(check(allow, "127.0.0.1", err, sizeof(err)), KF_OK);
    assert_int_equal(check(allow, "::ffff:127.0.0.1", err, sizeof(err)), KF_OK);
    assert_int_equal(check(allow, "10.1.200.3", err, sizeof(err)), KF_OK);
    assert_int_equal(check(allow, "fd00:ec2::254", err, sizeof(err)), KF_OK); /* explicitly */
    assert_int_equal(check(allow, "::1", err, sizeof(err)), KF_OK);
    assert_int_equal(check(allow, "8.8.8.8", err, sizeof(err)), KF_OK); /* public */
    assert_int_equal(check(allow, "127.0.0.2", err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_string_equal(err, "blocked loopback address 127.0.0.2");
    assert_int_equal(check(allow, "10.2.0.1", err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_string_equal(err, "blocked private address 10.2.0.1");
    assert_int_equal(check(allow, "169.254.169.254", err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_string_equal(err, "blocked metadata address 169.254.169.254");
    assert_int_equal(check(allow, "::ffff:10.2.0.1", err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_int_equal(check(allow, "fe80::1", err, sizeof(err)), KF_ERR_INVALID_ARG);
    kf_webhook_cidrs_destroy(allow);

    /* Empty list: nothing but public addresses. */
    assert_int_equal(kf_webhook_cidrs_parse("", &allow, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_webhook_cidrs_count(allow), 0);
    assert_int_equal(check(allow, "127.0.0.1", err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_int_equal(check(NULL, "127.0.0.1", err, sizeof(err)), KF_ERR_INVALID_ARG);
    kf_webhook_cidrs_destroy(allow);

    const char *bad[] = {"127.0.0.1/33", "::1/129",     "300.1.1.1",  "10.0.0.0/",
                         "10.0.0.0/x",   "example.com", "10.0.0.0/-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        allow = NULL;
        assert_int_equal(kf_webhook_cidrs_parse(bad[i], &allow, err, sizeof(err)),
                         KF_ERR_INVALID_ARG);
        assert_null(allow);
        assert_non_null(strstr(err, "allowlist entry"));
    }
}

static void
test_url_check(void **state)
{
    (void)state;
    char err[160];
    assert_int_equal(kf_webhook_url_check("http://127.0.0.1:8080/hook", err, sizeof(err)), KF_OK);
    assert_int_equal(kf_webhook_url_check("https://example.com/a?b=c#d", err, sizeof(err)), KF_OK);
    assert_int_equal(kf_webhook_url_check("HTTPS://[::1]:443/", err, sizeof(err)), KF_OK);
    const char *bad[] = {"",
                         "ftp://example.com/",
                         "file:///etc/passwd",
                         "gopher://127.0.0.1:6379/_",
                         "http://",
                         "http:///path",
                         "http://user:pw@example.com/",
                         "http://example.com/a b",
                         "http://:80/",
                         "//example.com/",
                         "example.com"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kf_webhook_url_check(bad[i], err, sizeof(err)), KF_ERR_INVALID_ARG);
}

/* ---- retry policy ---- */

static void
test_schedule(void **state)
{
    (void)state;
    kf_webhook_schedule_t s;
    char err[200];
    assert_int_equal(kf_webhook_schedule_parse(KF_WEBHOOK_SCHEDULE_DEFAULT, &s, err, sizeof(err)),
                     KF_OK);
    static const int64_t want[] = {5000,     300000,   1800000,  7200000, 18000000,
                                   36000000, 50400000, 72000000, 86400000};
    assert_int_equal(s.n, 9);
    for (size_t i = 0; i < 9; i++)
        assert_int_equal(s.delay_ms[i], want[i]);
    assert_int_equal(kf_webhook_schedule_parse("200ms, 0.4s,1,1.5m", &s, err, sizeof(err)), KF_OK);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.delay_ms[0], 200);
    assert_int_equal(s.delay_ms[1], 400);
    assert_int_equal(s.delay_ms[2], 1000);
    assert_int_equal(s.delay_ms[3], 90000);
    const char *bad[] = {"", " , ", "5x", "-1s", "0s", "abc", "8d", "5s;5m", "1e9h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kf_webhook_schedule_parse(bad[i], &s, err, sizeof(err)),
                         KF_ERR_INVALID_ARG);
    assert_int_equal(kf_webhook_schedule_parse("5x", &s, err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "'5x'"));
}

static void
test_retry_after(void **state)
{
    (void)state;
    int64_t d = -7;
    const int64_t now = 784111777000LL; /* Sun, 06 Nov 1994 08:49:37 GMT */
    assert_int_equal(kf_webhook_retry_after_parse("120", now, &d), KF_OK);
    assert_int_equal(d, 120000);
    assert_int_equal(kf_webhook_retry_after_parse(" 0 ", now, &d), KF_OK);
    assert_int_equal(d, 0);
    assert_int_equal(kf_webhook_retry_after_parse("99999999999999999999999", now, &d), KF_OK);
    assert_int_equal(d, 30LL * 86400 * 1000);
    /* The three HTTP-date forms, 60 s after now. */
    assert_int_equal(kf_webhook_retry_after_parse("Sun, 06 Nov 1994 08:50:37 GMT", now, &d), KF_OK);
    assert_int_equal(d, 60000);
    assert_int_equal(kf_webhook_retry_after_parse("Sunday, 06-Nov-94 08:50:37 GMT", now, &d),
                     KF_OK);
    assert_int_equal(d, 60000);
    assert_int_equal(kf_webhook_retry_after_parse("Sun Nov  6 08:50:37 1994", now, &d), KF_OK);
    assert_int_equal(d, 60000);
    /* A date in the past means now. */
    assert_int_equal(kf_webhook_retry_after_parse("Sat, 05 Nov 1994 08:49:37 GMT", now, &d), KF_OK);
    assert_int_equal(d, 0);
    const char *bad[] = {"",
                         "soon",
                         "-5",
                         "1.5",
                         "12a",
                         "Sun, 06 Nov 1994 08:49:37 UTC",
                         "Sun, 32 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Foo 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 24:49:37 GMT",
                         "Sun, 06 Nov 1994 08:49 GMT",
                         "Sun,06 Nov 1994 08:49:37 GMT",
                         "Sun Nov  6 08:49:37 19x4"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (kf_webhook_retry_after_parse(bad[i], now, &d) != KF_ERR_PARSE)
            fail_msg("accepted '%s'", bad[i]);
}

static kf_webhook_decision_t
decide(const kf_webhook_schedule_t *s,
       int attempt,
       long status,
       int transport,
       int blocked,
       int64_t ra)
{
    kf_webhook_attempt_t at = {.attempt = attempt,
                               .http_status = status,
                               .transport_error = transport,
                               .blocked = blocked,
                               .retry_after_ms = ra};
    return kf_webhook_decide(s, &at, 0.0, 0.5, 3600000);
}

static void
test_decide(void **state)
{
    (void)state;
    kf_webhook_schedule_t s;
    assert_int_equal(kf_webhook_schedule_parse("200ms,400ms,800ms", &s, NULL, 0), KF_OK);
    kf_webhook_decision_t d;
    d = decide(&s, 1, 200, 0, 0, -1);
    assert_int_equal(d.outcome, KF_WEBHOOK_DELIVERED);
    d = decide(&s, 3, 204, 0, 0, -1);
    assert_int_equal(d.outcome, KF_WEBHOOK_DELIVERED);
    /* Retriable: 5xx, 429, 408, transport errors; the delay is the schedule's for that step. */
    d = decide(&s, 1, 503, 0, 0, -1);
    assert_int_equal(d.outcome, KF_WEBHOOK_RETRY);
    assert_int_equal(d.delay_ms, 200);
    d = decide(&s, 2, 500, 0, 0, -1);
    assert_int_equal(d.delay_ms, 400);
    d = decide(&s, 3, 0, 1, 0, -1);
    assert_int_equal(d.outcome, KF_WEBHOOK_RETRY);
    assert_int_equal(d.delay_ms, 800);
    d = decide(&s, 1, 408, 0, 0, -1);
    assert_int_equal(d.outcome, KF_WEBHOOK_RETRY);
    /* Retry-After is a floor, capped by the maximum. */
    d = decide(&s, 1, 429, 0, 0, 5000);
    assert_int_equal(d.outcome, KF_WEBHOOK_RETRY);
    assert_int_equal(d.delay_ms, 5000);
    d = decide(&s, 1, 429, 0, 0, 100);
    assert_int_equal(d.delay_ms, 200);
    d = decide(&s, 1, 503, 0, 0, 99999999999LL);
    assert_int_equal(d.delay_ms, 3600000);
    /* Exhausted after the last scheduled retry. */
    d = decide(&s, 4, 503, 0, 0, -1);
    assert_int_equal(d.outcome, KF_WEBHOOK_FAILED);
    assert_int_equal(d.exhausted, 1);
    /* Final at once: other 4xx, 3xx (no redirects), 1xx, blocked; 410 is gone. */
    long finals[] = {400, 401, 403, 404, 413, 422, 301, 302, 307, 308, 101};
    for (size_t i = 0; i < sizeof(finals) / sizeof(finals[0]); i++) {
        d = decide(&s, 1, finals[i], 0, 0, -1);
        assert_int_equal(d.outcome, KF_WEBHOOK_FAILED);
        assert_int_equal(d.exhausted, 0);
    }
    d = decide(&s, 1, 410, 0, 0, -1);
    assert_int_equal(d.outcome, KF_WEBHOOK_GONE);
    d = decide(&s, 1, 0, 1, 1, -1);
    assert_int_equal(d.outcome, KF_WEBHOOK_FAILED);
    /* No response and no transport error cannot be retried blindly. */
    d = decide(&s, 1, 0, 0, 0, -1);
    assert_int_equal(d.outcome, KF_WEBHOOK_FAILED);
}

static void
test_jitter_bounds(void **state)
{
    (void)state;
    kf_webhook_schedule_t s;
    assert_int_equal(kf_webhook_schedule_parse("10s", &s, NULL, 0), KF_OK);
    kf_webhook_attempt_t at = {.attempt = 1, .http_status = 503, .retry_after_ms = -1};
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 1000; i++) {
        double u = i / 1000.0;
        kf_webhook_decision_t d = kf_webhook_decide(&s, &at, 0.2, u, 0);
        assert_int_equal(d.outcome, KF_WEBHOOK_RETRY);
        if (d.delay_ms < lo)
            lo = d.delay_ms;
        if (d.delay_ms > hi)
            hi = d.delay_ms;
    }
    assert_int_equal(lo, 8000);
    assert_true(hi <= 12000 && hi >= 11980);
    /* Out-of-range u or jitter are clamped, never producing a negative delay. */
    kf_webhook_decision_t d = kf_webhook_decide(&s, &at, 5.0, -3.0, 0);
    assert_true(d.delay_ms >= 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_spec_vector), cmocka_unit_test(test_sign_python_vector),
        cmocka_unit_test(test_verify),           cmocka_unit_test(test_secret_decode_errors),
        cmocka_unit_test(test_classify),         cmocka_unit_test(test_allowlist),
        cmocka_unit_test(test_url_check),        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_retry_after),      cmocka_unit_test(test_decide),
        cmocka_unit_test(test_jitter_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
