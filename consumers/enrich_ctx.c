/*
 * enrich_ctx.c: what the enricher does with one request: validate it, load its context from
 * PostgreSQL (prepared statements, tenant-scoped), join the latest market ticks, render the
 * prompt and build the InferenceJob (or a failed InferenceResult naming what is missing).
 * The Kafka side (transactions, audit, DLQ) is in enrich.c; docs/enrich.md states the
 * rendering rules this file implements.
 */
#include "enrich_int.h"

#include "kf_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- statements ------------------------------------------------------------------------ */

static const struct {
    const char *name, *sql;
    int nparams;
} kf_enrich_stmts[] = {
    {"enrich_tenant", "SELECT name FROM tenants WHERE tenant_id = $1", 1},
    {"enrich_customer",
     "SELECT name, risk_profile FROM customers WHERE customer_id = $1 AND tenant_id = $2", 2},
    {"enrich_portfolio",
     "SELECT name, base_currency, customer_id FROM portfolios "
     "WHERE portfolio_id = $1 AND tenant_id = $2",
     2},
    {"enrich_positions",
     "SELECT p.symbol, i.name, i.asset_class, i.currency, p.quantity, p.cost_basis "
     "FROM positions p JOIN instruments i ON i.symbol = p.symbol "
     "WHERE p.portfolio_id = $1 ORDER BY p.symbol",
     1},
    {"enrich_limits",
     "SELECT metric, threshold FROM risk_limits WHERE portfolio_id = $1 ORDER BY metric", 1},
    {"enrich_instruments", "SELECT symbol FROM instruments WHERE symbol = ANY($1::text[])", 1},
    {"enrich_template",
     "SELECT version, template FROM prompt_templates "
     "WHERE task = $1 AND name = $2 AND active ORDER BY version DESC LIMIT 1",
     2},
    {"enrich_mark",
     "UPDATE requests SET status = 'enriched', updated_at = now() "
     "WHERE request_id = $1 AND tenant_id = $2 AND status = 'accepted'",
     2},
};

kf_err_t
kf_enrich_ctx_prepare(kf_enrich_t *e, char *errstr, size_t errstr_size)
{
    /* Every statement only reads, or moves accepted -> enriched: all safe to re-run after a
     * lost connection, so kf_pg retries them itself up to pg.retry.deadline. */
    for (size_t i = 0; i < sizeof(kf_enrich_stmts) / sizeof(kf_enrich_stmts[0]); i++) {
        kf_err_t err =
            kf_pg_register(e->pg, kf_enrich_stmts[i].name, kf_enrich_stmts[i].sql,
                           kf_enrich_stmts[i].nparams, KF_PG_IDEMPOTENT, errstr, errstr_size);
        if (err)
            return err;
    }
    return KF_OK;
}

kf_err_t
kf_enrich_mark(
    kf_enrich_t *e, const char *request_id, const char *tenant_id, char *errstr, size_t errstr_size)
{
    kf_pg_result_t *res = NULL;
    kf_err_t err =
        kf_pg_exec_prepared(e->pg, "enrich_mark", (const char *[]){request_id, tenant_id}, 2, &res,
                            errstr, errstr_size);
    if (!err && kf_pg_result_affected(res) == 0)
        kf_log(KF_LOG_DEBUG, "enrich",
               "request %s: status not moved to enriched (no row, or already past accepted)",
               request_id);
    kf_pg_result_destroy(res);
    return err;
}

/* ---- helpers --------------------------------------------------------------------------- */

/* Growable text (a malloc'd NUL-terminated string). */
typedef struct kf_text {
    char *s;
    size_t len;
    int oom;
} kf_text_t;

static void kf_text_add(kf_text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
kf_text_add(kf_text_t *t, const char *fmt, ...)
{
    if (t->oom)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *grown = n < 0 ? NULL : realloc(t->s, t->len + (size_t)n + 1);
    if (!grown) {
        t->oom = 1;
        return;
    }
    t->s = grown;
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

static const char *
kf_text_str(const kf_text_t *t)
{
    return t->s ? t->s : "";
}

/* Same character rules as the feed (producers/kf_feed.h): what the market topic can hold. */
static int
kf_enrich_symbol_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KF_MARKET_SYMBOL_MAX)
        return 0;
    if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= '0' && s[0] <= '9') || s[0] == '^'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              strchr(".-_/:^=", s[i])))
            return 0;
    return 1;
}

static const char *
kf_json_str_or(const json_t *obj, const char *key, const char *def)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : def;
}

/* Runs a statement; a result with zero rows is left for the caller to judge. */
static kf_err_t
kf_enrich_query(kf_enrich_t *e,
                const char *stmt,
                const char *const *params,
                int n,
                kf_pg_result_t **out,
                char *errstr,
                size_t errstr_size)
{
    return kf_pg_exec_prepared(e->pg, stmt, params, n, out, errstr, errstr_size);
}

/* ---- context --------------------------------------------------------------------------- */

typedef struct kf_enrich_ctx {
    const char *tenant_id;
    char *tenant_name;
    char *customer_id, *customer_name, *customer_risk;
    char *portfolio_id, *portfolio_name, *portfolio_ccy;
    kf_text_t positions, limits, market, symbols_csv;
    char **symbols; /* involved symbols, in prompt order */
    size_t nsymbols;
    json_t *lineage;
} kf_enrich_ctx_t;

static void
kf_enrich_ctx_free(kf_enrich_ctx_t *c)
{
    free(c->tenant_name);
    free(c->customer_id);
    free(c->customer_name);
    free(c->customer_risk);
    free(c->portfolio_id);
    free(c->portfolio_name);
    free(c->portfolio_ccy);
    free(c->positions.s);
    free(c->limits.s);
    free(c->market.s);
    free(c->symbols_csv.s);
    for (size_t i = 0; i < c->nsymbols; i++)
        free(c->symbols[i]);
    free(c->symbols);
    json_decref(c->lineage);
}

static char *
kf_dup(const char *s)
{
    return strdup(s ? s : "");
}

static kf_err_t
kf_enrich_add_symbol(kf_enrich_ctx_t *c, const char *sym)
{
    for (size_t i = 0; i < c->nsymbols; i++)
        if (!strcmp(c->symbols[i], sym))
            return KF_OK;
    char **grown = realloc(c->symbols, (c->nsymbols + 1) * sizeof(*grown));
    if (!grown)
        return KF_ERR_NOMEM;
    c->symbols = grown;
    if (!(c->symbols[c->nsymbols] = strdup(sym)))
        return KF_ERR_NOMEM;
    c->nsymbols++;
    return KF_OK;
}

static kf_err_t
kf_enrich_load_customer(
    kf_enrich_t *e, kf_enrich_ctx_t *c, const char *customer_id, char *errstr, size_t errstr_size)
{
    kf_pg_result_t *res = NULL;
    kf_err_t err =
        kf_enrich_query(e, "enrich_customer", (const char *[]){customer_id, c->tenant_id}, 2, &res,
                        errstr, errstr_size);
    if (err)
        return err;
    if (kf_pg_result_ntuples(res) == 0) {
        /* Another tenant's customer reads as unknown: existence is not leaked across tenants. */
        err =
            kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "unknown customer '%s'", customer_id);
    } else {
        c->customer_id = kf_dup(customer_id);
        c->customer_name = kf_dup(kf_pg_result_value(res, 0, 0));
        c->customer_risk = kf_dup(kf_pg_result_value(res, 0, 1));
    }
    kf_pg_result_destroy(res);
    return err;
}

static kf_err_t
kf_enrich_load_portfolio(kf_enrich_t *e,
                         kf_enrich_ctx_t *c,
                         const char *portfolio_id,
                         const char *customer_id,
                         char *errstr,
                         size_t errstr_size)
{
    kf_pg_result_t *res = NULL;
    kf_err_t err =
        kf_enrich_query(e, "enrich_portfolio", (const char *[]){portfolio_id, c->tenant_id}, 2,
                        &res, errstr, errstr_size);
    if (err)
        return err;
    if (kf_pg_result_ntuples(res) == 0) {
        kf_pg_result_destroy(res);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "unknown portfolio '%s'",
                          portfolio_id);
    }
    c->portfolio_id = kf_dup(portfolio_id);
    c->portfolio_name = kf_dup(kf_pg_result_value(res, 0, 0));
    c->portfolio_ccy = kf_dup(kf_pg_result_value(res, 0, 1));
    char *owner = kf_dup(kf_pg_result_value(res, 0, 2));
    kf_pg_result_destroy(res);
    if (!owner)
        return KF_ERR_NOMEM;
    if (customer_id && strcmp(customer_id, owner)) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "portfolio '%s' does not belong to customer '%s'", portfolio_id,
                         customer_id);
    } else if (!customer_id) {
        err = kf_enrich_load_customer(e, c, owner, errstr, errstr_size);
    }
    free(owner);
    if (err)
        return err;

    /* Positions, in symbol order, with their instruments. */
    if ((err = kf_enrich_query(e, "enrich_positions", (const char *[]){portfolio_id}, 1, &res,
                               errstr, errstr_size)))
        return err;
    char q[40], cb[40];
    for (int r = 0; r < kf_pg_result_ntuples(res); r++) {
        const char *sym = kf_pg_result_value(res, r, 0);
        if (kf_enrich_add_symbol(c, sym)) {
            kf_pg_result_destroy(res);
            return KF_ERR_NOMEM;
        }
        kf_text_add(&c->positions, "%s- %s (%s, %s, %s): quantity %s, cost basis %s", r ? "\n" : "",
                    sym, kf_pg_result_value(res, r, 1), kf_pg_result_value(res, r, 2),
                    kf_pg_result_value(res, r, 3),
                    kf_enrich_fmt_num(strtod(kf_pg_result_value(res, r, 4), NULL), q, sizeof(q)),
                    kf_enrich_fmt_num(strtod(kf_pg_result_value(res, r, 5), NULL), cb, sizeof(cb)));
    }
    kf_pg_result_destroy(res);
    if ((err = kf_enrich_query(e, "enrich_limits", (const char *[]){portfolio_id}, 1, &res, errstr,
                               errstr_size)))
        return err;
    for (int r = 0; r < kf_pg_result_ntuples(res); r++)
        kf_text_add(&c->limits, "%s- %s: %s", r ? "\n" : "", kf_pg_result_value(res, r, 0),
                    kf_enrich_fmt_num(strtod(kf_pg_result_value(res, r, 1), NULL), q, sizeof(q)));
    kf_pg_result_destroy(res);
    return KF_OK;
}

/* Checks the request's symbols exist as instruments and adds them to the involved list. */
static kf_err_t
kf_enrich_check_symbols(
    kf_enrich_t *e, kf_enrich_ctx_t *c, const json_t *symbols, char *errstr, size_t errstr_size)
{
    size_t n = json_array_size(symbols);
    if (n == 0)
        return KF_OK;
    if ((int64_t)n > e->symbols_max)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "%zu symbols given, at most %lld are allowed", n,
                          (long long)e->symbols_max);
    kf_text_t arr = {0};
    kf_text_add(&arr, "{");
    for (size_t i = 0; i < n; i++) {
        const char *sym = json_string_value(json_array_get(symbols, i));
        if (!sym || !kf_enrich_symbol_ok(sym)) {
            free(arr.s);
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "symbols[%zu] is not a valid symbol (A-Z 0-9 . - _ / : ^ =, at "
                              "most %d characters)",
                              i, KF_MARKET_SYMBOL_MAX);
        }
        /* Validated characters need no escaping inside a quoted array element. */
        kf_text_add(&arr, "%s\"%s\"", i ? "," : "", sym);
    }
    kf_text_add(&arr, "}");
    if (arr.oom) {
        free(arr.s);
        return KF_ERR_NOMEM;
    }
    kf_pg_result_t *res = NULL;
    kf_err_t err = kf_enrich_query(e, "enrich_instruments", (const char *[]){arr.s}, 1, &res,
                                   errstr, errstr_size);
    free(arr.s);
    if (err)
        return err;
    kf_text_t missing = {0};
    size_t nmissing = 0;
    for (size_t i = 0; i < n; i++) {
        const char *sym = json_string_value(json_array_get(symbols, i));
        int found = 0;
        for (int r = 0; r < kf_pg_result_ntuples(res) && !found; r++)
            found = !strcmp(kf_pg_result_value(res, r, 0), sym);
        if (!found) {
            kf_text_add(&missing, "%s'%s'", nmissing ? ", " : "", sym);
            nmissing++;
        } else if (kf_enrich_add_symbol(c, sym)) {
            err = KF_ERR_NOMEM;
        }
    }
    kf_pg_result_destroy(res);
    if (nmissing)
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "unknown symbol%s %s",
                         nmissing > 1 ? "s" : "", kf_text_str(&missing));
    free(missing.s);
    return err;
}

/* Market block and lineage for the involved symbols, from the in-memory state. */
static kf_err_t
kf_enrich_join_market(kf_enrich_t *e, kf_enrich_ctx_t *c)
{
    c->lineage = json_array();
    if (!c->lineage)
        return KF_ERR_NOMEM;
    for (size_t i = 0; i < c->nsymbols; i++) {
        kf_market_entry_t m;
        int have = kf_market_state_get(e->ms, c->symbols[i], &m) == KF_OK;
        char *line = NULL;
        if (kf_enrich_market_line(c->symbols[i], have ? &m : NULL, &line))
            return KF_ERR_NOMEM;
        kf_text_add(&c->market, "%s%s", i ? "\n" : "", line);
        kf_text_add(&c->symbols_csv, "%s%s", i ? ", " : "", c->symbols[i]);
        free(line);
        if (have && json_array_append_new(c->lineage,
                                          json_pack("{s:s, s:s, s:i, s:I, s:I}", "symbol", m.symbol,
                                                    "topic", m.topic, "partition", (int)m.partition,
                                                    "offset", (json_int_t)m.offset, "event_time",
                                                    (json_int_t)m.event_time_ms)))
            return KF_ERR_NOMEM;
    }
    return c->market.oom || c->symbols_csv.oom ? KF_ERR_NOMEM : KF_OK;
}

/* ---- rendering --------------------------------------------------------------------------- */

/* Index of the last message with role "user", or -1. */
static long
kf_enrich_last_user(const json_t *messages)
{
    for (size_t i = json_array_size(messages); i > 0; i--)
        if (!strcmp(kf_json_str_or(json_array_get(messages, i - 1), "role", ""), "user"))
            return (long)(i - 1);
    return -1;
}

/* Replaces (or, with append, extends) the content of the last user message of a copy of
 * `messages`; adds a user message when there is none. */
static json_t *
kf_enrich_messages_with(const json_t *messages, const char *text, int append)
{
    json_t *copy = json_deep_copy(messages);
    if (!copy)
        return NULL;
    long u = kf_enrich_last_user(copy);
    if (u < 0) {
        json_array_append_new(copy, json_pack("{s:s, s:s}", "role", "user", "content", text));
        return copy;
    }
    json_t *msg = json_array_get(copy, (size_t)u);
    if (!append) {
        json_object_set_new(msg, "content", json_string(text));
        return copy;
    }
    const char *old = kf_json_str_or(msg, "content", "");
    size_t n = strlen(old) + strlen(text) + 1;
    char *joined = malloc(n);
    if (!joined) {
        json_decref(copy);
        return NULL;
    }
    snprintf(joined, n, "%s%s", old, text);
    json_object_set_new(msg, "content", json_string(joined));
    free(joined);
    return copy;
}

static kf_err_t
kf_enrich_load_template(kf_enrich_t *e,
                        const char *task,
                        char **out_tmpl,
                        int *out_version,
                        char *errstr,
                        size_t errstr_size)
{
    kf_pg_result_t *res = NULL;
    kf_err_t err = kf_enrich_query(e, "enrich_template", (const char *[]){task, e->template_name},
                                   2, &res, errstr, errstr_size);
    if (err)
        return err;
    if (kf_pg_result_ntuples(res) == 0) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                         "no active prompt template '%s' for task %s", e->template_name, task);
    } else {
        *out_version = atoi(kf_pg_result_value(res, 0, 0));
        if (!(*out_tmpl = strdup(kf_pg_result_value(res, 0, 1))))
            err = KF_ERR_NOMEM;
    }
    kf_pg_result_destroy(res);
    return err;
}

/* Today's date in UTC, "YYYY-MM-DD". */
static void
kf_enrich_today(char *buf, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, size, "%Y-%m-%d", &tm);
}

static int
kf_enrich_date_ok(const char *s)
{
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return 0;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return 0;
    return 1;
}

/* Fields copied unchanged from the request into the job. */
static const char *const kf_enrich_copied[] = {
    "request_id", "tenant_id",   "idempotency_key", "model",    "task",         "sampling",
    "risk",       "customer_id", "portfolio_id",    "symbols",  "callback_url", "metadata",
    "priority",   "deadline",    "accepted_at",     "trace_id", "batch_id",     "custom_id"};

static json_t *
kf_enrich_job_json(const json_t *req, const char *prompt_text, json_t *messages, json_t *lineage)
{
    json_t *job = json_object();
    if (!job)
        return NULL;
    for (size_t i = 0; i < sizeof(kf_enrich_copied) / sizeof(kf_enrich_copied[0]); i++) {
        json_t *v = json_object_get(req, kf_enrich_copied[i]);
        if (v)
            json_object_set(job, kf_enrich_copied[i], v);
    }
    json_object_set_new(job, "prompt_text", json_string(prompt_text));
    json_object_set(job, "messages", messages);
    json_object_set(job, "lineage", lineage);
    json_object_set_new(job, "enriched_at", json_integer((json_int_t)kf_now_ms()));
    return job;
}

static json_t *
kf_enrich_failed_json(const json_t *req, const char *message)
{
    json_t *res = json_object();
    if (!res)
        return NULL;
    static const char *const copied[] = {"request_id", "tenant_id", "trace_id", "callback_url",
                                         "metadata",   "batch_id",  "custom_id"};
    for (size_t i = 0; i < sizeof(copied) / sizeof(copied[0]); i++) {
        json_t *v = json_object_get(req, copied[i]);
        if (v)
            json_object_set(res, copied[i], v);
    }
    json_object_set_new(res, "status", json_string("failed"));
    json_object_set_new(res, "model", json_string(kf_json_str_or(req, "model", "")));
    json_object_set_new(res, "error", json_string(message));
    json_object_set_new(res, "finish_reason", json_string("error"));
    json_object_set_new(res, "produced_at", json_integer((json_int_t)kf_now_ms()));
    return res;
}

/* Errors that describe the request's content (they fail the request with a result) rather
 * than the infrastructure (they retry or dead-letter). */
static int
kf_enrich_is_request_error(kf_err_t err)
{
    return err == KF_ERR_NOT_FOUND || err == KF_ERR_INVALID_ARG || err == KF_ERR_UNSUPPORTED ||
           err == KF_ERR_PARSE;
}

kf_err_t
kf_enrich_process(
    kf_enrich_t *e, const json_t *req, kf_enrich_outcome_t *out, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    kf_enrich_ctx_t c;
    memset(&c, 0, sizeof(c));
    char why[512] = "";
    char *tmpl = NULL, *rendered = NULL, *metrics_text = NULL, *summary = NULL;
    json_t *messages_out = NULL, *metrics = NULL;
    kf_err_t err = KF_OK;

    const char *task = kf_json_str_or(req, "task", "completion");
    const char *prompt = kf_json_str_or(req, "prompt", NULL);
    const json_t *messages = json_object_get(req, "messages");
    const char *customer_id = kf_json_str_or(req, "customer_id", NULL);
    const char *portfolio_id = kf_json_str_or(req, "portfolio_id", NULL);
    const json_t *risk = json_object_get(req, "risk");
    int chat = json_array_size(messages) > 0;
    int risk_report = !strcmp(task, "risk_report");
    c.tenant_id = kf_json_str_or(req, "tenant_id", "");

    /* 1. The request itself. */
    if (!risk_report && !chat && !prompt) {
        err = kf_err_set(why, sizeof(why), KF_ERR_INVALID_ARG,
                         "request has neither prompt nor messages");
        goto out;
    }
    if (risk_report) {
        const char *rp = json_is_object(risk) ? kf_json_str_or(risk, "portfolio_id", NULL) : NULL;
        if (rp)
            portfolio_id = rp;
        if (!portfolio_id) {
            err = kf_err_set(why, sizeof(why), KF_ERR_INVALID_ARG,
                             "risk_report needs risk.portfolio_id (or portfolio_id)");
            goto out;
        }
    }

    /* 2. Context from PostgreSQL. */
    kf_pg_result_t *res = NULL;
    if ((err = kf_enrich_query(e, "enrich_tenant", (const char *[]){c.tenant_id}, 1, &res, why,
                               sizeof(why))))
        goto out;
    if (kf_pg_result_ntuples(res) == 0)
        err = kf_err_set(why, sizeof(why), KF_ERR_NOT_FOUND, "unknown tenant '%s'", c.tenant_id);
    else
        c.tenant_name = kf_dup(kf_pg_result_value(res, 0, 0));
    kf_pg_result_destroy(res);
    if (err)
        goto out;
    if (customer_id && (err = kf_enrich_load_customer(e, &c, customer_id, why, sizeof(why))))
        goto out;
    /* 3. Involved symbols: the request's (in its order), then the positions' (symbol order,
     * added while the portfolio loads), then the market join. */
    if ((err = kf_enrich_check_symbols(e, &c, json_object_get(req, "symbols"), why, sizeof(why))))
        goto out;
    if (portfolio_id &&
        (err = kf_enrich_load_portfolio(e, &c, portfolio_id, customer_id, why, sizeof(why))))
        goto out;
    if ((err = kf_enrich_join_market(e, &c)))
        goto out;

    /* 4. Rendering. */
    int raw = !risk_report && !customer_id && !portfolio_id;
    if (raw) {
        /* Pass-through: unchanged unless symbols were asked for. */
        kf_text_t block = {0};
        if (c.nsymbols)
            kf_text_add(&block, "\n\nLatest market data:\n%s", kf_text_str(&c.market));
        if (block.oom) {
            err = KF_ERR_NOMEM;
            goto out;
        }
        if (chat) {
            messages_out = c.nsymbols ? kf_enrich_messages_with(messages, block.s, 1)
                                      : json_deep_copy(messages);
            out->record = kf_enrich_job_json(req, "", messages_out, c.lineage);
        } else {
            kf_text_t p = {0};
            kf_text_add(&p, "%s%s", prompt, kf_text_str(&block));
            messages_out = json_array();
            out->record = p.oom ? NULL : kf_enrich_job_json(req, p.s, messages_out, c.lineage);
            free(p.s);
        }
        free(block.s);
        if (!out->record || !messages_out)
            err = KF_ERR_NOMEM;
        goto out;
    }

    int version = 0;
    if ((err = kf_enrich_load_template(e, task, &tmpl, &version, why, sizeof(why))))
        goto out;
    snprintf(out->tmpl, sizeof(out->tmpl), "%s v%d", e->template_name, version);
    char as_of[16] = "(none)", confidence[40] = "(none)", horizon[40] = "(none)";
    if (risk_report) {
        const char *ao = json_is_object(risk) ? kf_json_str_or(risk, "as_of", NULL) : NULL;
        if (ao && !kf_enrich_date_ok(ao)) {
            err = kf_err_set(why, sizeof(why), KF_ERR_INVALID_ARG, "risk.as_of must be YYYY-MM-DD");
            goto out;
        }
        if (ao)
            snprintf(as_of, sizeof(as_of), "%s", ao);
        else
            kf_enrich_today(as_of, sizeof(as_of));
        json_t *cf = json_is_object(risk) ? json_object_get(risk, "confidence") : NULL;
        json_t *hz = json_is_object(risk) ? json_object_get(risk, "horizon_days") : NULL;
        kf_enrich_fmt_num(json_is_number(cf) ? json_number_value(cf) : 0.99, confidence,
                          sizeof(confidence));
        snprintf(horizon, sizeof(horizon), "%lld",
                 json_is_integer(hz) ? (long long)json_integer_value(hz) : 1LL);
        if (!e->risk_fn) {
            err = kf_err_set(why, sizeof(why), KF_ERR_UNSUPPORTED,
                             "risk_report not available in this build (risk module not linked)");
            goto out;
        }
        err = e->risk_fn(e->risk_opaque, e->pg, c.portfolio_id, as_of, &metrics, why, sizeof(why));
        if (err)
            goto out;
        metrics_text = json_dumps(metrics, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (!metrics_text) {
            err = KF_ERR_NOMEM;
            goto out;
        }
        /* NULL when the metrics lack a headline figure: the placeholder then reads (none). */
        summary =
            kf_enrich_risk_summary(metrics, c.portfolio_id, as_of, atof(confidence), atoi(horizon));
    }
    const char *user_text = prompt ? prompt : "";
    if (chat) {
        long u = kf_enrich_last_user(messages);
        user_text =
            u >= 0 ? kf_json_str_or(json_array_get(messages, (size_t)u), "content", "") : "";
    }
    const char *none = "(none)";
    kf_enrich_var_t vars[] = {
        {"request.id", kf_json_str_or(req, "request_id", "")},
        {"request.model", kf_json_str_or(req, "model", "")},
        {"task", task},
        {"tenant.id", c.tenant_id},
        {"tenant.name", c.tenant_name},
        {"customer.id", c.customer_id ? c.customer_id : none},
        {"customer.name", c.customer_name ? c.customer_name : none},
        {"customer.risk_profile", c.customer_risk ? c.customer_risk : none},
        {"portfolio.id", c.portfolio_id ? c.portfolio_id : none},
        {"portfolio.name", c.portfolio_name ? c.portfolio_name : none},
        {"portfolio.base_currency", c.portfolio_ccy ? c.portfolio_ccy : none},
        {"positions", c.positions.len ? c.positions.s : none},
        {"limits", c.limits.len ? c.limits.s : none},
        {"market", c.market.len ? c.market.s : none},
        {"symbols", c.symbols_csv.len ? c.symbols_csv.s : none},
        {"prompt", user_text},
        {"risk.as_of", as_of},
        {"risk.confidence", confidence},
        {"risk.horizon_days", horizon},
        {"risk.metrics", metrics_text ? metrics_text : none},
        {"risk.summary", summary ? summary : none},
    };
    if (c.positions.oom || c.limits.oom) {
        err = KF_ERR_NOMEM;
        goto out;
    }
    err = kf_enrich_render(tmpl, vars, sizeof(vars) / sizeof(vars[0]), &rendered, why, sizeof(why));
    if (err) {
        /* A broken template fails its requests with the reason, naming the template. */
        char tmp[512];
        snprintf(tmp, sizeof(tmp), "%s", why);
        snprintf(why, sizeof(why), "prompt template '%.64s' v%d for task %.16s: %.380s",
                 e->template_name, version, task, tmp);
        goto out;
    }
    if (chat) {
        messages_out = kf_enrich_messages_with(messages, rendered, 0);
        out->record = messages_out ? kf_enrich_job_json(req, "", messages_out, c.lineage) : NULL;
    } else {
        messages_out = json_array();
        out->record = kf_enrich_job_json(req, rendered, messages_out, c.lineage);
    }
    if (!out->record || !messages_out)
        err = KF_ERR_NOMEM;

out:
    if (err && kf_enrich_is_request_error(err)) {
        /* The request cannot be enriched: answer it with a failed result. */
        json_decref(out->record);
        out->record = kf_enrich_failed_json(req, why);
        out->failed = 1;
        out->audit_outcome = err == KF_ERR_INVALID_ARG ? KF_AUDIT_REJECTED : KF_AUDIT_FAILURE;
        snprintf(out->message, sizeof(out->message), "%s", why);
        err = out->record ? KF_OK : KF_ERR_NOMEM;
    } else if (err) {
        json_decref(out->record);
        out->record = NULL;
        if (err == KF_ERR_NOMEM && !why[0])
            snprintf(why, sizeof(why), "out of memory");
        kf_err_set(errstr, errstr_size, err, "%s", why);
    }
    if (err == KF_ERR_NOMEM && !out->record)
        kf_err_set(errstr, errstr_size, err, "out of memory");
    json_decref(messages_out);
    json_decref(metrics);
    free(metrics_text);
    free(summary);
    free(rendered);
    free(tmpl);
    kf_enrich_ctx_free(&c);
    return err;
}
