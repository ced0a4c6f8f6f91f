/*
 * unicode.c: UTF-8 coding and code point classification for the tokenizer.
 *
 * Classification is a binary search over the generated run table (about 2,200 runs), with
 * a precomputed answer for ASCII because most prompt text is ASCII.
 */
#include "unicode_int.h"

uint32_t
kf_utf8_decode(const uint8_t *s, size_t n, size_t *out_len)
{
    uint8_t b0 = s[0];
    *out_len = 1;
    if (b0 < 0x80)
        return b0;
    size_t len;
    uint32_t cp, min;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2, cp = b0 & 0x1F, min = 0x80;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3, cp = b0 & 0x0F, min = 0x800;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4, cp = b0 & 0x07, min = 0x10000;
    } else {
        return KF_UTF8_INVALID; /* continuation byte, C0/C1 or F5..FF */
    }
    if (n < len)
        return KF_UTF8_INVALID;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return KF_UTF8_INVALID;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* Overlong forms, UTF-16 surrogates and values past U+10FFFF are not text. */
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return KF_UTF8_INVALID;
    *out_len = len;
    return cp;
}

size_t
kf_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t
kf_utf8_lead_len(uint8_t b)
{
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[b >> 4];
}

static int
cat_search(uint32_t cp)
{
    /* Last run whose start is <= cp. */
    size_t lo = 0, hi = kf_unicode_cat_runs_n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((kf_unicode_cat_runs[mid] >> 3) <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return (int)(kf_unicode_cat_runs[lo] & 7u);
}

int
kf_unicode_cat(uint32_t cp)
{
    if (cp == KF_UTF8_INVALID)
        cp = 0xFFFD;
    if (cp > 0x10FFFF)
        return KF_UCAT_NONE;
    return cat_search(cp);
}

static int
in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid][0])
            hi = mid;
        else if (cp > r[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

int
kf_unicode_is_ws(uint32_t cp)
{
    return in_ranges(kf_unicode_ws_ranges, kf_unicode_ws_ranges_n, cp);
}

int
kf_unicode_in_dsllm_letters(uint32_t cp)
{
    return in_ranges(kf_unicode_dsllm_letter_ranges, kf_unicode_dsllm_letter_ranges_n, cp);
}

uint8_t
kf_unicode_flags(uint32_t cp)
{
    if (cp < 0x80) {
        /* ASCII answers are fixed; spell them out instead of searching. */
        if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x20)
            return (uint8_t)((cp == 0x20 ? KF_UCAT_Z : KF_UCAT_C) | KF_UFLAG_WS);
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
            return KF_UCAT_L;
        if (cp >= '0' && cp <= '9')
            return KF_UCAT_N;
        if (cp < 0x20 || cp == 0x7F)
            return KF_UCAT_C;
        if (cp == '$' || cp == '+' || cp == '<' || cp == '=' || cp == '>' || cp == '^' ||
            cp == '`' || cp == '|' || cp == '~')
            return KF_UCAT_S;
        return KF_UCAT_P;
    }
    uint8_t f = (uint8_t)kf_unicode_cat(cp);
    if (cp != KF_UTF8_INVALID && kf_unicode_is_ws(cp))
        f |= KF_UFLAG_WS;
    return f;
}
