/*
 * Subcommands of the multi-call `kinfer` binary. Each is implemented in the folder that
 * owns the feature and receives argv with argv[0] set to the subcommand name. Each returns
 * a process exit code and must answer `--help` with its usage on stdout and exit 0.
 */
#ifndef KF_CMDS_H
#define KF_CMDS_H

typedef struct kf_cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} kf_cmd_t;

/* The table lives in cli/main.c; NULL-terminated. */
extern const kf_cmd_t kf_cmds[];

#endif /* KF_CMDS_H */
