/*
 * admin.c: `kinfer admin`, tenant and API key administration for the HTTP API, and the
 * library functions behind it (kf_api_admin_*, also used by tests and the demo).
 *
 * Secrets are shown exactly once, on stdout, when created: the webhook secret is stored
 * because the dispatcher signs callbacks with it, but an API key is stored only as its
 * SHA-256, so a lost key cannot be recovered, only replaced.
 */
#include "api_int.h"

#include "kf_log.h"
#include "kf_pg.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kf_err_t
kf_admin_register(kf_pg_t *pg, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_pg_register(pg, "admin_tenant",
                                  "INSERT INTO tenants (tenant_id, name, webhook_secret, "
                                  "rate_per_sec, rate_burst) VALUES ($1, $2, $3, "
                                  "coalesce($4::double precision, 100), coalesce($5::int, 200)) "
                                  "ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id",
                                  5, 0, errstr, errstr_size);
    if (!err)
        err = kf_pg_register(pg, "admin_key",
                             "INSERT INTO api_keys (key_sha256, tenant_id, label) "
                             "SELECT $1, tenant_id, $3 FROM tenants WHERE tenant_id = $2 "
                             "RETURNING tenant_id",
                             3, 0, errstr, errstr_size);
    if (!err)
        err = kf_pg_register(pg, "admin_revoke",
                             "UPDATE api_keys SET revoked = true WHERE key_sha256 = $1 "
                             "RETURNING tenant_id",
                             1, KF_PG_IDEMPOTENT, errstr, errstr_size);
    return err;
}

kf_err_t
kf_api_admin_create_tenant(kf_pg_t *pg,
                           const char *tenant_id,
                           const char *name,
                           double rate,
                           int burst,
                           char *out_secret,
                           size_t secret_size,
                           char *errstr,
                           size_t errstr_size)
{
    if (!tenant_id || !*tenant_id || !name || !*name)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "tenant id and name must not be empty");
    if (secret_size < 64)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "secret buffer too small");
    kf_err_t err = kf_admin_register(pg, errstr, errstr_size);
    if (err)
        return err;
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "RAND_bytes failed");
    /* Standard Webhooks: whsec_ + base64 of the key bytes (32 bytes -> 44 characters). */
    memcpy(out_secret, "whsec_", 6);
    EVP_EncodeBlock((unsigned char *)out_secret + 6, raw, sizeof(raw));
    char rs[32], bs[16];
    snprintf(rs, sizeof(rs), "%.17g", rate);
    snprintf(bs, sizeof(bs), "%d", burst);
    const char *params[] = {tenant_id, name, out_secret, rate > 0 ? rs : NULL,
                            burst > 0 ? bs : NULL};
    kf_pg_result_t *res = NULL;
    err = kf_pg_exec_prepared(pg, "admin_tenant", params, 5, &res, errstr, errstr_size);
    if (err) {
        out_secret[0] = '\0';
        return err;
    }
    int n = kf_pg_result_ntuples(res);
    kf_pg_result_destroy(res);
    if (n == 0) {
        out_secret[0] = '\0';
        return kf_err_set(errstr, errstr_size, KF_ERR_EXISTS, "tenant '%s' already exists",
                          tenant_id);
    }
    return KF_OK;
}

kf_err_t
kf_api_admin_create_key(kf_pg_t *pg,
                        const char *tenant_id,
                        const char *label,
                        char *out_key,
                        size_t key_size,
                        char *errstr,
                        size_t errstr_size)
{
    if (key_size < 64)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "key buffer too small");
    kf_err_t err = kf_admin_register(pg, errstr, errstr_size);
    if (err)
        return err;
    unsigned char raw[24];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "RAND_bytes failed");
    static const char hex[] = "0123456789abcdef";
    memcpy(out_key, "kf_", 3);
    for (size_t i = 0; i < sizeof(raw); i++) {
        out_key[3 + 2 * i] = hex[raw[i] >> 4];
        out_key[4 + 2 * i] = hex[raw[i] & 15];
    }
    out_key[3 + 2 * sizeof(raw)] = '\0';
    char hash[65];
    if (kf_api_key_sha256_hex(out_key, strlen(out_key), hash))
        return kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "SHA-256 failed");
    const char *params[] = {hash, tenant_id, label ? label : ""};
    kf_pg_result_t *res = NULL;
    err = kf_pg_exec_prepared(pg, "admin_key", params, 3, &res, errstr, errstr_size);
    if (err) {
        out_key[0] = '\0';
        return err;
    }
    int n = kf_pg_result_ntuples(res);
    kf_pg_result_destroy(res);
    if (n == 0) {
        out_key[0] = '\0';
        return kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "no tenant '%s'", tenant_id);
    }
    return KF_OK;
}

kf_err_t
kf_api_admin_revoke_key(kf_pg_t *pg, const char *key, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_admin_register(pg, errstr, errstr_size);
    if (err)
        return err;
    char hash[65];
    if (kf_api_key_sha256_hex(key, strlen(key), hash))
        return kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "SHA-256 failed");
    const char *params[] = {hash};
    kf_pg_result_t *res = NULL;
    err = kf_pg_exec_prepared(pg, "admin_revoke", params, 1, &res, errstr, errstr_size);
    if (err)
        return err;
    int n = kf_pg_result_ntuples(res);
    kf_pg_result_destroy(res);
    return n ? KF_OK : kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "unknown API key");
}

static int
kf_admin_usage(FILE *fp)
{
    fprintf(fp, "Usage: kinfer admin <command> [options]\n\n"
                "Tenant and API key administration for `kinfer api`.\n\n"
                "Commands:\n"
                "  create-tenant --id T --name N [--rate R] [--burst B]\n"
                "        creates a tenant (token bucket R requests/s, burst B; defaults 100/200)\n"
                "        and prints its webhook secret (whsec_...) once on stdout\n"
                "  create-key --tenant T [--label L]\n"
                "        prints a new API key once on stdout; only its SHA-256 is stored\n"
                "  revoke-key --key KEY\n"
                "        revokes a key (API processes notice within api.auth.cache.ttl)\n\n"
                "Options:\n"
                "  --dsn DSN   libpq connection string (default: $KINFER_PG_DSN)\n"
                "  -h, --help  this help\n");
    return fp == stdout ? 0 : 2;
}

int
kf_cmd_admin(int argc, char **argv)
{
    const char *cmd = NULL, *dsn = getenv("KINFER_PG_DSN"), *id = NULL, *name = NULL,
               *tenant = NULL, *label = NULL, *key = NULL;
    double rate = 0;
    int burst = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return kf_admin_usage(stdout);
        if (a[0] != '-') {
            if (cmd) {
                fprintf(stderr, "kinfer admin: unexpected argument '%s'\n", a);
                return 2;
            }
            cmd = a;
            continue;
        }
        if (!v) {
            fprintf(stderr, "kinfer admin: option %s needs a value\n", a);
            return 2;
        }
        i++;
        char *end = NULL;
        if (!strcmp(a, "--dsn")) {
            dsn = v;
        } else if (!strcmp(a, "--id")) {
            id = v;
        } else if (!strcmp(a, "--name")) {
            name = v;
        } else if (!strcmp(a, "--tenant")) {
            tenant = v;
        } else if (!strcmp(a, "--label")) {
            label = v;
        } else if (!strcmp(a, "--key")) {
            key = v;
        } else if (!strcmp(a, "--rate")) {
            rate = strtod(v, &end);
            if (*end || !(rate > 0)) {
                fprintf(stderr, "kinfer admin: --rate must be a number > 0, not '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--burst")) {
            long b = strtol(v, &end, 10);
            if (*end || b < 1 || b > 1000000000) {
                fprintf(stderr, "kinfer admin: --burst must be an integer >= 1, not '%s'\n", v);
                return 2;
            }
            burst = (int)b;
        } else {
            fprintf(stderr, "kinfer admin: unknown option '%s'\n", a);
            return kf_admin_usage(stderr);
        }
    }
    if (!cmd)
        return kf_admin_usage(stderr);
    int create_tenant = !strcmp(cmd, "create-tenant"), create_key = !strcmp(cmd, "create-key"),
        revoke = !strcmp(cmd, "revoke-key");
    if (!create_tenant && !create_key && !revoke) {
        fprintf(stderr, "kinfer admin: unknown command '%s'\n", cmd);
        return kf_admin_usage(stderr);
    }
    if ((create_tenant && (!id || !name)) || (create_key && !tenant) || (revoke && !key)) {
        fprintf(stderr, "kinfer admin %s: missing a required option\n", cmd);
        return kf_admin_usage(stderr);
    }
    if (!dsn || !*dsn) {
        fprintf(stderr, "kinfer admin: no database: pass --dsn or set KINFER_PG_DSN\n");
        return 2;
    }
    char errstr[512];
    kf_pg_t *pg = NULL;
    kf_pg_opts_t opts = {.dsn = dsn, .application_name = "kinfer-admin"};
    if (kf_pg_new(&opts, &pg, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer admin: %s\n", errstr);
        return 1;
    }
    kf_err_t err;
    char out[128];
    if (create_tenant) {
        err = kf_api_admin_create_tenant(pg, id, name, rate, burst, out, sizeof(out), errstr,
                                         sizeof(errstr));
        if (!err) {
            fprintf(stderr, "tenant '%s' created; its webhook secret (shown once):\n", id);
            printf("%s\n", out);
        }
    } else if (create_key) {
        err = kf_api_admin_create_key(pg, tenant, label, out, sizeof(out), errstr, sizeof(errstr));
        if (!err) {
            fprintf(stderr, "API key for tenant '%s' (shown once; only its hash is stored):\n",
                    tenant);
            printf("%s\n", out);
        }
    } else {
        err = kf_api_admin_revoke_key(pg, key, errstr, sizeof(errstr));
        if (!err)
            fprintf(stderr, "key revoked\n");
    }
    kf_pg_destroy(pg);
    if (err) {
        fprintf(stderr, "kinfer admin %s: %s\n", cmd, errstr);
        return 1;
    }
    return 0;
}
