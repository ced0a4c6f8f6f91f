/*
 * cmd_report.c: `kinfer report run` (a batch of risk reports through the pipeline) and
 * `kinfer report get` (render a stored result). Thin wrappers over kf_report_run and
 * kf_report_get: option parsing, configuration, the progress display and the summary.
 */
#include "kf_kafka.h"
#include "kf_log.h"
#include "kf_pg.h"
#include "kf_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void
kf_report_usage_run(FILE *fp)
{
    fprintf(
        fp,
        "Usage: kinfer report run --as-of DATE (--portfolio ID ... | --all) --out DIR [options]\n"
        "\n"
        "Generates risk reports through the pipeline: computes each portfolio's metrics as of\n"
        "DATE, produces one risk_report InferenceRequest per portfolio to the requests topic,\n"
        "collects the InferenceResults from the results topic (read_committed) and writes\n"
        "DIR/<portfolio>-<DATE>.json, .md and .html. The enricher and an inference worker\n"
        "(kinfer enrich + kinfer infer, or kinfer run) must be running. Exit status 1 when\n"
        "any report failed. Layout and lineage: docs/reports.md.\n"
        "\n"
        "Options:\n"
        "  --as-of DATE      valuation date YYYY-MM-DD (required)\n"
        "  --portfolio ID    a portfolio (repeatable, or comma-separated)\n"
        "  --all             every portfolio in the database\n"
        "  --out DIR         output directory (created when missing; required)\n"
        "  --seed N          sampling seed (report.seed, default 42)\n"
        "  --model NAME      model name on the requests (report.model)\n"
        "  --max-tokens N    narrative length limit (report.max.tokens, default 256)\n"
        "  --temperature T   0 = greedy, the default (report.temperature)\n"
        "  --confidence C    headline VaR/ES confidence (report.confidence, default 0.99)\n"
        "  --horizon N       headline horizon in days (report.horizon.days, default 1)\n"
        "  --tenant ID       tenant of the requests (default: each portfolio's tenant)\n"
        "  --timeout DUR     wait at most DUR for the results (report.timeout, default 10m)\n"
        "  --dsn DSN         PostgreSQL (pg.dsn; default $KINFER_PG_DSN)\n"
        "  --brokers LIST    Kafka (kafka.bootstrap.servers; default $KINFER_KAFKA_BROKERS)\n"
        "  --config FILE     key = value configuration file\n"
        "  --set KEY=VALUE   set any configuration key (report.*, topics.*, pg.*, kafka.*)\n"
        "  --dump-config     print the configuration and exit\n"
        "  --quiet           no progress display\n");
}

static void
kf_report_usage_get(FILE *fp)
{
    fprintf(fp,
            "Usage: kinfer report get REQUEST_ID [--format json|md|html] [--out FILE] [options]\n"
            "\n"
            "Renders a stored risk report: reads the InferenceResult from PostgreSQL\n"
            "(requests.result, written by the dispatcher), recomputes the metrics as of the\n"
            "report's date and prints the report (or writes it to FILE).\n"
            "\n"
            "Options:\n"
            "  --format F        json (default), md or html\n"
            "  --out FILE        write to FILE instead of stdout\n"
            "  --dsn DSN         PostgreSQL (pg.dsn; default $KINFER_PG_DSN)\n"
            "  --config FILE     key = value configuration file\n");
}

static void
kf_report_usage(FILE *fp)
{
    fprintf(fp, "Usage: kinfer report run|get [options]\n\n"
                "  run   generate risk reports for portfolios through the pipeline\n"
                "  get   render a stored risk report result\n\n"
                "Run `kinfer report run --help` or `kinfer report get --help` for options.\n");
}

/* Progress: a redrawn bar on a terminal, one line per event otherwise. */
typedef struct kf_report_display {
    int tty, quiet;
} kf_report_display_t;

static void
kf_report_show(const kf_report_progress_t *p, void *opaque)
{
    kf_report_display_t *d = opaque;
    if (d->quiet)
        return;
    size_t finished = p->done + p->failed;
    if (d->tty) {
        char bar[31];
        size_t fill = p->total ? finished * 30 / p->total : 0;
        for (size_t i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r\033[K[%s] %zu/%zu done, %zu failed, %zu sent  %.20s %.40s", bar,
                finished, p->total, p->failed, p->submitted, p->portfolio_id ? p->portfolio_id : "",
                p->what ? p->what : "");
        if (finished == p->total)
            fputc('\n', stderr);
    } else {
        fprintf(stderr, "report: %s %s (%zu/%zu done, %zu failed)\n",
                p->portfolio_id ? p->portfolio_id : "-", p->what ? p->what : "", finished, p->total,
                p->failed);
    }
    fflush(stderr);
}

/* Loads --config, the environment, then --set pairs and flag values (in that order). */
static kf_err_t
kf_report_conf_load(
    kf_conf_t *conf, const char *file, char **sets, size_t nsets, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_report_conf_register(conf, errstr, errstr_size);
    if (!err && file)
        err = kf_conf_load_file(conf, file, errstr, errstr_size);
    if (!err)
        err = kf_conf_load_env(conf, NULL, errstr, errstr_size);
    for (size_t i = 0; !err && i < nsets; i++) {
        char *eq = strchr(sets[i], '=');
        if (!eq)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "expected KEY=VALUE, got '%s'",
                              sets[i]);
        *eq = '\0';
        err = kf_conf_set(conf, sets[i], eq + 1, errstr, errstr_size);
        *eq = '=';
    }
    if (!err)
        kf_conf_apply_core(conf);
    return err;
}

static double
kf_report_elapsed(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static int
kf_report_cmd_run(int argc, char **argv)
{
    const char *as_of = NULL, *out_dir = NULL, *config = NULL;
    int all = 0, quiet = 0, dump = 0;
    char **sets = calloc((size_t)argc * 2 + 1, sizeof(char *));
    char **owned = calloc((size_t)argc + 1, sizeof(char *));
    const char **pids = calloc((size_t)argc * 8 + 1, sizeof(char *));
    size_t nsets = 0, nowned = 0, npids = 0;
    int rc = 2;
    if (!sets || !owned || !pids) {
        fprintf(stderr, "kinfer report run: out of memory\n");
        goto out;
    }
    /* Flags that are plain configuration keys. */
    static const struct {
        const char *flag, *key;
    } keyflags[] = {{"--seed", "report.seed"},
                    {"--model", "report.model"},
                    {"--max-tokens", "report.max.tokens"},
                    {"--temperature", "report.temperature"},
                    {"--confidence", "report.confidence"},
                    {"--horizon", "report.horizon.days"},
                    {"--tenant", "report.tenant"},
                    {"--timeout", "report.timeout"},
                    {"--dsn", "pg.dsn"},
                    {"--brokers", "kafka.bootstrap.servers"}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        int matched = 0;
        for (size_t k = 0; k < sizeof(keyflags) / sizeof(keyflags[0]); k++) {
            if (strcmp(a, keyflags[k].flag))
                continue;
            if (!next) {
                fprintf(stderr, "kinfer report run: %s needs a value\n", a);
                goto out;
            }
            size_t len = strlen(keyflags[k].key) + strlen(next) + 2;
            char *kv = malloc(len);
            if (!kv)
                goto out;
            snprintf(kv, len, "%s=%s", keyflags[k].key, next);
            owned[nowned++] = kv;
            sets[nsets++] = kv;
            i++;
            matched = 1;
            break;
        }
        if (matched)
            continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            kf_report_usage_run(stdout);
            rc = 0;
            goto out;
        } else if (!strcmp(a, "--all")) {
            all = 1;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--dump-config")) {
            dump = 1;
        } else if (next && !strcmp(a, "--as-of")) {
            as_of = argv[++i];
        } else if (next && !strcmp(a, "--out")) {
            out_dir = argv[++i];
        } else if (next && !strcmp(a, "--config")) {
            config = argv[++i];
        } else if (next && !strcmp(a, "--set")) {
            sets[nsets++] = argv[++i];
        } else if (next && !strcmp(a, "--portfolio")) {
            /* Comma-separated lists are split in a copy. */
            char *copy = strdup(argv[++i]);
            if (!copy)
                goto out;
            owned[nowned++] = copy;
            for (char *tok = strtok(copy, ","); tok && npids < (size_t)argc * 8;
                 tok = strtok(NULL, ","))
                if (*tok)
                    pids[npids++] = tok;
        } else {
            fprintf(stderr, "kinfer report run: unknown or incomplete option '%s' (see --help)\n",
                    a);
            goto out;
        }
    }

    char errstr[1024];
    kf_conf_t *conf = kf_conf_new();
    kf_err_t err = kf_report_conf_load(conf, config, sets, nsets, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "kinfer report run: %s\n", errstr);
        kf_conf_destroy(conf);
        goto out;
    }
    if (dump) {
        kf_conf_dump(conf, stdout);
        kf_conf_destroy(conf);
        rc = 0;
        goto out;
    }
    if (!as_of || !out_dir || (all == (npids > 0))) {
        fprintf(stderr, "kinfer report run: needs --as-of, --out and either --portfolio or --all "
                        "(see --help)\n");
        kf_conf_destroy(conf);
        goto out;
    }
    kf_kafka_install_signal_handlers();
    kf_report_display_t disp = {.tty = isatty(STDERR_FILENO), .quiet = quiet};
    kf_report_batch_t batch = {.as_of = as_of,
                               .portfolios = pids,
                               .nportfolios = npids,
                               .all = all,
                               .out_dir = out_dir,
                               .stop = &kf_kafka_stop,
                               .progress = kf_report_show,
                               .progress_opaque = &disp};
    kf_report_outcome_t *outs = NULL;
    size_t n = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    err = kf_report_run(conf, &batch, &outs, &n, errstr, sizeof(errstr));
    double secs = kf_report_elapsed(&t0);
    kf_conf_destroy(conf);
    if (disp.tty && !quiet)
        fputc('\n', stderr);

    /* Summary: one line per portfolio on stdout, the totals last. */
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        if (outs[i].ok) {
            ok++;
            printf("%-12s ok      %s.{json,md,html}  digest %.16s  request %s\n",
                   outs[i].portfolio_id, outs[i].path, outs[i].digest, outs[i].request_id);
        } else {
            printf("%-12s FAILED  %s%s%s\n", outs[i].portfolio_id,
                   outs[i].error[0] ? outs[i].error : "no result",
                   outs[i].request_id[0] ? "  request " : "", outs[i].request_id);
        }
    }
    if (err)
        fprintf(stderr, "kinfer report run: %s\n", errstr);
    printf("kinfer report: %zu portfolios, %zu written, %zu failed in %.1f s -> %s\n", n, ok,
           n - ok, secs, out_dir);
    free(outs);
    rc = (err || ok != n) ? 1 : 0;
out:
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    free(owned);
    free(sets);
    free(pids);
    return rc;
}

static int
kf_report_cmd_get(int argc, char **argv)
{
    const char *id = NULL, *format = "json", *out = NULL, *config = NULL, *dsn = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            kf_report_usage_get(stdout);
            return 0;
        } else if (has_next && !strcmp(a, "--format")) {
            format = argv[++i];
        } else if (has_next && !strcmp(a, "--out")) {
            out = argv[++i];
        } else if (has_next && !strcmp(a, "--config")) {
            config = argv[++i];
        } else if (has_next && !strcmp(a, "--dsn")) {
            dsn = argv[++i];
        } else if (a[0] != '-' && !id) {
            id = a;
        } else {
            fprintf(stderr, "kinfer report get: unknown or incomplete option '%s' (see --help)\n",
                    a);
            return 2;
        }
    }
    char errstr[1024];
    kf_report_format_t fmt;
    if (!id) {
        fprintf(stderr, "kinfer report get: needs a request id (see --help)\n");
        return 2;
    }
    if (kf_report_format_parse(format, &fmt, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer report get: %s\n", errstr);
        return 2;
    }
    kf_conf_t *conf = kf_conf_new();
    char *set = NULL;
    if (dsn) {
        size_t len = strlen(dsn) + sizeof("pg.dsn=");
        set = malloc(len);
        if (set)
            snprintf(set, len, "pg.dsn=%s", dsn);
    }
    kf_err_t err =
        kf_report_conf_load(conf, config, set ? &set : NULL, set ? 1 : 0, errstr, sizeof(errstr));
    free(set);
    kf_pg_t *pg = NULL;
    json_t *doc = NULL;
    kf_buf_t b;
    kf_buf_init(&b, 0);
    if (!err) {
        kf_pg_opts_t pgo;
        kf_pg_opts_from_conf(conf, &pgo);
        if (!pgo.dsn || !*pgo.dsn)
            pgo.dsn = getenv("KINFER_PG_DSN");
        err = (pgo.dsn && *pgo.dsn)
                  ? kf_pg_new(&pgo, &pg, errstr, sizeof(errstr))
                  : kf_err_set(errstr, sizeof(errstr), KF_ERR_CONFIG,
                               "no PostgreSQL DSN: --dsn, pg.dsn or KINFER_PG_DSN");
    }
    if (!err)
        err = kf_report_get(pg, id, &doc, errstr, sizeof(errstr));
    if (!err)
        err = kf_report_render(doc, fmt, &b, errstr, sizeof(errstr));
    if (!err && out) {
        FILE *fp = fopen(out, "wb");
        if (!fp || fwrite(b.data, 1, b.len, fp) != b.len || fclose(fp) != 0)
            err = kf_err_set(errstr, sizeof(errstr), KF_ERR_IO, "cannot write '%s'", out);
    } else if (!err) {
        fwrite(b.data, 1, b.len, stdout);
    }
    if (err)
        fprintf(stderr, "kinfer report get: %s\n", errstr);
    kf_buf_free(&b);
    json_decref(doc);
    kf_pg_destroy(pg);
    kf_conf_destroy(conf);
    return err == KF_ERR_NOT_FOUND ? 3 : err ? 1 : 0;
}

int
kf_cmd_report(int argc, char **argv)
{
    if (argc < 2) {
        kf_report_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        kf_report_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "run"))
        return kf_report_cmd_run(argc - 1, argv + 1);
    if (!strcmp(argv[1], "get"))
        return kf_report_cmd_get(argc - 1, argv + 1);
    fprintf(stderr, "kinfer report: unknown subcommand '%s' (run, get)\n", argv[1]);
    return 2;
}
