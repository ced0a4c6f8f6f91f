/*
 * Integration test of kf_pg against the real PostgreSQL of the local stack: prepared
 * statements, error translation (constraint, syntax, statement timeout), a terminated backend
 * (57P01 on a non-idempotent call, then reconnect), and a full server restart in the middle of
 * a stream of idempotent queries that must all return exact values through reconnect and
 * re-prepare. Works in a schema of its own, dropped at the end.
 *
 * Needs KINFER_PG_DSN (exit 77 otherwise) and the stack script to restart the server:
 * KINFER_STACK_SCRIPT, or the source tree's deploy/local/stack.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kf_pg.h"

static int failures;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
            failures++;                                                     \
        }                                                                   \
    } while (0)

static char schema[64];
static char errstr[512];

/* Runs SQL with every "@" replaced by the test's schema name. */
static kf_err_t
exec_schema(kf_pg_t *pg, const char *tmpl)
{
    char sql[1024];
    size_t n = 0;
    for (const char *p = tmpl; *p && n + sizeof(schema) + 1 < sizeof(sql); p++) {
        if (*p == '@') {
            memcpy(sql + n, schema, strlen(schema));
            n += strlen(schema);
        } else {
            sql[n++] = *p;
        }
    }
    sql[n] = '\0';
    return kf_pg_exec(pg, sql, 0, NULL, errstr, sizeof(errstr));
}

/* SELECT name for an id through the idempotent prepared statement; returns a strdup or NULL. */
static char *
name_of(kf_pg_t *pg, const char *id, kf_err_t *out_err)
{
    kf_pg_result_t *res = NULL;
    *out_err =
        kf_pg_exec_prepared(pg, "get_name", (const char *[]){id}, 1, &res, errstr, sizeof(errstr));
    if (*out_err)
        return NULL;
    char *v = NULL;
    if (kf_pg_result_ntuples(res) == 1 && kf_pg_result_value(res, 0, 0))
        v = strdup(kf_pg_result_value(res, 0, 0));
    kf_pg_result_destroy(res);
    return v;
}

int
main(void)
{
    const char *dsn = getenv("KINFER_PG_DSN");
    if (!dsn || !*dsn) {
        printf("SKIP: KINFER_PG_DSN is not set (eval \"$(deploy/local/stack env)\")\n");
        return 77;
    }
    const char *script = getenv("KINFER_STACK_SCRIPT");
#ifdef KF_STACK_SCRIPT_DEFAULT
    if (!script)
        script = KF_STACK_SCRIPT_DEFAULT;
#endif
    if (!script || access(script, X_OK) != 0) {
        printf("SKIP: no executable stack script to restart postgres (KINFER_STACK_SCRIPT)\n");
        return 77;
    }
    snprintf(schema, sizeof(schema), "kf_it_pg_%d_%ld", (int)getpid(), (long)time(NULL));

    kf_pg_opts_t opts = {.dsn = dsn,
                         .statement_timeout_ms = 10000,
                         .backoff_initial_ms = 50,
                         .backoff_max_ms = 1000,
                         .retry_deadline_ms = 90000};
    kf_pg_t *pg = NULL;
    kf_err_t err = kf_pg_new(&opts, &pg, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "FAIL: connect: %s\n", errstr);
        return 1;
    }
    CHECK(kf_pg_connects(pg) == 1, "connects=%llu", (unsigned long long)kf_pg_connects(pg));

    err = exec_schema(pg, "CREATE SCHEMA @; CREATE TABLE @.items (id int PRIMARY KEY, "
                          "name text NOT NULL, score double precision)");
    CHECK(err == KF_OK, "create: %s", errstr);

    char sql[512];
    snprintf(sql, sizeof(sql), "INSERT INTO %s.items (id, name, score) VALUES ($1, $2, $3)",
             schema);
    CHECK(kf_pg_register(pg, "put", sql, 3, 0, errstr, sizeof(errstr)) == KF_OK, "%s", errstr);
    snprintf(sql, sizeof(sql), "SELECT name FROM %s.items WHERE id = $1", schema);
    CHECK(kf_pg_register(pg, "get_name", sql, 1, KF_PG_IDEMPOTENT, errstr, sizeof(errstr)) == KF_OK,
          "%s", errstr);
    snprintf(sql, sizeof(sql), "SELECT count(*), sum(score) FROM %s.items", schema);
    CHECK(kf_pg_register(pg, "stats", sql, 0, KF_PG_IDEMPOTENT, errstr, sizeof(errstr)) == KF_OK,
          "%s", errstr);
    CHECK(kf_pg_register(pg, "put", "SELECT 1", 0, 0, errstr, sizeof(errstr)) == KF_ERR_EXISTS,
          "re-register with other SQL must fail");

    /* Rows, including a SQL NULL parameter. */
    static const char *const rows[][3] = {
        {"1", "one", "1.5"}, {"2", "two", "2.25"}, {"3", "three", NULL}};
    for (int i = 0; i < 3; i++) {
        kf_pg_result_t *res = NULL;
        err = kf_pg_exec_prepared(pg, "put", rows[i], 3, &res, errstr, sizeof(errstr));
        CHECK(err == KF_OK, "insert %d: %s", i, errstr);
        if (res)
            CHECK(kf_pg_result_affected(res) == 1, "affected=%lld",
                  (long long)kf_pg_result_affected(res));
        kf_pg_result_destroy(res);
    }
    char *name = name_of(pg, "2", &err);
    CHECK(err == KF_OK && name && strcmp(name, "two") == 0, "got %s (%s)", name, errstr);
    free(name);
    kf_pg_result_t *res = NULL;
    err = kf_pg_exec_prepared(pg, "stats", NULL, 0, &res, errstr, sizeof(errstr));
    CHECK(err == KF_OK, "%s", errstr);
    if (res) {
        CHECK(strcmp(kf_pg_result_value(res, 0, 0), "3") == 0, "count=%s",
              kf_pg_result_value(res, 0, 0));
        CHECK(strcmp(kf_pg_result_value(res, 0, 1), "3.75") == 0, "sum=%s",
              kf_pg_result_value(res, 0, 1));
        CHECK(strcmp(kf_pg_result_fname(res, 0), "count") == 0, "fname");
    }
    kf_pg_result_destroy(res);

    /* Error translation: constraint and syntax are final, with SQLSTATE and server text. */
    err = kf_pg_exec_prepared(pg, "put", (const char *[]){"1", "dup", "0"}, 3, NULL, errstr,
                              sizeof(errstr));
    CHECK(err == KF_ERR_DB, "dup err=%d", err);
    CHECK(strcmp(kf_pg_sqlstate(pg), "23505") == 0, "sqlstate=%s", kf_pg_sqlstate(pg));
    CHECK(strcmp(errstr, "postgres: execute 'put': duplicate key value violates unique "
                         "constraint \"items_pkey\" (SQLSTATE 23505; Key (id)=(1) already "
                         "exists.)") == 0,
          "%s", errstr);
    err = kf_pg_exec(pg, "SELEC 1", KF_PG_IDEMPOTENT, NULL, errstr, sizeof(errstr));
    CHECK(err == KF_ERR_DB && strcmp(kf_pg_sqlstate(pg), "42601") == 0 &&
              strcmp(errstr,
                     "postgres: exec: syntax error at or near \"SELEC\" (SQLSTATE 42601)") == 0,
          "syntax: %d %s", err, errstr);
    CHECK(kf_pg_exec_prepared(pg, "nope", NULL, 0, NULL, errstr, sizeof(errstr)) ==
              KF_ERR_NOT_FOUND,
          "unregistered");
    CHECK(kf_pg_exec_prepared(pg, "get_name", NULL, 0, NULL, errstr, sizeof(errstr)) ==
              KF_ERR_INVALID_ARG,
          "param count");

    /* statement_timeout from the options is applied on connect. */
    {
        kf_pg_opts_t o2 = opts;
        o2.statement_timeout_ms = 200;
        kf_pg_t *pg2 = NULL;
        err = kf_pg_new(&o2, &pg2, errstr, sizeof(errstr));
        CHECK(err == KF_OK, "%s", errstr);
        if (pg2) {
            err = kf_pg_exec(pg2, "SELECT pg_sleep(5)", 0, NULL, errstr, sizeof(errstr));
            CHECK(err == KF_ERR_TIMEOUT && strcmp(kf_pg_sqlstate(pg2), "57014") == 0,
                  "timeout: %d %s", err, errstr);
            /* Terminate pg's backend from pg2: 57P01 on pg's next non-idempotent call. */
            kf_pg_result_t *pid = NULL;
            err = kf_pg_exec(pg, "SELECT pg_backend_pid()", 0, &pid, errstr, sizeof(errstr));
            CHECK(err == KF_OK, "%s", errstr);
            if (pid) {
                char kill[128];
                snprintf(kill, sizeof(kill), "SELECT pg_terminate_backend(%s)",
                         kf_pg_result_value(pid, 0, 0));
                kf_pg_result_destroy(pid);
                err = kf_pg_exec(pg2, kill, 0, NULL, errstr, sizeof(errstr));
                CHECK(err == KF_OK, "%s", errstr);
                err = kf_pg_exec_prepared(pg, "put", (const char *[]){"4", "four", "4"}, 3, NULL,
                                          errstr, sizeof(errstr));
                CHECK(err == KF_ERR_UNAVAILABLE, "after terminate: %d %s", err, errstr);
                printf("non-idempotent call on a terminated backend: %s\n", errstr);
                /* The next call reconnects and re-prepares "put" on the new session. */
                err = kf_pg_exec_prepared(pg, "put", (const char *[]){"4", "four", "4"}, 3, NULL,
                                          errstr, sizeof(errstr));
                CHECK(err == KF_OK, "after reconnect: %s", errstr);
                CHECK(kf_pg_connects(pg) == 2, "connects=%llu",
                      (unsigned long long)kf_pg_connects(pg));
            }
            kf_pg_destroy(pg2);
        }
    }

    /* Server restart in the middle of a stream of idempotent queries. */
    uint64_t before = kf_pg_connects(pg);
    pid_t child = fork();
    if (child == 0) {
        execl(script, script, "restart", "postgres", (char *)NULL);
        _exit(127);
    }
    CHECK(child > 0, "fork: %s", strerror(errno));
    int queries = 0, status = 0;
    for (;;) {
        pid_t done = waitpid(child, &status, WNOHANG);
        name = name_of(pg, "4", &err);
        CHECK(err == KF_OK && name && strcmp(name, "four") == 0, "query %d during restart: %s",
              queries,
              err    ? errstr
              : name ? name
                     : "(null)");
        free(name);
        queries++;
        if (done == child)
            break;
        usleep(20000);
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "stack restart postgres failed (%d)",
          status);
    /* After the restart: prepared statements work again, with exact values. */
    res = NULL;
    err = kf_pg_exec_prepared(pg, "stats", NULL, 0, &res, errstr, sizeof(errstr));
    CHECK(err == KF_OK, "stats after restart: %s", errstr);
    if (res) {
        CHECK(strcmp(kf_pg_result_value(res, 0, 0), "4") == 0, "count=%s",
              kf_pg_result_value(res, 0, 0));
        CHECK(strcmp(kf_pg_result_value(res, 0, 1), "7.75") == 0, "sum=%s",
              kf_pg_result_value(res, 0, 1));
    }
    kf_pg_result_destroy(res);
    name = name_of(pg, "3", &err);
    CHECK(err == KF_OK && name && strcmp(name, "three") == 0, "%s", errstr);
    free(name);
    CHECK(kf_pg_connects(pg) > before, "no reconnect happened across the restart (%llu)",
          (unsigned long long)kf_pg_connects(pg));
    printf("restart: %d queries ran during the restart, %llu reconnects in total\n", queries,
           (unsigned long long)(kf_pg_connects(pg) - 1));

    err = exec_schema(pg, "DROP SCHEMA @ CASCADE");
    CHECK(err == KF_OK, "drop: %s", errstr);
    kf_pg_destroy(pg);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
