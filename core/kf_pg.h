/*
 * kf_pg: a PostgreSQL connection (libpq) that survives server restarts.
 *
 *   kf_pg_opts_t opts = {.dsn = dsn, .statement_timeout_ms = 5000};
 *   kf_pg_t *pg;
 *   if (kf_pg_new(&opts, &pg, errstr, sizeof(errstr)) != KF_OK) ...
 *   kf_pg_register(pg, "get_job", "SELECT state FROM jobs WHERE id = $1", 1, KF_PG_IDEMPOTENT,
 *                  errstr, sizeof(errstr));
 *   kf_pg_result_t *res;
 *   err = kf_pg_exec_prepared(pg, "get_job", (const char *[]){"42"}, 1, &res, errstr, ...);
 *   ... kf_pg_result_ntuples(res), kf_pg_result_value(res, 0, 0)
 *   kf_pg_result_destroy(res);
 *
 * Named statements are registered once (name, SQL, parameter count) and prepared lazily on
 * each connection: after a reconnect they are prepared again on first use, so callers never
 * see "prepared statement does not exist". Every new connection runs
 * `SET statement_timeout` (opts.statement_timeout_ms) before anything else.
 *
 * Lost connections (server restart, admin shutdown 57P01/57P02/57P03, class 08 errors, too many
 * connections 53300) map to KF_ERR_UNAVAILABLE (retriable). The next call reconnects, waiting
 * out an exponential backoff with jitter (backoff_initial_ms doubling up to backoff_max_ms).
 * Calls on statements flagged KF_PG_IDEMPOTENT retry transparently, reconnecting and
 * re-preparing, until retry_deadline_ms has passed; other calls return KF_ERR_UNAVAILABLE and
 * let the caller decide, because re-running a non-idempotent statement whose outcome is unknown
 * could apply it twice. Statement timeouts and query cancels (57014) map to KF_ERR_TIMEOUT,
 * serialization failures and deadlocks (40001, 40P01) to KF_ERR_UNAVAILABLE (both retriable but
 * not retried here). Every other server error (constraints, syntax, types) is KF_ERR_DB with the
 * server's message and SQLSTATE in errstr ("postgres: execute 'put': duplicate key value
 * violates unique constraint "items_pkey" (SQLSTATE 23505; Key (id)=(1) already exists.)");
 * kf_pg_sqlstate() returns the SQLSTATE of the last error.
 *
 * Retries only make sense outside explicit transactions: do not use KF_PG_IDEMPOTENT
 * statements between BEGIN and COMMIT (a reconnect silently ends the transaction).
 *
 * Thread-safety: like a PGconn, a kf_pg_t is used by one thread at a time. Results are
 * independent of the connection and may be read from any thread.
 */
#ifndef KF_PG_H
#define KF_PG_H

#include <stddef.h>
#include <stdint.h>

#include "kf_conf.h"
#include "kf_err.h"

typedef struct kf_pg kf_pg_t;
typedef struct kf_pg_result kf_pg_result_t;

typedef struct kf_pg_opts {
    const char *dsn;              /* libpq conninfo string or URI (required) */
    int64_t statement_timeout_ms; /* SET statement_timeout on connect; 0: server default */
    int64_t connect_timeout_ms;   /* per connection attempt; 0: 5000 (libpq needs >= 2 s) */
    int64_t backoff_initial_ms;   /* first reconnect delay; 0: 100 */
    int64_t backoff_max_ms;       /* largest reconnect delay; 0: 10000 */
    int64_t retry_deadline_ms;    /* how long an idempotent call keeps retrying; 0: 30000,
                                     negative: never retry */
    const char *application_name; /* NULL: "kinfer" */
} kf_pg_opts_t;

/* kf_pg_register flags */
#define KF_PG_IDEMPOTENT 0x1 /* safe to run again after a lost connection: retried */

/* pg.* keys: pg.dsn (secret), pg.statement.timeout, pg.connect.timeout,
 * pg.reconnect.backoff.initial, pg.reconnect.backoff.max, pg.retry.deadline. */
extern const kf_conf_prop_t kf_pg_conf_props[];
/* Fills opts from conf (strings borrowed from conf). */
void kf_pg_opts_from_conf(const kf_conf_t *conf, kf_pg_opts_t *opts);

/* Connects once (no retry). Errors: KF_ERR_INVALID_ARG (no DSN), KF_ERR_UNAVAILABLE (server
 * unreachable; retriable), KF_ERR_DB (rejected: bad password, unknown database), with libpq's
 * message. The DSN is never copied into messages (it may hold a password). */
kf_err_t kf_pg_new(const kf_pg_opts_t *opts, kf_pg_t **out_pg, char *errstr, size_t errstr_size);
void kf_pg_destroy(kf_pg_t *pg);

/* Registers a named statement (name and sql copied). KF_ERR_EXISTS when the name is taken with
 * different SQL; the same registration twice is a no-op. Prepares nothing yet. */
kf_err_t kf_pg_register(kf_pg_t *pg,
                        const char *name,
                        const char *sql,
                        int nparams,
                        int flags,
                        char *errstr,
                        size_t errstr_size);

/* Runs a registered statement with text parameters (params[i] NULL = SQL NULL; nparams must
 * match the registration). On KF_OK *out_res (may be NULL when the rows are not wanted) holds
 * the result; free it with kf_pg_result_destroy. KF_ERR_NOT_FOUND for an unregistered name. */
kf_err_t kf_pg_exec_prepared(kf_pg_t *pg,
                             const char *name,
                             const char *const *params,
                             int nparams,
                             kf_pg_result_t **out_res,
                             char *errstr,
                             size_t errstr_size);

/* Runs SQL text without parameters (DDL, BEGIN/COMMIT, migrations). flags: KF_PG_IDEMPOTENT to
 * retry like kf_pg_exec_prepared. out_res may be NULL. */
kf_err_t kf_pg_exec(kf_pg_t *pg,
                    const char *sql,
                    int flags,
                    kf_pg_result_t **out_res,
                    char *errstr,
                    size_t errstr_size);

/* SQLSTATE of the last failed call ("23505"), "" when it had none (e.g. connection lost). */
const char *kf_pg_sqlstate(const kf_pg_t *pg);
/* Number of successful (re)connections so far; 1 after kf_pg_new. For tests and metrics. */
uint64_t kf_pg_connects(const kf_pg_t *pg);

/* Result accessors. Rows and columns are 0-based and must be in range (KF_ASSERT).
 * kf_pg_result_value returns NULL for SQL NULL; text is borrowed from the result. */
int kf_pg_result_ntuples(const kf_pg_result_t *res);
int kf_pg_result_nfields(const kf_pg_result_t *res);
const char *kf_pg_result_fname(const kf_pg_result_t *res, int col);
const char *kf_pg_result_value(const kf_pg_result_t *res, int row, int col);
/* Rows affected by INSERT/UPDATE/DELETE (0 for others). */
int64_t kf_pg_result_affected(const kf_pg_result_t *res);
void kf_pg_result_destroy(kf_pg_result_t *res);

#endif /* KF_PG_H */
