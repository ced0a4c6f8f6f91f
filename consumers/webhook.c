/*
 * Webhook signing, SSRF address classification and retry policy (see kf_webhook.h).
 *
 * Nothing here touches the network: the dispatcher calls kf_webhook_addr_check() from curl's
 * open-socket callback, with the address curl resolved and is about to connect to, so the
 * check applies to the address actually used (no DNS-rebinding gap between check and use).
 */
#include "kf_webhook.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

/* ---- base64 (standard alphabet, RFC 4648 section 4) --------------------------------------- */

static int
kf_b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict decoder: padding optional but only at the end, no whitespace, and the unused low
 * bits of the last character must be zero (so one secret has exactly one spelling).
 * Returns the decoded length, or -1 on bad input or when it would exceed cap. */
static long
kf_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = kf_b64_val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap)
                return -1;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Leftover bits are padding and must be zero. */
    if (acc != 0)
        return -1;
    return (long)n;
}

kf_err_t
kf_webhook_secret_decode(const char *secret,
                         unsigned char *out_key,
                         size_t *out_key_len,
                         char *errstr,
                         size_t errstr_size)
{
    if (!secret || !out_key || !out_key_len)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "webhook secret is missing");
    const char *b64 = secret;
    size_t plen = strlen(KF_WEBHOOK_SECRET_PREFIX);
    if (!strncmp(secret, KF_WEBHOOK_SECRET_PREFIX, plen))
        b64 = secret + plen;
    /* The secret itself never goes into messages: they end up in logs. */
    long n = kf_b64_decode(b64, strlen(b64), out_key, KF_WEBHOOK_KEY_MAX);
    if (n < 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "webhook secret is not 'whsec_' + base64 of at most %d bytes",
                          KF_WEBHOOK_KEY_MAX);
    if (n < 1)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "webhook secret is empty");
    *out_key_len = (size_t)n;
    return KF_OK;
}

/* HMAC-SHA256 over the three signed parts joined by '.', without building the joined copy
 * (bodies can be large). */
static int
kf_webhook_mac(const unsigned char *key,
               size_t key_len,
               const char *msg_id,
               const char *ts,
               const void *body,
               size_t body_len,
               unsigned char mac[32])
{
    int ok = 0;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    if (!ctx)
        goto out;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    size_t outl = 0;
    if (EVP_MAC_init(ctx, key, key_len, params) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)msg_id, strlen(msg_id)) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
        (body_len && EVP_MAC_update(ctx, body, body_len) != 1) ||
        EVP_MAC_final(ctx, mac, &outl, 32) != 1 || outl != 32)
        goto out;
    ok = 1;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return ok;
}

kf_err_t
kf_webhook_sign(const unsigned char *key,
                size_t key_len,
                const char *msg_id,
                int64_t timestamp,
                const void *body,
                size_t body_len,
                char out_sig[KF_WEBHOOK_SIG_SIZE])
{
    if (!key || !key_len || !msg_id || !*msg_id || (!body && body_len))
        return KF_ERR_INVALID_ARG;
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)timestamp);
    unsigned char mac[32];
    if (!kf_webhook_mac(key, key_len, msg_id, ts, body, body_len, mac))
        return KF_ERR_INTERNAL;
    memcpy(out_sig, "v1,", 3);
    /* 32 bytes encode to 44 characters plus NUL: fits KF_WEBHOOK_SIG_SIZE - 3. */
    EVP_EncodeBlock((unsigned char *)out_sig + 3, mac, 32);
    return KF_OK;
}

kf_err_t
kf_webhook_verify(const unsigned char *key,
                  size_t key_len,
                  const char *msg_id,
                  const char *timestamp,
                  const void *body,
                  size_t body_len,
                  const char *sig_header,
                  int64_t now_s,
                  int64_t tolerance_s,
                  char *errstr,
                  size_t errstr_size)
{
    if (!key || !key_len || !msg_id || !*msg_id || !timestamp || !sig_header || (!body && body_len))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "webhook-id, webhook-timestamp or webhook-signature is missing");
    /* Timestamps are plain decimal seconds; anything else is refused before any MAC work. */
    size_t tl = strlen(timestamp);
    if (tl == 0 || tl > 18)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "bad webhook-timestamp");
    int64_t ts = 0;
    for (size_t i = 0; i < tl; i++) {
        if (!isdigit((unsigned char)timestamp[i]))
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "bad webhook-timestamp");
        ts = ts * 10 + (timestamp[i] - '0');
    }
    if (tolerance_s > 0 && (ts > now_s + tolerance_s || ts < now_s - tolerance_s))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "webhook-timestamp %lld is outside the %lld s tolerance", (long long)ts,
                          (long long)tolerance_s);
    unsigned char mac[32];
    if (!kf_webhook_mac(key, key_len, msg_id, timestamp, body, body_len, mac))
        return kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "HMAC failed");
    /* Walk the space-separated "version,signature" entries. */
    const char *p = sig_header;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *end = p;
        while (*end && *end != ' ')
            end++;
        size_t len = (size_t)(end - p);
        if (len > 3 && !strncmp(p, "v1,", 3)) {
            unsigned char got[64];
            long n = kf_b64_decode(p + 3, len - 3, got, sizeof(got));
            if (n == 32 && CRYPTO_memcmp(got, mac, 32) == 0)
                return KF_OK;
        }
        p = end;
    }
    return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "no matching v1 signature");
}

/* ---- SSRF guard --------------------------------------------------------------------------- */

static const char *const kf_webhook_addr_names[] = {
    "public", "loopback",  "private",     "link-local", "metadata",
    "cgnat",  "multicast", "unspecified", "reserved",   "unsupported",
};

const char *
kf_webhook_addr_class_str(kf_webhook_addr_class_t cls)
{
    if ((unsigned)cls >= sizeof(kf_webhook_addr_names) / sizeof(kf_webhook_addr_names[0]))
        return "unknown";
    return kf_webhook_addr_names[cls];
}

/* True when the top `bits` bits of a equal those of net (host byte order). */
static int
kf_v4_in(uint32_t a, uint32_t net, int bits)
{
    uint32_t mask = bits == 0 ? 0 : 0xffffffffu << (32 - bits);
    return (a & mask) == (net & mask);
}

#define KF_V4(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((c) << 8) | (d))

static kf_webhook_addr_class_t
kf_classify_v4(uint32_t a)
{
    if (kf_v4_in(a, KF_V4(0, 0, 0, 0), 8))
        return KF_WEBHOOK_ADDR_UNSPECIFIED;
    if (kf_v4_in(a, KF_V4(127, 0, 0, 0), 8))
        return KF_WEBHOOK_ADDR_LOOPBACK;
    if (kf_v4_in(a, KF_V4(10, 0, 0, 0), 8) || kf_v4_in(a, KF_V4(172, 16, 0, 0), 12) ||
        kf_v4_in(a, KF_V4(192, 168, 0, 0), 16))
        return KF_WEBHOOK_ADDR_PRIVATE;
    /* The metadata address sits inside link-local: test it first for the clearer reason. */
    if (a == KF_V4(169, 254, 169, 254))
        return KF_WEBHOOK_ADDR_METADATA;
    if (kf_v4_in(a, KF_V4(169, 254, 0, 0), 16))
        return KF_WEBHOOK_ADDR_LINK_LOCAL;
    if (kf_v4_in(a, KF_V4(100, 64, 0, 0), 10))
        return KF_WEBHOOK_ADDR_CGNAT;
    if (kf_v4_in(a, KF_V4(224, 0, 0, 0), 4))
        return KF_WEBHOOK_ADDR_MULTICAST;
    /* 240/4 includes the broadcast address; the rest are IETF, documentation and
     * benchmarking ranges that no real endpoint lives in. */
    if (kf_v4_in(a, KF_V4(240, 0, 0, 0), 4) || kf_v4_in(a, KF_V4(192, 0, 0, 0), 24) ||
        kf_v4_in(a, KF_V4(192, 0, 2, 0), 24) || kf_v4_in(a, KF_V4(198, 51, 100, 0), 24) ||
        kf_v4_in(a, KF_V4(203, 0, 113, 0), 24) || kf_v4_in(a, KF_V4(198, 18, 0, 0), 15))
        return KF_WEBHOOK_ADDR_RESERVED;
    return KF_WEBHOOK_ADDR_PUBLIC;
}

static uint32_t
kf_v4_at(const unsigned char *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

/* If the IPv6 address embeds an IPv4 one (mapped, compatible, NAT64, 6to4), stores it and
 * returns 1. */
static int
kf_v6_embedded_v4(const unsigned char *b, uint32_t *out_v4)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char zero[12] = {0};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (!memcmp(b, mapped, 12) || !memcmp(b, nat64, 12)) {
        *out_v4 = kf_v4_at(b + 12);
        return 1;
    }
    /* ::a.b.c.d (deprecated "compatible" form); :: and ::1 are handled by the caller. */
    if (!memcmp(b, zero, 12) && kf_v4_at(b + 12) > 1) {
        *out_v4 = kf_v4_at(b + 12);
        return 1;
    }
    if (b[0] == 0x20 && b[1] == 0x02) {
        *out_v4 = kf_v4_at(b + 2);
        return 1;
    }
    return 0;
}

static kf_webhook_addr_class_t
kf_classify_v6(const unsigned char *b)
{
    static const unsigned char any[16] = {0};
    static const unsigned char loop[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    static const unsigned char ec2[16] = {0xfd, 0, 0x0e, 0xc2, 0, 0, 0,    0,
                                          0,    0, 0,    0,    0, 0, 0x02, 0x54};
    if (!memcmp(b, any, 16))
        return KF_WEBHOOK_ADDR_UNSPECIFIED;
    if (!memcmp(b, loop, 16))
        return KF_WEBHOOK_ADDR_LOOPBACK;
    uint32_t v4;
    if (kf_v6_embedded_v4(b, &v4))
        return kf_classify_v4(v4);
    if (!memcmp(b, ec2, 16))
        return KF_WEBHOOK_ADDR_METADATA;
    if ((b[0] & 0xfe) == 0xfc)
        return KF_WEBHOOK_ADDR_PRIVATE; /* fc00::/7 unique local */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return KF_WEBHOOK_ADDR_LINK_LOCAL; /* fe80::/10 */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
        return KF_WEBHOOK_ADDR_PRIVATE; /* fec0::/10, deprecated site-local */
    if (b[0] == 0xff)
        return KF_WEBHOOK_ADDR_MULTICAST;
    /* 2001:db8::/32 documentation, 100::/64 discard-only. */
    if ((b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) ||
        (b[0] == 0x01 && b[1] == 0x00 && !memcmp(b + 2, any, 6)))
        return KF_WEBHOOK_ADDR_RESERVED;
    return KF_WEBHOOK_ADDR_PUBLIC;
}

kf_webhook_addr_class_t
kf_webhook_addr_classify(const struct sockaddr *sa, size_t salen)
{
    if (!sa)
        return KF_WEBHOOK_ADDR_UNSUPPORTED;
    if (sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return kf_classify_v4(ntohl(in->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6 && salen >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return kf_classify_v6(in6->sin6_addr.s6_addr);
    }
    return KF_WEBHOOK_ADDR_UNSUPPORTED;
}

/* One CIDR block, IPv4 blocks stored as IPv4-mapped IPv6 so one comparison serves both. */
typedef struct kf_cidr {
    unsigned char net[16];
    int bits; /* prefix length over the 128-bit form */
} kf_cidr_t;

struct kf_webhook_cidrs {
    size_t n;
    kf_cidr_t *v;
};

static void
kf_v4_to_mapped(const unsigned char v4[4], unsigned char out[16])
{
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, v4, 4);
}

static void
kf_cidr_mask(unsigned char net[16], int bits)
{
    for (int i = 0; i < 16; i++) {
        int keep = bits - i * 8;
        if (keep >= 8)
            continue;
        net[i] &= keep <= 0 ? 0 : (unsigned char)(0xff << (8 - keep));
    }
}

kf_err_t
kf_webhook_cidrs_parse(const char *list,
                       kf_webhook_cidrs_t **out_cidrs,
                       char *errstr,
                       size_t errstr_size)
{
    kf_webhook_cidrs_t *c = calloc(1, sizeof(*c));
    if (!c)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    const char *p = list ? list : "";
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *end = p;
        while (*end && *end != ',' && *end != ' ' && *end != '\t')
            end++;
        char tok[80];
        size_t len = (size_t)(end - p);
        if (len >= sizeof(tok)) {
            kf_webhook_cidrs_destroy(c);
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "allowlist entry '%.40s...' is too long", p);
        }
        memcpy(tok, p, len);
        tok[len] = '\0';
        p = end;
        char *slash = strchr(tok, '/');
        long bits = -1;
        if (slash) {
            *slash = '\0';
            char *e = NULL;
            bits = strtol(slash + 1, &e, 10);
            if (!slash[1] || *e || !isdigit((unsigned char)slash[1]))
                bits = -2;
        }
        kf_cidr_t cidr;
        unsigned char raw[16];
        if (inet_pton(AF_INET, tok, raw) == 1) {
            if (bits == -1)
                bits = 32;
            if (bits < 0 || bits > 32)
                goto bad;
            kf_v4_to_mapped(raw, cidr.net);
            cidr.bits = (int)bits + 96;
        } else if (inet_pton(AF_INET6, tok, raw) == 1) {
            if (bits == -1)
                bits = 128;
            if (bits < 0 || bits > 128)
                goto bad;
            memcpy(cidr.net, raw, 16);
            cidr.bits = (int)bits;
        } else {
            goto bad;
        }
        kf_cidr_mask(cidr.net, cidr.bits);
        kf_cidr_t *nv = realloc(c->v, (c->n + 1) * sizeof(*nv));
        if (!nv) {
            kf_webhook_cidrs_destroy(c);
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        }
        c->v = nv;
        c->v[c->n++] = cidr;
        continue;
    bad:
        if (slash)
            *slash = '/';
        kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                   "allowlist entry '%s' is not an IPv4/IPv6 address or CIDR block", tok);
        kf_webhook_cidrs_destroy(c);
        return KF_ERR_INVALID_ARG;
    }
    *out_cidrs = c;
    return KF_OK;
}

void
kf_webhook_cidrs_destroy(kf_webhook_cidrs_t *cidrs)
{
    if (!cidrs)
        return;
    free(cidrs->v);
    free(cidrs);
}

size_t
kf_webhook_cidrs_count(const kf_webhook_cidrs_t *cidrs)
{
    return cidrs ? cidrs->n : 0;
}

/* The 128-bit form of an address (IPv4 as mapped); 0 for other families. */
static int
kf_sa_bytes(const struct sockaddr *sa, size_t salen, unsigned char out[16])
{
    if (sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in)) {
        kf_v4_to_mapped((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr, out);
        return 1;
    }
    if (sa->sa_family == AF_INET6 && salen >= sizeof(struct sockaddr_in6)) {
        memcpy(out, ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, 16);
        return 1;
    }
    return 0;
}

int
kf_webhook_cidrs_match(const kf_webhook_cidrs_t *cidrs, const struct sockaddr *sa, size_t salen)
{
    unsigned char a[16];
    if (!cidrs || !sa || !kf_sa_bytes(sa, salen, a))
        return 0;
    for (size_t i = 0; i < cidrs->n; i++) {
        unsigned char m[16];
        memcpy(m, a, 16);
        kf_cidr_mask(m, cidrs->v[i].bits);
        if (!memcmp(m, cidrs->v[i].net, 16))
            return 1;
    }
    return 0;
}

kf_err_t
kf_webhook_addr_check(const kf_webhook_cidrs_t *allow,
                      const struct sockaddr *sa,
                      size_t salen,
                      char *errstr,
                      size_t errstr_size)
{
    kf_webhook_addr_class_t cls = kf_webhook_addr_classify(sa, salen);
    if (cls == KF_WEBHOOK_ADDR_PUBLIC)
        return KF_OK;
    if (cls != KF_WEBHOOK_ADDR_UNSUPPORTED && kf_webhook_cidrs_match(allow, sa, salen))
        return KF_OK;
    char text[INET6_ADDRSTRLEN] = "?";
    if (sa && sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in))
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text, sizeof(text));
    else if (sa && sa->sa_family == AF_INET6 && salen >= sizeof(struct sockaddr_in6))
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, text, sizeof(text));
    return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "blocked %s address %s",
                      kf_webhook_addr_class_str(cls), text);
}

kf_err_t
kf_webhook_url_check(const char *url, char *errstr, size_t errstr_size)
{
    if (!url || !*url)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "callback URL is empty");
    size_t len = strlen(url);
    if (len > 2048)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "callback URL is longer than 2048 bytes");
    const char *rest;
    if (!strncasecmp(url, "http://", 7))
        rest = url + 7;
    else if (!strncasecmp(url, "https://", 8))
        rest = url + 8;
    else
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "callback URL must start with http:// or https://");
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)url[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "callback URL contains a space, control or non-ASCII byte");
    }
    /* The authority ends at the first '/', '?' or '#'. */
    size_t alen = strcspn(rest, "/?#");
    if (alen == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "callback URL has no host");
    if (memchr(rest, '@', alen))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "callback URL must not contain user information");
    if (rest[0] == ':')
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "callback URL has no host");
    return KF_OK;
}

/* ---- retry policy ------------------------------------------------------------------------- */

kf_err_t
kf_webhook_schedule_parse(const char *text,
                          kf_webhook_schedule_t *out_sched,
                          char *errstr,
                          size_t errstr_size)
{
    kf_webhook_schedule_t s = {0};
    const char *p = text ? text : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *start = p;
        char *end = NULL;
        if (!isdigit((unsigned char)*p) && *p != '.')
            goto bad;
        double v = strtod(p, &end);
        p = end;
        double mult = 1000.0; /* bare number: seconds */
        if (!strncmp(p, "ms", 2)) {
            mult = 1.0;
            p += 2;
        } else if (*p == 's') {
            p++;
        } else if (*p == 'm') {
            mult = 60000.0;
            p++;
        } else if (*p == 'h') {
            mult = 3600000.0;
            p++;
        }
        if (*p && *p != ',' && *p != ' ')
            goto bad;
        double ms = v * mult;
        if (!(ms >= 1.0) || ms > 7.0 * 86400000.0)
            goto bad;
        if (s.n >= KF_WEBHOOK_SCHEDULE_MAX)
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "retry schedule has more than %d entries", KF_WEBHOOK_SCHEDULE_MAX);
        s.delay_ms[s.n++] = (int64_t)llround(ms);
        continue;
    bad:
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "retry schedule entry '%.*s' is not a duration between 1ms and 7 days "
                          "(units ms, s, m, h)",
                          (int)strcspn(start, ", "), start);
    }
    if (s.n == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "retry schedule is empty");
    *out_sched = s;
    return KF_OK;
}

/* Reads exactly `n` digits; -1 when they are not all digits. */
static int
kf_digits(const char *p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i]))
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

static int
kf_month(const char *p)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (!strncmp(p, months + 3 * i, 3))
            return i;
    return -1;
}

/* Parses "HH:MM:SS" at p. */
static int
kf_hms(const char *p, struct tm *tm)
{
    if (p[2] != ':' || p[5] != ':')
        return 0;
    tm->tm_hour = kf_digits(p, 2);
    tm->tm_min = kf_digits(p + 3, 2);
    tm->tm_sec = kf_digits(p + 6, 2);
    return tm->tm_hour >= 0 && tm->tm_hour <= 23 && tm->tm_min >= 0 && tm->tm_min <= 59 &&
           tm->tm_sec >= 0 && tm->tm_sec <= 60;
}

/* The three HTTP-date forms of RFC 9110 section 5.6.7, all in GMT. */
static int
kf_http_date(const char *s, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    size_t len = strlen(s);
    const char *comma = strchr(s, ',');
    if (comma && len == 29 && comma == s + 3) {
        /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        if (s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || strcmp(s + 25, " GMT"))
            return 0;
        tm.tm_mday = kf_digits(s + 5, 2);
        tm.tm_mon = kf_month(s + 8);
        tm.tm_year = kf_digits(s + 12, 4);
        if (!kf_hms(s + 17, &tm))
            return 0;
    } else if (comma && comma > s && comma - s <= 9) {
        /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" (two-digit year: 70-99 -> 19xx) */
        const char *p = comma + 1;
        if (strlen(p) != 23 || p[0] != ' ' || p[3] != '-' || p[7] != '-' || p[10] != ' ' ||
            strcmp(p + 19, " GMT"))
            return 0;
        tm.tm_mday = kf_digits(p + 1, 2);
        tm.tm_mon = kf_month(p + 4);
        int yy = kf_digits(p + 8, 2);
        if (yy < 0)
            return 0;
        tm.tm_year = yy < 70 ? 2000 + yy : 1900 + yy;
        if (!kf_hms(p + 11, &tm))
            return 0;
    } else if (len == 24 && !comma) {
        /* asctime: "Sun Nov  6 08:49:37 1994" */
        if (s[3] != ' ' || s[7] != ' ' || s[10] != ' ' || s[19] != ' ')
            return 0;
        tm.tm_mon = kf_month(s + 4);
        tm.tm_mday = s[8] == ' ' ? kf_digits(s + 9, 1) : kf_digits(s + 8, 2);
        if (!kf_hms(s + 11, &tm))
            return 0;
        tm.tm_year = kf_digits(s + 20, 4);
    } else {
        return 0;
    }
    if (tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_mon < 0 || tm.tm_year < 1970)
        return 0;
    tm.tm_year -= 1900;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return 0;
    *out = t;
    return 1;
}

#define KF_RETRY_AFTER_CAP_MS (30LL * 86400 * 1000)

kf_err_t
kf_webhook_retry_after_parse(const char *value, int64_t now_ms, int64_t *out_delay_ms)
{
    if (!value || !out_delay_ms)
        return KF_ERR_INVALID_ARG;
    /* Trim optional whitespace around the field value (RFC 9110 OWS). */
    while (*value == ' ' || *value == '\t')
        value++;
    char buf[64];
    size_t len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t' || value[len - 1] == '\r' ||
                       value[len - 1] == '\n'))
        len--;
    if (len == 0 || len >= sizeof(buf))
        return KF_ERR_PARSE;
    memcpy(buf, value, len);
    buf[len] = '\0';
    if (isdigit((unsigned char)buf[0])) {
        int64_t secs = 0;
        for (size_t i = 0; i < len; i++) {
            if (!isdigit((unsigned char)buf[i]))
                return KF_ERR_PARSE;
            /* Saturate instead of overflowing: the cap applies below anyway. */
            if (secs < KF_RETRY_AFTER_CAP_MS)
                secs = secs * 10 + (buf[i] - '0');
        }
        int64_t ms = secs >= KF_RETRY_AFTER_CAP_MS / 1000 ? KF_RETRY_AFTER_CAP_MS : secs * 1000;
        *out_delay_ms = ms;
        return KF_OK;
    }
    time_t t;
    if (!kf_http_date(buf, &t))
        return KF_ERR_PARSE;
    int64_t at_ms = (int64_t)t * 1000;
    int64_t d = at_ms - now_ms;
    if (d < 0)
        d = 0;
    if (d > KF_RETRY_AFTER_CAP_MS)
        d = KF_RETRY_AFTER_CAP_MS;
    *out_delay_ms = d;
    return KF_OK;
}

static const char *const kf_webhook_outcome_names[] = {"delivered", "retry", "failed", "gone"};

const char *
kf_webhook_outcome_str(kf_webhook_outcome_t outcome)
{
    if ((unsigned)outcome > KF_WEBHOOK_GONE)
        return "unknown";
    return kf_webhook_outcome_names[outcome];
}

kf_webhook_decision_t
kf_webhook_decide(const kf_webhook_schedule_t *sched,
                  const kf_webhook_attempt_t *at,
                  double jitter,
                  double u,
                  int64_t retry_after_max_ms)
{
    kf_webhook_decision_t d = {.outcome = KF_WEBHOOK_FAILED, .exhausted = 0, .delay_ms = 0};
    long st = at->http_status;
    if (at->blocked)
        d.outcome = KF_WEBHOOK_FAILED;
    else if (st >= 200 && st <= 299)
        d.outcome = KF_WEBHOOK_DELIVERED;
    else if (st == 410)
        d.outcome = KF_WEBHOOK_GONE;
    else if (st == 0 ? at->transport_error != 0 : (st == 408 || st == 429 || st >= 500))
        d.outcome = KF_WEBHOOK_RETRY;
    else
        d.outcome = KF_WEBHOOK_FAILED; /* 1xx, 3xx (redirects are not followed), other 4xx */
    if (d.outcome != KF_WEBHOOK_RETRY)
        return d;
    /* attempt k failed: the next one is k + 1, which waits delay_ms[k - 1]. */
    if (at->attempt < 1 || (size_t)at->attempt > sched->n) {
        d.outcome = KF_WEBHOOK_FAILED;
        d.exhausted = 1;
        return d;
    }
    double base = (double)sched->delay_ms[at->attempt - 1];
    if (jitter < 0)
        jitter = 0;
    if (jitter > 1)
        jitter = 1;
    if (!(u >= 0 && u < 1))
        u = 0.5;
    double delay = base * (1.0 + jitter * (2.0 * u - 1.0));
    int64_t ms = (int64_t)llround(delay);
    if (ms < 1)
        ms = 1;
    /* Retry-After is a floor: the receiver asked us not to come back sooner. */
    if (at->retry_after_ms >= 0) {
        int64_t ra = at->retry_after_ms;
        if (retry_after_max_ms > 0 && ra > retry_after_max_ms)
            ra = retry_after_max_ms;
        if (ra > ms)
            ms = ra;
    }
    d.delay_ms = ms;
    return d;
}
