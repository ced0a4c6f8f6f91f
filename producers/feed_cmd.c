/*
 * feed_cmd.c: `kinfer feed`, the command-line wrapper around kf_feed_run(): options and
 * configuration (kf_conf table feed.* plus topics.market and kafka.*), input selection, the
 * final summary line and the exit status (non-zero when any line was bad, unless allowed).
 */
#include "kf_feed.h"

#include "kf_log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const kf_conf_prop_t kf_feed_conf_props[] = {
    {.name = "topics.market",
     .type = KF_CONF_STRING,
     .def = KF_FEED_TOPIC_DEFAULT,
     .desc = "Compacted topic of MarketTick records, keyed by symbol."},
    {.name = "feed.partitions",
     .type = KF_CONF_INT,
     .def = "3",
     .min = 1,
     .max = 1000,
     .desc = "Partitions of the market topic when the feed creates it."},
    {.name = "feed.format",
     .type = KF_CONF_STRING,
     .def = "auto",
     .choices = "auto|csv|jsonl",
     .desc = "Input format; auto picks by file extension (.csv, .jsonl/.ndjson/.json)."},
    {.name = "feed.speed",
     .type = KF_CONF_STRING,
     .def = "1",
     .desc = "Replay pace: 1 = recorded event-time gaps, N = N times faster, max = no pacing."},
    {.name = "feed.loop",
     .type = KF_CONF_BOOL,
     .def = "false",
     .desc = "Replay the file forever, shifting event times forward on every pass."},
    {.name = "feed.source",
     .type = KF_CONF_STRING,
     .desc = "Source of ticks whose line names none (default: feed:<file name>)."},
    {.name = "feed.progress.every",
     .type = KF_CONF_INT,
     .def = "10000",
     .min = 0,
     .max = 1e12,
     .desc = "Log a progress line every N ticks sent (0: never)."},
    {.name = "feed.allow.bad",
     .type = KF_CONF_BOOL,
     .def = "false",
     .desc = "Exit 0 even when some lines were bad (they are still reported)."},
    {.name = NULL}};

static int
kf_feed_usage(FILE *fp)
{
    fprintf(fp,
            "Usage: kinfer feed [options] [FILE|-]\n\n"
            "Publishes market ticks from a CSV or JSON-lines file (or stdin) to the compacted\n"
            "market topic, keyed by symbol. CSV header: symbol,price,bid,ask,volume,event_time,"
            "source\n(event_time RFC 3339 or epoch ms). Bad lines are reported with their line\n"
            "number and reason; the exit status is 1 when any line was bad.\n\n"
            "Options:\n"
            "  --format csv|jsonl   input format (default: by extension; stdin needs it)\n"
            "  --speed N|max        N times the recorded pace (default 1), max = no pacing\n"
            "  --loop               replay the file until SIGINT/SIGTERM\n"
            "  --topic NAME         market topic (topics.market, default %s)\n"
            "  --source TEXT        source of ticks that name none\n"
            "  --allow-bad          exit 0 even when some lines were bad\n"
            "  --quiet              no per-line reports (the summary still lists them)\n"
            "  --config FILE        key = value configuration file\n"
            "  --set KEY=VALUE      set one configuration key\n"
            "  --dump-config        print the effective configuration and exit\n"
            "Kafka: kafka.bootstrap.servers (env KINFER_KAFKA_BOOTSTRAP_SERVERS), else\n"
            "$KINFER_KAFKA_BROKERS.\n",
            KF_FEED_TOPIC_DEFAULT);
    return fp == stdout ? 0 : 2;
}

static kf_err_t
kf_feed_cmd_set(kf_conf_t *conf, const char *key, const char *value)
{
    char errstr[512];
    kf_err_t err = kf_conf_set(conf, key, value, errstr, sizeof(errstr));
    if (err)
        fprintf(stderr, "kinfer feed: %s\n", errstr);
    return err;
}

int
kf_cmd_feed(int argc, char **argv)
{
    char errstr[1024];
    kf_conf_t *conf = kf_conf_new();
    const char *path = NULL, *config = NULL;
    int dump = 0, quiet = 0, rc = 2;
    kf_kafka_kv_t *kv = NULL;
    char **kv_names = NULL;
    size_t nkv = 0;
    FILE *in = NULL;
    if (kf_conf_add_table(conf, "feed", kf_feed_conf_props, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer feed: %s\n", errstr);
        goto out;
    }
    /* Files first, then the environment, then the command line: collect the command line
     * before applying it. */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
    if (config && kf_conf_load_file(conf, config, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer feed: %s\n", errstr);
        goto out;
    }
    if (kf_conf_load_env(conf, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer feed: %s\n", errstr);
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            rc = kf_feed_usage(stdout);
            goto out;
        } else if (!strcmp(a, "--config") && next) {
            i++;
        } else if (!strcmp(a, "--format") && next) {
            if (kf_feed_cmd_set(conf, "feed.format", argv[++i]))
                goto out;
        } else if (!strcmp(a, "--speed") && next) {
            if (kf_feed_cmd_set(conf, "feed.speed", argv[++i]))
                goto out;
        } else if (!strcmp(a, "--topic") && next) {
            if (kf_feed_cmd_set(conf, "topics.market", argv[++i]))
                goto out;
        } else if (!strcmp(a, "--source") && next) {
            if (kf_feed_cmd_set(conf, "feed.source", argv[++i]))
                goto out;
        } else if (!strcmp(a, "--set") && next) {
            if (kf_conf_set_assignment(conf, argv[++i], errstr, sizeof(errstr))) {
                fprintf(stderr, "kinfer feed: %s\n", errstr);
                goto out;
            }
        } else if (!strcmp(a, "--loop")) {
            kf_feed_cmd_set(conf, "feed.loop", "true");
        } else if (!strcmp(a, "--allow-bad")) {
            kf_feed_cmd_set(conf, "feed.allow.bad", "true");
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--dump-config")) {
            dump = 1;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "kinfer feed: unknown or incomplete option '%s'\n", a);
            kf_feed_usage(stderr);
            goto out;
        } else if (!path) {
            path = a;
        } else {
            fprintf(stderr, "kinfer feed: more than one input file ('%s')\n", a);
            goto out;
        }
    }
    kf_conf_apply_core(conf);
    if (dump) {
        kf_conf_dump(conf, stdout);
        rc = 0;
        goto out;
    }

    kf_feed_opts_t opts = {.topic = kf_conf_get_str(conf, "topics.market"),
                           .partitions = (int)kf_conf_get_int(conf, "feed.partitions"),
                           .loop = kf_conf_get_bool(conf, "feed.loop"),
                           .source = kf_conf_get_str(conf, "feed.source"),
                           .progress_every = kf_conf_get_int(conf, "feed.progress.every"),
                           .quiet = quiet};
    const char *speed = kf_conf_get_str(conf, "feed.speed");
    if (!strcmp(speed, "max")) {
        opts.speed = 0;
    } else {
        char *end = NULL;
        opts.speed = strtod(speed, &end);
        if (!end || *end || !(opts.speed > 0) || opts.speed > 1e9) {
            fprintf(stderr, "kinfer feed: --speed must be a number > 0 or 'max', not '%s'\n",
                    speed);
            goto out;
        }
    }
    const char *fmt = kf_conf_get_str(conf, "feed.format");
    int from_stdin = !path || !strcmp(path, "-");
    if (strcmp(fmt, "auto")) {
        kf_feed_format_from_name(fmt, &opts.format);
    } else if (from_stdin || kf_feed_format_from_path(path, &opts.format)) {
        fprintf(stderr, "kinfer feed: cannot tell the format of %s: pass --format csv|jsonl\n",
                from_stdin ? "stdin" : path);
        goto out;
    }
    if (from_stdin && opts.loop) {
        fprintf(stderr, "kinfer feed: --loop needs a file (stdin cannot be replayed)\n");
        goto out;
    }
    in = from_stdin ? stdin : fopen(path, "r");
    if (!in) {
        fprintf(stderr, "kinfer feed: cannot open %s: %s\n", path, strerror(errno));
        goto out;
    }
    opts.name = from_stdin ? "stdin" : path;

    /* kafka.* pass-through keys, plus the dev stack's KINFER_KAFKA_BROKERS as a fallback. */
    size_t nk = kf_conf_kafka_count(conf);
    kv = calloc(nk + 1, sizeof(*kv));
    kv_names = calloc(nk + 1, sizeof(*kv_names));
    if (!kv || !kv_names)
        goto out;
    int have_bootstrap = 0;
    for (size_t i = 0; i < nk; i++) {
        const char *k, *v;
        kf_conf_kafka_at(conf, i, &k, &v);
        size_t l = strlen(k) + 7;
        if (!(kv_names[nkv] = malloc(l)))
            goto out;
        snprintf(kv_names[nkv], l, "kafka.%s", k);
        kv[nkv].key = kv_names[nkv];
        kv[nkv++].value = v;
        have_bootstrap |= !strcmp(k, "bootstrap.servers");
    }
    if (!have_bootstrap) {
        const char *brokers = getenv("KINFER_KAFKA_BROKERS");
        if (!brokers || !*brokers) {
            fprintf(stderr, "kinfer feed: no brokers: set kafka.bootstrap.servers "
                            "(KINFER_KAFKA_BOOTSTRAP_SERVERS) or KINFER_KAFKA_BROKERS\n");
            goto out;
        }
        kv[nkv].key = "kafka.bootstrap.servers";
        kv[nkv++].value = brokers;
    }
    opts.kafka = kv;
    opts.kafka_count = nkv;

    kf_kafka_install_signal_handlers();
    kf_feed_stats_t st;
    kf_err_t err = kf_feed_run(&opts, in, &st, errstr, sizeof(errstr));
    char summary[512];
    kf_feed_summary(&st, summary, sizeof(summary));
    fprintf(stderr, "kinfer feed: %s\n", summary);
    if (err) {
        fprintf(stderr, "kinfer feed: %s\n", errstr);
        rc = 1;
    } else if (st.delivery_failed > 0 ||
               (st.bad > 0 && !kf_conf_get_bool(conf, "feed.allow.bad"))) {
        rc = 1;
    } else {
        rc = 0;
    }

out:
    if (in && in != stdin)
        fclose(in);
    for (size_t i = 0; kv_names && i < nkv; i++)
        if (kv[i].key == kv_names[i])
            free(kv_names[i]);
    free(kv_names);
    free(kv);
    kf_conf_destroy(conf);
    return rc;
}
