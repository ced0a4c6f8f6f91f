/*
 * libFuzzer target for the configuration file parser (kf_conf_load_string).
 *
 * Besides "never crash, never leak", it checks a round-trip property: whatever loads
 * successfully, dumped with kf_conf_dump, loads again, and dumping that is a fixed point
 * (dump(load(dump(x))) == dump(x) after one normalising pass). That catches quoting and
 * escaping bugs in the dump writer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf_conf.h"
#include "kf_pg.h"
#include "kf_search.h"

static const kf_conf_prop_t fuzz_props[] = {
    {.name = "f.int", .type = KF_CONF_INT, .def = "1", .min = -5, .max = 100, .desc = "i"},
    {.name = "f.dbl", .type = KF_CONF_DOUBLE, .def = "0.5", .min = 0, .max = 1, .desc = "d"},
    {.name = "f.bool", .type = KF_CONF_BOOL, .def = "no", .desc = "b"},
    {.name = "f.str", .type = KF_CONF_STRING, .desc = "s"},
    {.name = "f.dur", .type = KF_CONF_DURATION, .def = "1s", .desc = "t"},
    {.name = NULL},
};

static kf_conf_t *
fuzz_conf_new(void)
{
    char errstr[256];
    kf_conf_t *conf = kf_conf_new();
    kf_conf_add_table(conf, "f", fuzz_props, errstr, sizeof(errstr));
    kf_conf_add_table(conf, "pg", kf_pg_conf_props, errstr, sizeof(errstr));
    kf_conf_add_table(conf, "search", kf_search_conf_props, errstr, sizeof(errstr));
    return conf;
}

static char *
fuzz_dump(const kf_conf_t *conf, size_t *len)
{
    char *text = NULL;
    FILE *fp = open_memstream(&text, len);
    kf_conf_dump(conf, fp);
    fclose(fp);
    return text;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errstr[512];
    kf_conf_t *conf = fuzz_conf_new();
    if (kf_conf_load_string(conf, (const char *)data, size, "fuzz", errstr, sizeof(errstr)) ==
        KF_OK) {
        size_t len1, len2, len3;
        char *d1 = fuzz_dump(conf, &len1);
        kf_conf_t *c2 = fuzz_conf_new();
        if (kf_conf_load_string(c2, d1, len1, "dump1", errstr, sizeof(errstr)) != KF_OK) {
            fprintf(stderr, "dump does not load back: %s\n%s", errstr, d1);
            abort();
        }
        char *d2 = fuzz_dump(c2, &len2);
        kf_conf_t *c3 = fuzz_conf_new();
        if (kf_conf_load_string(c3, d2, len2, "dump2", errstr, sizeof(errstr)) != KF_OK)
            abort();
        char *d3 = fuzz_dump(c3, &len3);
        if (len2 != len3 || memcmp(d2, d3, len2) != 0) {
            fprintf(stderr, "dump is not a fixed point:\n%s---\n%s", d2, d3);
            abort();
        }
        free(d1);
        free(d2);
        free(d3);
        kf_conf_destroy(c2);
        kf_conf_destroy(c3);
    }
    kf_conf_destroy(conf);
    return 0;
}
