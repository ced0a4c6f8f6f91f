/*
 * Unit tests of the enricher's pure rendering (consumers/kf_enrich.h): placeholder
 * substitution and its errors, values never re-rendered, number formatting and the exact
 * market lines that go into prompts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kf_enrich.h"

static const kf_enrich_var_t vars[] = {
    {"customer.name", "Aldridge Family Office"},
    {"prompt", "What is {{customer.name}}'s exposure?"},
    {"market", "- GOLD: no market data"},
    {"empty", ""},
    {"nullv", NULL},
};
#define NVARS (sizeof(vars) / sizeof(vars[0]))

static void
test_render(void **state)
{
    (void)state;
    char *out = NULL, e[256];
    assert_int_equal(kf_enrich_render("Customer: {{customer.name}}\nQ: {{ prompt }}\n{{market}}",
                                      vars, NVARS, &out, e, sizeof(e)),
                     KF_OK);
    /* The client's "{{customer.name}}" inside the prompt stays literal. */
    assert_string_equal(out, "Customer: Aldridge Family Office\n"
                             "Q: What is {{customer.name}}'s exposure?\n"
                             "- GOLD: no market data");
    free(out);
    assert_int_equal(kf_enrich_render("", vars, NVARS, &out, e, sizeof(e)), KF_OK);
    assert_string_equal(out, "");
    free(out);
    assert_int_equal(
        kf_enrich_render("a{{empty}}b{{nullv}}c { {x} } }}", vars, NVARS, &out, e, sizeof(e)),
        KF_OK);
    assert_string_equal(out, "abc { {x} } }}");
    free(out);
    assert_int_equal(kf_enrich_render("no placeholders at all", NULL, 0, &out, e, sizeof(e)),
                     KF_OK);
    assert_string_equal(out, "no placeholders at all");
    free(out);
}

static void
test_render_errors(void **state)
{
    (void)state;
    char *out = (char *)"untouched", e[256];
    assert_int_equal(kf_enrich_render("Hello {{customer.nmae}}!", vars, NVARS, &out, e, sizeof(e)),
                     KF_ERR_NOT_FOUND);
    assert_string_equal(e, "template: unknown placeholder {{customer.nmae}} at byte 6");
    assert_string_equal(out, "untouched");
    assert_int_equal(kf_enrich_render("x {{prompt", vars, NVARS, &out, e, sizeof(e)), KF_ERR_PARSE);
    assert_string_equal(
        e, "template: malformed placeholder at byte 2 (expected {{name}} with a-z 0-9 _ .)");
    assert_int_equal(kf_enrich_render("{{}}", vars, NVARS, &out, e, sizeof(e)), KF_ERR_PARSE);
    assert_int_equal(kf_enrich_render("{{Prompt}}", vars, NVARS, &out, e, sizeof(e)), KF_ERR_PARSE);
    assert_int_equal(kf_enrich_render("{{a b}}", vars, NVARS, &out, e, sizeof(e)), KF_ERR_PARSE);
}

static void
test_numbers(void **state)
{
    (void)state;
    char b[40];
    assert_string_equal(kf_enrich_fmt_num(505.45, b, sizeof(b)), "505.45");
    assert_string_equal(kf_enrich_fmt_num(0.1, b, sizeof(b)), "0.1");
    assert_string_equal(kf_enrich_fmt_num(15978, b, sizeof(b)), "15978");
    assert_string_equal(kf_enrich_fmt_num(1e21, b, sizeof(b)), "1e+21");
    assert_string_equal(kf_enrich_fmt_num(-0.02, b, sizeof(b)), "-0.02");
    /* 1/3 needs 17 digits to read back exactly. */
    assert_string_equal(kf_enrich_fmt_num(1.0 / 3.0, b, sizeof(b)), "0.33333333333333331");
    assert_true(strtod(kf_enrich_fmt_num(0.1 + 0.2, b, sizeof(b)), NULL) == 0.1 + 0.2);
}

static void
test_market_lines(void **state)
{
    (void)state;
    kf_market_entry_t m;
    memset(&m, 0, sizeof(m));
    snprintf(m.symbol, sizeof(m.symbol), "REDI");
    m.price = 505.45;
    m.has_bid = 1;
    m.bid = 505.4;
    m.has_ask = 1;
    m.ask = 505.5;
    m.volume = 2700;
    m.event_time_ms = 1793370600886LL;
    char *text = NULL;
    assert_int_equal(kf_enrich_market_line("REDI", &m, &text), KF_OK);
    assert_string_equal(text, "- REDI: price 505.45, bid 505.4, ask 505.5, volume 2700 at "
                              "2026-10-30T14:30:00.886Z");
    m.has_bid = 0;
    m.has_ask = 0;
    m.volume = 0;
    free(text);
    text = NULL;
    assert_int_equal(kf_enrich_market_line("REDI", &m, &text), KF_OK);
    assert_int_equal(kf_enrich_market_line("ZZZ", NULL, &text), KF_OK);
    assert_string_equal(text, "- REDI: price 505.45, bid n/a, ask n/a, volume 0 at "
                              "2026-10-30T14:30:00.886Z- ZZZ: no market data");
    free(text);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_render_errors),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_market_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
