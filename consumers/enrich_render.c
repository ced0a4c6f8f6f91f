/*
 * enrich_render.c: the pure half of prompt rendering: `{{placeholder}}` substitution, the
 * number and time formats, and the market lines. No I/O, so the unit tests pin the exact
 * bytes a model will see (docs/enrich.md states the same rules in prose).
 */
#include "kf_enrich.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Appends n bytes to a malloc'd NUL-terminated string (*s may be NULL). */
static kf_err_t
kf_render_cat(char **s, size_t *len, const char *add, size_t n)
{
    char *grown = realloc(*s, *len + n + 1);
    if (!grown)
        return KF_ERR_NOMEM;
    memcpy(grown + *len, add, n);
    *len += n;
    grown[*len] = '\0';
    *s = grown;
    return KF_OK;
}

static int
kf_render_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

kf_err_t
kf_enrich_render(const char *tmpl,
                 const kf_enrich_var_t *vars,
                 size_t nvars,
                 char **out_text,
                 char *errstr,
                 size_t errstr_size)
{
    KF_ASSERT(tmpl && out_text && (vars || !nvars));
    char *out = NULL;
    size_t len = 0;
    kf_err_t err = kf_render_cat(&out, &len, "", 0);
    const char *p = tmpl;
    while (!err && *p) {
        const char *open = strstr(p, "{{");
        if (!open) {
            err = kf_render_cat(&out, &len, p, strlen(p));
            break;
        }
        err = kf_render_cat(&out, &len, p, (size_t)(open - p));
        if (err)
            break;
        const char *q = open + 2;
        while (*q == ' ')
            q++;
        const char *name = q;
        while (kf_render_name_char(*q))
            q++;
        size_t nlen = (size_t)(q - name);
        while (*q == ' ')
            q++;
        if (q[0] != '}' || q[1] != '}' || nlen == 0) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                             "template: malformed placeholder at byte %zu (expected {{name}} "
                             "with a-z 0-9 _ .)",
                             (size_t)(open - tmpl));
            break;
        }
        const char *value = NULL;
        for (size_t i = 0; i < nvars && !value; i++)
            if (strlen(vars[i].name) == nlen && !memcmp(vars[i].name, name, nlen))
                value = vars[i].value ? vars[i].value : "";
        if (!value) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                             "template: unknown placeholder {{%.*s}} at byte %zu", (int)nlen, name,
                             (size_t)(open - tmpl));
            break;
        }
        /* The value is copied, never scanned again: a client's "{{x}}" stays literal. */
        err = kf_render_cat(&out, &len, value, strlen(value));
        p = q + 2;
    }
    if (err) {
        free(out);
        if (err == KF_ERR_NOMEM)
            kf_err_set(errstr, errstr_size, err, "out of memory");
        return err;
    }
    *out_text = out;
    return KF_OK;
}

char *
kf_enrich_fmt_num(double v, char *buf, size_t size)
{
    snprintf(buf, size, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, size, "%.17g", v);
    return buf;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" in UTC. */
static void
kf_render_time(int64_t ms, char *buf, size_t size)
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int frac = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

kf_err_t
kf_enrich_market_line(const char *symbol, const kf_market_entry_t *e, char **text)
{
    KF_ASSERT(symbol && text);
    char line[512], p[40], b[40], a[40], v[40], t[80];
    if (!e) {
        snprintf(line, sizeof(line), "- %s: no market data", symbol);
    } else {
        kf_render_time(e->event_time_ms, t, sizeof(t));
        snprintf(line, sizeof(line), "- %s: price %s, bid %s, ask %s, volume %s at %s", symbol,
                 kf_enrich_fmt_num(e->price, p, sizeof(p)),
                 e->has_bid ? kf_enrich_fmt_num(e->bid, b, sizeof(b)) : "n/a",
                 e->has_ask ? kf_enrich_fmt_num(e->ask, a, sizeof(a)) : "n/a",
                 kf_enrich_fmt_num(e->volume, v, sizeof(v)), t);
    }
    size_t len = *text ? strlen(*text) : 0;
    return kf_render_cat(text, &len, line, strlen(line));
}
