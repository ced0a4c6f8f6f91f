/*
 * worker_cmd.c: `kinfer infer`, the command-line wrapper around kf_worker: configuration
 * (worker.*, topics.*, pg.*, kafka.* from --config FILE, KINFER_* variables and --set), then
 * one worker until SIGTERM/SIGINT. Exit status 0 after a clean stop, 1 on a runtime failure
 * (fenced by a newer instance, Kafka fatal error), 2 on bad usage or configuration.
 */
#include "kf_worker.h"

#include "kf_kafka.h"
#include "kf_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
kf_infer_usage(FILE *fp)
{
    fprintf(fp, "Usage: kinfer infer [options]\n\n"
                "Runs one inference worker: a member of the jobs consumer group that feeds\n"
                "InferenceJob records into a continuous-batching engine and commits\n"
                "InferenceResult records and input offsets in one Kafka transaction.\n"
                "Cancellations are read from the control topic. Stops on SIGTERM/SIGINT.\n\n"
                "Options:\n"
                "  -m, --model PATH       GGUF model (worker.model, required)\n"
                "  --device cpu|cuda|auto backend (worker.device, default auto)\n"
                "  -t, --threads N        CPU threads (worker.threads, 0 = all cores)\n"
                "  --batch-seqs N         sequences per step (worker.max.batch.seqs)\n"
                "  --group ID             consumer group (worker.group.id)\n"
                "  --txn-id ID            transactional id (worker.transactional.id)\n"
                "  --config FILE          key = value configuration file\n"
                "  --set KEY=VALUE        set one configuration key (repeatable)\n"
                "  --dump-config          print the effective configuration and exit\n"
                "  -h, --help             this text\n\n"
                "Kafka: kafka.bootstrap.servers (env KINFER_KAFKA_BOOTSTRAP_SERVERS), else\n"
                "$KINFER_KAFKA_BROKERS. Keys: see docs/worker.md and --dump-config.\n");
    return fp == stdout ? 0 : 2;
}

static int
kf_infer_set(kf_conf_t *conf, const char *key, const char *value)
{
    char errstr[512];
    if (kf_conf_set(conf, key, value, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer infer: %s\n", errstr);
        return -1;
    }
    return 0;
}

int
kf_cmd_infer(int argc, char **argv)
{
    char errstr[1024];
    int rc = 2, dump = 0;
    const char *config = NULL;
    kf_conf_t *conf = kf_conf_new();
    if (kf_worker_conf_register(conf, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer infer: %s\n", errstr);
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            rc = kf_infer_usage(stdout);
            goto out;
        }
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
    }
    /* Sources in order: file, environment, command line (later wins). */
    if (config && kf_conf_load_file(conf, config, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer infer: %s\n", errstr);
        goto out;
    }
    if (kf_conf_load_env(conf, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer infer: %s\n", errstr);
        goto out;
    }
    static const struct {
        const char *opt, *alt, *key;
    } map[] = {
        {"--model", "-m", "worker.model"},     {"--device", NULL, "worker.device"},
        {"--threads", "-t", "worker.threads"}, {"--batch-seqs", NULL, "worker.max.batch.seqs"},
        {"--group", NULL, "worker.group.id"},  {"--txn-id", NULL, "worker.transactional.id"}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        int matched = 0;
        for (size_t k = 0; k < sizeof(map) / sizeof(map[0]); k++)
            if (!strcmp(a, map[k].opt) || (map[k].alt && !strcmp(a, map[k].alt))) {
                if (!next) {
                    fprintf(stderr, "kinfer infer: %s needs a value\n", a);
                    goto out;
                }
                if (kf_infer_set(conf, map[k].key, next))
                    goto out;
                matched = 1;
                i++;
                break;
            }
        if (matched)
            continue;
        if (!strcmp(a, "--config") && next) {
            i++;
        } else if (!strcmp(a, "--set") && next) {
            if (kf_conf_set_assignment(conf, argv[++i], errstr, sizeof(errstr))) {
                fprintf(stderr, "kinfer infer: %s\n", errstr);
                goto out;
            }
        } else if (!strcmp(a, "--dump-config")) {
            dump = 1;
        } else {
            fprintf(stderr, "kinfer infer: unknown option or missing value: '%s' (see --help)\n",
                    a);
            goto out;
        }
    }
    kf_conf_apply_core(conf);
    if (dump) {
        kf_conf_dump(conf, stdout);
        rc = 0;
        goto out;
    }
    if (kf_kafka_install_signal_handlers()) {
        fprintf(stderr, "kinfer infer: cannot install signal handlers\n");
        rc = 1;
        goto out;
    }
    kf_worker_t *w = NULL;
    kf_err_t err = kf_worker_new(conf, &w, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "kinfer infer: %s\n", errstr);
        rc = err == KF_ERR_CONFIG ? 2 : 1;
        goto out;
    }
    err = kf_worker_run(w, &kf_kafka_stop, errstr, sizeof(errstr));
    kf_worker_stats_t st;
    kf_worker_get_stats(w, &st);
    kf_worker_destroy(w);
    fprintf(stderr,
            "kinfer infer: received %llu jobs: %llu completed, %llu failed, %llu expired, "
            "%llu cancelled, %llu dead-lettered, %llu dropped (redone elsewhere)\n",
            (unsigned long long)st.jobs_received, (unsigned long long)st.completed,
            (unsigned long long)st.failed, (unsigned long long)st.expired,
            (unsigned long long)st.cancelled, (unsigned long long)st.dead_lettered,
            (unsigned long long)st.dropped);
    if (err) {
        fprintf(stderr, "kinfer infer: %s\n", errstr);
        rc = 1;
        goto out;
    }
    rc = 0;
out:
    kf_conf_destroy(conf);
    return rc;
}
