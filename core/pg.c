/*
 * PostgreSQL wrapper: one PGconn plus the list of named statements to (re)prepare on it.
 *
 * Each successful connect bumps a generation number; a statement remembers the generation it
 * was prepared on, so "is it prepared on this connection?" is one integer compare and a
 * reconnect needs no bookkeeping beyond the increment. The retry loop lives in kf_pg_run():
 * ensure a connection (waiting out the backoff only when the caller may retry), prepare if
 * needed, execute, classify; loop only for lost connections on idempotent calls.
 */
#include "kf_pg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "kf_log.h"

typedef struct kf_pg_stmt {
    char *name;
    char *sql;
    int nparams;
    int flags;
    uint64_t prepared_gen; /* connection generation it is prepared on; 0: none */
} kf_pg_stmt_t;

struct kf_pg {
    PGconn *conn;
    uint64_t gen; /* bumped on every successful connect */
    uint64_t connects;
    char *dsn;
    char *application_name;
    int64_t statement_timeout_ms, connect_timeout_ms;
    int64_t backoff_initial_ms, backoff_max_ms, retry_deadline_ms;
    int attempts;            /* consecutive failed connects, drives the backoff */
    int64_t next_attempt_ms; /* monotonic time before which we do not try to connect */
    unsigned int rand_state;
    kf_pg_stmt_t *stmts;
    size_t nstmts, cap_stmts;
    char sqlstate[8];
};

struct kf_pg_result {
    PGresult *res;
};

const kf_conf_prop_t kf_pg_conf_props[] = {
    {.name = "pg.dsn",
     .type = KF_CONF_STRING,
     .flags = KF_CONF_F_SECRET,
     .desc = "libpq connection string or URI (may hold a password)."},
    {.name = "pg.statement.timeout",
     .type = KF_CONF_DURATION,
     .def = "30s",
     .min = 0,
     .max = 3600000,
     .desc = "statement_timeout set on every new connection; 0 keeps the server default."},
    {.name = "pg.connect.timeout",
     .type = KF_CONF_DURATION,
     .def = "5s",
     .min = 2000,
     .max = 600000,
     .desc = "Timeout of one connection attempt (libpq counts whole seconds, at least 2)."},
    {.name = "pg.reconnect.backoff.initial",
     .type = KF_CONF_DURATION,
     .def = "100ms",
     .min = 1,
     .max = 60000,
     .desc = "First delay between reconnection attempts; doubles on each failure."},
    {.name = "pg.reconnect.backoff.max",
     .type = KF_CONF_DURATION,
     .def = "10s",
     .min = 1,
     .max = 600000,
     .desc = "Largest delay between reconnection attempts (jitter picks 50-100% of it)."},
    {.name = "pg.retry.deadline",
     .type = KF_CONF_DURATION,
     .def = "30s",
     .min = 0,
     .max = 3600000,
     .desc = "How long an idempotent statement keeps retrying through reconnects; 0: no retry."},
    {.name = NULL},
};

void
kf_pg_opts_from_conf(const kf_conf_t *conf, kf_pg_opts_t *opts)
{
    KF_ASSERT(conf && opts);
    memset(opts, 0, sizeof(*opts));
    opts->dsn = kf_conf_get_str(conf, "pg.dsn");
    opts->statement_timeout_ms = kf_conf_get_duration_ms(conf, "pg.statement.timeout");
    opts->connect_timeout_ms = kf_conf_get_duration_ms(conf, "pg.connect.timeout");
    opts->backoff_initial_ms = kf_conf_get_duration_ms(conf, "pg.reconnect.backoff.initial");
    opts->backoff_max_ms = kf_conf_get_duration_ms(conf, "pg.reconnect.backoff.max");
    int64_t deadline = kf_conf_get_duration_ms(conf, "pg.retry.deadline");
    opts->retry_deadline_ms = deadline > 0 ? deadline : -1;
}

static int64_t
kf_pg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
kf_pg_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Copies libpq's message onto one line: its multi-line texts ("server closed the connection
 * unexpectedly\n\tThis probably means...") would otherwise break log lines and errstr users. */
static void
kf_pg_msg(const char *msg, char *out, size_t size)
{
    size_t n = 0;
    int space = 0;
    for (const char *p = msg ? msg : ""; *p && n + 1 < size; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r' || *p == ' ') {
            space = 1;
            continue;
        }
        if (space && n > 0 && n + 2 < size)
            out[n++] = ' ';
        space = 0;
        out[n++] = *p;
    }
    out[n] = '\0';
}

/* Server notices ("drop cascades to table ...") go to the debug log instead of stderr. */
static void
kf_pg_notice(void *opaque, const char *message)
{
    (void)opaque;
    char msg[512];
    kf_pg_msg(message, msg, sizeof(msg));
    kf_log(KF_LOG_DEBUG, "pg", "server notice: %s", msg);
}

static void
kf_pg_disconnect(kf_pg_t *pg)
{
    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
}

/* Schedules the next connection attempt: exponential with "equal jitter" (half fixed, half
 * random), so a fleet of workers does not reconnect in lock step after a server restart. */
static void
kf_pg_backoff(kf_pg_t *pg)
{
    int64_t delay = pg->backoff_initial_ms;
    for (int i = 1; i < pg->attempts && delay < pg->backoff_max_ms; i++)
        delay *= 2;
    if (delay > pg->backoff_max_ms)
        delay = pg->backoff_max_ms;
    int64_t half = delay / 2;
    int64_t jitter = half > 0 ? (int64_t)(rand_r(&pg->rand_state) % (unsigned)(half + 1)) : 0;
    pg->next_attempt_ms = kf_pg_now_ms() + (delay - half) + jitter;
}

/* Messages of connection failures that no retry will fix. libpq gives no SQLSTATE for them. */
static int
kf_pg_connect_is_fatal(const char *msg)
{
    static const char *const fatal[] = {"password authentication failed",
                                        "no pg_hba.conf entry",
                                        "does not exist",
                                        "invalid connection option",
                                        "missing \"=\"",
                                        "invalid URI",
                                        "SSL is not enabled"};
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
        if (strstr(msg, fatal[i]))
            return 1;
    return 0;
}

/* One connection attempt, then `SET statement_timeout`. */
static kf_err_t
kf_pg_connect(kf_pg_t *pg, char *errstr, size_t errstr_size)
{
    kf_pg_disconnect(pg);
    char timeout[32];
    int64_t secs = (pg->connect_timeout_ms + 999) / 1000;
    snprintf(timeout, sizeof(timeout), "%lld", (long long)(secs < 2 ? 2 : secs));
    /* expand_dbname=1: the DSN (conninfo or URI) is expanded first; later keywords override. */
    const char *const keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *const vals[] = {pg->dsn, timeout, pg->application_name, NULL};
    pg->conn = PQconnectdbParams(keys, vals, 1);
    char msg[512];
    if (!pg->conn)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "postgres: out of memory");
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        kf_pg_msg(PQerrorMessage(pg->conn), msg, sizeof(msg));
        kf_pg_disconnect(pg);
        pg->attempts++;
        kf_pg_backoff(pg);
        kf_err_t err = kf_pg_connect_is_fatal(msg) ? KF_ERR_DB : KF_ERR_UNAVAILABLE;
        return kf_err_set(errstr, errstr_size, err, "postgres: connect failed: %s", msg);
    }
    if (pg->statement_timeout_ms > 0) {
        char sql[64];
        snprintf(sql, sizeof(sql), "SET statement_timeout = %lld",
                 (long long)pg->statement_timeout_ms);
        PGresult *res = PQexec(pg->conn, sql);
        int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
        kf_pg_msg(ok ? "" : PQerrorMessage(pg->conn), msg, sizeof(msg));
        PQclear(res);
        if (!ok) {
            kf_pg_disconnect(pg);
            pg->attempts++;
            kf_pg_backoff(pg);
            return kf_err_set(errstr, errstr_size, KF_ERR_UNAVAILABLE,
                              "postgres: SET statement_timeout failed: %s", msg);
        }
    }
    PQsetNoticeProcessor(pg->conn, kf_pg_notice, NULL);
    pg->attempts = 0;
    pg->next_attempt_ms = 0;
    pg->gen++;
    pg->connects++;
    if (pg->connects > 1)
        kf_log(KF_LOG_INFO, "pg", "reconnected to postgres (connection %llu)",
               (unsigned long long)pg->connects);
    return KF_OK;
}

/* Makes sure a live connection exists. With deadline_ms > 0 it waits out backoff delays and
 * retries until the deadline; with 0 it makes at most one attempt, and none while a backoff
 * delay is pending. */
static kf_err_t
kf_pg_ensure(kf_pg_t *pg, int64_t deadline_ms, char *errstr, size_t errstr_size)
{
    if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
        return KF_OK;
    kf_pg_disconnect(pg);
    for (;;) {
        int64_t now = kf_pg_now_ms();
        if (now < pg->next_attempt_ms) {
            if (deadline_ms == 0 || pg->next_attempt_ms > deadline_ms)
                return kf_err_set(errstr, errstr_size, KF_ERR_UNAVAILABLE,
                                  "postgres: not connected; next reconnect attempt in %lld ms",
                                  (long long)(pg->next_attempt_ms - now));
            kf_pg_sleep_ms(pg->next_attempt_ms - now);
        }
        kf_err_t err = kf_pg_connect(pg, errstr, errstr_size);
        if (err != KF_ERR_UNAVAILABLE || deadline_ms == 0 || kf_pg_now_ms() >= deadline_ms)
            return err;
        kf_log(KF_LOG_WARN, "pg", "reconnect attempt %d failed, retrying", pg->attempts);
    }
}

/* Outcome of one statement: err plus whether the connection is gone (worth a reconnect). */
static kf_err_t
kf_pg_classify(
    kf_pg_t *pg, PGresult *res, const char *what, int *out_lost, char *errstr, size_t errstr_size)
{
    *out_lost = 0;
    pg->sqlstate[0] = '\0';
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return KF_OK;
    char msg[512];
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    kf_pg_msg(res ? PQresultErrorMessage(res) : PQerrorMessage(pg->conn), msg, sizeof(msg));
    if (!msg[0])
        kf_pg_msg(PQerrorMessage(pg->conn), msg, sizeof(msg));
    if (state)
        snprintf(pg->sqlstate, sizeof(pg->sqlstate), "%s", state);
    int bad = PQstatus(pg->conn) != CONNECTION_OK;
    kf_err_t err;
    if (bad || (state && (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
                          strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0))) {
        /* The session is gone (socket closed, server shutting down): reconnect next time. */
        *out_lost = 1;
        err = KF_ERR_UNAVAILABLE;
    } else if (!state) {
        /* libpq refused the call itself (client-side error) on a healthy connection. */
        err = KF_ERR_DB;
    } else if (strcmp(state, "53300") == 0 || strcmp(state, "40001") == 0 ||
               strcmp(state, "40P01") == 0) {
        err = KF_ERR_UNAVAILABLE;
    } else if (strcmp(state, "57014") == 0) {
        err = KF_ERR_TIMEOUT;
    } else {
        err = KF_ERR_DB;
    }
    if (*out_lost)
        kf_pg_disconnect(pg);
    if (state) {
        /* Primary message and detail read better than the full "ERROR:  ..." report. */
        char primary[512], detail[256];
        kf_pg_msg(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY), primary, sizeof(primary));
        kf_pg_msg(PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL), detail, sizeof(detail));
        return kf_err_set(errstr, errstr_size, err, "postgres: %s: %s (SQLSTATE %s%s%s)", what,
                          primary[0] ? primary : msg, state, detail[0] ? "; " : "", detail);
    }
    return kf_err_set(errstr, errstr_size, err, "postgres: %s: %s", what, msg);
}

kf_err_t
kf_pg_new(const kf_pg_opts_t *opts, kf_pg_t **out_pg, char *errstr, size_t errstr_size)
{
    if (!opts || !out_pg || !opts->dsn || !*opts->dsn)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "postgres: a connection string (pg.dsn) is required");
    *out_pg = NULL;
    kf_pg_t *pg = calloc(1, sizeof(*pg));
    if (!pg)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "postgres: out of memory");
    pg->dsn = strdup(opts->dsn);
    pg->application_name = strdup(opts->application_name ? opts->application_name : "kinfer");
    if (!pg->dsn || !pg->application_name) {
        kf_pg_destroy(pg);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "postgres: out of memory");
    }
    pg->statement_timeout_ms = opts->statement_timeout_ms > 0 ? opts->statement_timeout_ms : 0;
    pg->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;
    pg->backoff_initial_ms = opts->backoff_initial_ms > 0 ? opts->backoff_initial_ms : 100;
    pg->backoff_max_ms = opts->backoff_max_ms > 0 ? opts->backoff_max_ms : 10000;
    if (pg->backoff_max_ms < pg->backoff_initial_ms)
        pg->backoff_max_ms = pg->backoff_initial_ms;
    pg->retry_deadline_ms = opts->retry_deadline_ms == 0 ? 30000 : opts->retry_deadline_ms;
    pg->rand_state = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)pg;
    kf_err_t err = kf_pg_connect(pg, errstr, errstr_size);
    if (err) {
        kf_pg_destroy(pg);
        return err;
    }
    *out_pg = pg;
    return KF_OK;
}

void
kf_pg_destroy(kf_pg_t *pg)
{
    if (!pg)
        return;
    kf_pg_disconnect(pg);
    for (size_t i = 0; i < pg->nstmts; i++) {
        free(pg->stmts[i].name);
        free(pg->stmts[i].sql);
    }
    free(pg->stmts);
    if (pg->dsn) {
        /* The DSN may carry a password: wipe it before freeing. */
        volatile char *p = pg->dsn;
        while (*p)
            *p++ = 0;
    }
    free(pg->dsn);
    free(pg->application_name);
    free(pg);
}

static kf_pg_stmt_t *
kf_pg_find(kf_pg_t *pg, const char *name)
{
    for (size_t i = 0; i < pg->nstmts; i++)
        if (strcmp(pg->stmts[i].name, name) == 0)
            return &pg->stmts[i];
    return NULL;
}

kf_err_t
kf_pg_register(kf_pg_t *pg,
               const char *name,
               const char *sql,
               int nparams,
               int flags,
               char *errstr,
               size_t errstr_size)
{
    if (!pg || !name || !*name || !sql || nparams < 0 || nparams > 65535)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "postgres: register needs a name, SQL and 0..65535 parameters");
    kf_pg_stmt_t *st = kf_pg_find(pg, name);
    if (st) {
        if (strcmp(st->sql, sql) == 0 && st->nparams == nparams && st->flags == flags)
            return KF_OK;
        return kf_err_set(errstr, errstr_size, KF_ERR_EXISTS,
                          "postgres: statement '%s' is already registered with other SQL", name);
    }
    if (pg->nstmts == pg->cap_stmts) {
        size_t ncap = pg->cap_stmts ? pg->cap_stmts * 2 : 8;
        kf_pg_stmt_t *n = realloc(pg->stmts, ncap * sizeof(*n));
        if (!n)
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "postgres: out of memory");
        pg->stmts = n;
        pg->cap_stmts = ncap;
    }
    st = &pg->stmts[pg->nstmts];
    st->name = strdup(name);
    st->sql = strdup(sql);
    if (!st->name || !st->sql) {
        free(st->name);
        free(st->sql);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "postgres: out of memory");
    }
    st->nparams = nparams;
    st->flags = flags;
    st->prepared_gen = 0;
    pg->nstmts++;
    return KF_OK;
}

/* One attempt on the current connection: prepare when needed, then execute. */
static kf_err_t
kf_pg_attempt(kf_pg_t *pg,
              kf_pg_stmt_t *st,
              const char *sql,
              const char *const *params,
              PGresult **out_res,
              int *out_lost,
              char *errstr,
              size_t errstr_size)
{
    char what[300];
    kf_err_t err;
    *out_res = NULL;
    if (st && st->prepared_gen != pg->gen) {
        PGresult *pres = PQprepare(pg->conn, st->name, st->sql, st->nparams, NULL);
        snprintf(what, sizeof(what), "prepare '%s'", st->name);
        err = kf_pg_classify(pg, pres, what, out_lost, errstr, errstr_size);
        /* 42P05: already prepared on this session (e.g. by an earlier attempt). */
        if (err && strcmp(pg->sqlstate, "42P05") == 0)
            err = KF_OK;
        PQclear(pres);
        if (err)
            return err;
        st->prepared_gen = pg->gen;
    }
    PGresult *res;
    if (st) {
        res = PQexecPrepared(pg->conn, st->name, st->nparams, (const char *const *)params, NULL,
                             NULL, 0);
        snprintf(what, sizeof(what), "execute '%s'", st->name);
    } else {
        res = PQexec(pg->conn, sql);
        snprintf(what, sizeof(what), "exec");
    }
    err = kf_pg_classify(pg, res, what, out_lost, errstr, errstr_size);
    if (err) {
        /* 26000: the server forgot the statement (DISCARD ALL, a pooler): prepare again. */
        if (st && strcmp(pg->sqlstate, "26000") == 0)
            st->prepared_gen = 0;
        PQclear(res);
        return err;
    }
    *out_res = res;
    return KF_OK;
}

/* The retry loop shared by kf_pg_exec_prepared and kf_pg_exec. */
static kf_err_t
kf_pg_run(kf_pg_t *pg,
          kf_pg_stmt_t *st,
          const char *sql,
          const char *const *params,
          int flags,
          kf_pg_result_t **out_res,
          char *errstr,
          size_t errstr_size)
{
    int retry = (flags & KF_PG_IDEMPOTENT) && pg->retry_deadline_ms > 0;
    int64_t deadline = retry ? kf_pg_now_ms() + pg->retry_deadline_ms : 0;
    int reprepared = 0;
    for (;;) {
        kf_err_t err = kf_pg_ensure(pg, deadline, errstr, errstr_size);
        if (err)
            return err;
        PGresult *res = NULL;
        int lost = 0;
        err = kf_pg_attempt(pg, st, sql, params, &res, &lost, errstr, errstr_size);
        if (!err) {
            pg->sqlstate[0] = '\0';
            if (out_res) {
                kf_pg_result_t *r = malloc(sizeof(*r));
                if (!r) {
                    PQclear(res);
                    return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "postgres: OOM");
                }
                r->res = res;
                *out_res = r;
            } else {
                PQclear(res);
            }
            return KF_OK;
        }
        /* A forgotten prepared statement is always safe to re-run once: it never executed. */
        if (st && !reprepared && strcmp(pg->sqlstate, "26000") == 0) {
            reprepared = 1;
            continue;
        }
        if (!lost || !retry || kf_pg_now_ms() >= deadline)
            return err;
        kf_log(KF_LOG_WARN, "pg", "connection lost, retrying idempotent statement: %s", errstr);
    }
}

kf_err_t
kf_pg_exec_prepared(kf_pg_t *pg,
                    const char *name,
                    const char *const *params,
                    int nparams,
                    kf_pg_result_t **out_res,
                    char *errstr,
                    size_t errstr_size)
{
    if (out_res)
        *out_res = NULL;
    if (!pg || !name || (nparams > 0 && !params))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "postgres: exec_prepared: bad argument");
    kf_pg_stmt_t *st = kf_pg_find(pg, name);
    if (!st)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                          "postgres: statement '%s' is not registered", name);
    if (st->nparams != nparams)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "postgres: statement '%s' takes %d parameters, got %d", name, st->nparams,
                          nparams);
    return kf_pg_run(pg, st, NULL, params, st->flags, out_res, errstr, errstr_size);
}

kf_err_t
kf_pg_exec(kf_pg_t *pg,
           const char *sql,
           int flags,
           kf_pg_result_t **out_res,
           char *errstr,
           size_t errstr_size)
{
    if (out_res)
        *out_res = NULL;
    if (!pg || !sql)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "postgres: exec: bad argument");
    return kf_pg_run(pg, NULL, sql, NULL, flags, out_res, errstr, errstr_size);
}

const char *
kf_pg_sqlstate(const kf_pg_t *pg)
{
    KF_ASSERT(pg);
    return pg->sqlstate;
}

uint64_t
kf_pg_connects(const kf_pg_t *pg)
{
    KF_ASSERT(pg);
    return pg->connects;
}

int
kf_pg_result_ntuples(const kf_pg_result_t *res)
{
    KF_ASSERT(res);
    return PQntuples(res->res);
}

int
kf_pg_result_nfields(const kf_pg_result_t *res)
{
    KF_ASSERT(res);
    return PQnfields(res->res);
}

const char *
kf_pg_result_fname(const kf_pg_result_t *res, int col)
{
    KF_ASSERT(res && col >= 0 && col < PQnfields(res->res));
    return PQfname(res->res, col);
}

const char *
kf_pg_result_value(const kf_pg_result_t *res, int row, int col)
{
    KF_ASSERT(res && row >= 0 && row < PQntuples(res->res));
    KF_ASSERT(col >= 0 && col < PQnfields(res->res));
    if (PQgetisnull(res->res, row, col))
        return NULL;
    return PQgetvalue(res->res, row, col);
}

int64_t
kf_pg_result_affected(const kf_pg_result_t *res)
{
    KF_ASSERT(res);
    const char *n = PQcmdTuples(res->res);
    return n && *n ? strtoll(n, NULL, 10) : 0;
}

void
kf_pg_result_destroy(kf_pg_result_t *res)
{
    if (!res)
        return;
    PQclear(res->res);
    free(res);
}
