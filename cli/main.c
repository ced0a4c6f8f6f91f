/*
 * kinfer: the multi-call binary. This file only dispatches to subcommands; each one lives
 * with the code it drives (STYLE.md: main.c stays thin).
 */
#include "kf_cmds.h"
#include "kf_version.h"

#include <stdio.h>
#include <string.h>

/* Subcommand entry points, implemented in their own folders. */
int kf_cmd_smoke(int argc, char **argv);
int kf_cmd_model_gen(int argc, char **argv);
int kf_cmd_generate(int argc, char **argv);
int kf_cmd_bench_infer(int argc, char **argv);
int kf_cmd_sample_data(int argc, char **argv);
int kf_cmd_risk(int argc, char **argv);
int kf_cmd_report(int argc, char **argv);
int kf_cmd_api(int argc, char **argv);
int kf_cmd_admin(int argc, char **argv);
int kf_cmd_feed(int argc, char **argv);
int kf_cmd_enrich(int argc, char **argv);
int kf_cmd_dispatch(int argc, char **argv);
int kf_cmd_audit(int argc, char **argv);
int kf_cmd_infer(int argc, char **argv);
int kf_cmd_run(int argc, char **argv);

static int
kf_cmd_version(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("Usage: kinfer version\n\nPrints the kinfer version and build features.\n");
        return 0;
    }
    printf("kinfer %s\nfeatures: %s\n", KF_VERSION, KF_FEATURES);
    return 0;
}

const kf_cmd_t kf_cmds[] = {
    {"version", kf_cmd_version, "print the version and build features"},
    {"smoke", kf_cmd_smoke, "produce and consume Avro test records through Kafka"},
    {"model-gen", kf_cmd_model_gen, "write a test model with random weights and a real vocab"},
    {"generate", kf_cmd_generate, "generate text from a GGUF model (streams to stdout)"},
    {"bench-infer", kf_cmd_bench_infer, "measure prefill/decode throughput of the engine"},
    {"sample-data", kf_cmd_sample_data, "generate seeded market data for risk reports"},
    {"risk", kf_cmd_risk, "compute a portfolio's risk metrics (VaR, ES, exposures, stress)"},
    {"report", kf_cmd_report, "generate risk reports through the pipeline; render stored ones"},
    {"feed", kf_cmd_feed, "publish market ticks from a CSV/JSONL file to the market topic"},
    {"enrich", kf_cmd_enrich, "enrich requests with PostgreSQL context and market data into jobs"},
    {"api", kf_cmd_api, "serve the HTTP API (requests, batches, status, cancel)"},
    {"admin", kf_cmd_admin, "create tenants and API keys for the HTTP API"},
    {"dispatch", kf_cmd_dispatch, "store results and deliver signed webhook callbacks"},
    {"audit", kf_cmd_audit, "index audit events into the search engine; `audit search` finds them"},
    {"infer", kf_cmd_infer, "run an inference worker: jobs -> engine -> results, exactly once"},
    {"run", kf_cmd_run, "run every pipeline stage in one process (api ... audit indexer)"},
    {NULL, NULL, NULL},
};

static void
kf_usage(FILE *fp)
{
    fprintf(fp, "Usage: kinfer <command> [options]\n\n"
                "kinfer is a Kafka-driven batch and stream LLM inference pipeline.\n\n"
                "Commands:\n");
    for (const kf_cmd_t *c = kf_cmds; c->name; c++)
        fprintf(fp, "  %-14s %s\n", c->name, c->summary);
    fprintf(fp, "\nRun `kinfer <command> --help` for a command's options.\n");
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        kf_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        kf_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version"))
        return kf_cmd_version(1, argv + 1);
    for (const kf_cmd_t *c = kf_cmds; c->name; c++)
        if (!strcmp(argv[1], c->name))
            return c->run(argc - 1, argv + 1);
    fprintf(stderr, "kinfer: unknown command '%s'\n\n", argv[1]);
    kf_usage(stderr);
    return 2;
}
