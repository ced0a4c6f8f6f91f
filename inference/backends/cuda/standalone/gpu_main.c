/*
 * gpu_main.c: `kinfer-gpu`, the standalone GPU build's stand-in for the kinfer CLI: it offers
 * the engine's own subcommands (model-gen, generate, bench-infer) without linking core's
 * Kafka/PostgreSQL/HTTP modules, so a GPU machine without their packages can run them.
 */
#include <stdio.h>
#include <string.h>

int kf_cmd_model_gen(int argc, char **argv);
int kf_cmd_generate(int argc, char **argv);
int kf_cmd_bench_infer(int argc, char **argv);

int
main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"model-gen", kf_cmd_model_gen},
        {"generate", kf_cmd_generate},
        {"bench-infer", kf_cmd_bench_infer},
    };
    if (argc >= 2)
        for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
            if (!strcmp(argv[1], cmds[i].name))
                return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "usage: kinfer-gpu model-gen|generate|bench-infer [options] (--help)\n");
    return 2;
}
