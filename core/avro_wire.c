/*
 * kf_avro wire safety and schema evolution.
 *
 * kf_avro_wire_validate() walks outside bytes against the writer schema before avro-c reads
 * them. avro-c's binary reader trusts what it reads: a string length of 2^62 becomes a
 * malloc of that size, a block count of 10^18 items of type null loops and allocates that
 * many elements, and an out-of-range enum or union index reaches its value setters. The
 * walk here bounds every length by the bytes left, caps items that occupy no bytes, checks
 * indexes, UTF-8 and trailing bytes, and mirrors avro-c's varint limits, so what it accepts
 * avro-c reads with exactly the same byte boundaries.
 *
 * kf_avro_resolve() implements Avro schema resolution (writer value -> reader value). avro-c
 * 1.11's resolved reader/writer reject a reader field that the writer lacks ("TODO: Handle
 * default values"), which is the one evolution step every producer upgrade needs, so the
 * copy is done here with the defaults kept from the reader schema's JSON.
 */
#include "avro_int.h"

#include <stdarg.h>
#include <string.h>

/* Items that occupy zero bytes (null, empty records) are the only way to make a short input
 * expand without bound; no kinfer record has a legitimate reason for this many. */
#define KF_AVRO_MAX_EMPTY_ITEMS 65536
#define KF_AVRO_MAX_DEPTH       64

struct kf_avro_rd {
    const unsigned char *p;
    size_t len, pos;
    size_t empty_items;
    int depth;
    struct kf_avro_path path;
    char *errstr;
    size_t errstr_size;
};

static kf_err_t
kf_avro_rd_fail(struct kf_avro_rd *rd, kf_err_t err, const char *what)
{
    return kf_err_set(rd->errstr, rd->errstr_size, err, "%s: %s at body byte %zu of %zu",
                      rd->path.len ? rd->path.buf : "(value)", what, rd->pos, rd->len);
}

/* Reads a zig-zag varint of at most `maxbytes` bytes (5 for int, 10 for long, as avro-c). */
static kf_err_t
kf_avro_rd_varint(struct kf_avro_rd *rd, int maxbytes, int64_t *out)
{
    uint64_t u = 0;
    for (int i = 0;; i++) {
        if (i == maxbytes)
            return kf_avro_rd_fail(rd, KF_ERR_PARSE, "varint too long");
        if (rd->pos >= rd->len)
            return kf_avro_rd_fail(rd, KF_ERR_TRUNCATED, "input ends inside a varint");
        unsigned char b = rd->p[rd->pos++];
        /* The last byte may only carry the bits that still fit in 32 or 64 bits; anything
         * more would be an overflowing shift in avro-c. */
        if (i == maxbytes - 1 && (b & 0x80) == 0 && b > (maxbytes == 5 ? 0x0F : 0x01))
            return kf_avro_rd_fail(rd, KF_ERR_PARSE, "varint out of range");
        u |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80))
            break;
    }
    *out = (int64_t)((u >> 1) ^ (0 - (u & 1)));
    return KF_OK;
}

static kf_err_t
kf_avro_rd_skip(struct kf_avro_rd *rd, uint64_t n, const char *what)
{
    if (n > rd->len - rd->pos)
        return kf_avro_rd_fail(rd, KF_ERR_TRUNCATED, what);
    rd->pos += (size_t)n;
    return KF_OK;
}

/* A length prefix (bytes, string, block size): non-negative and within the input. */
static kf_err_t
kf_avro_rd_length(struct kf_avro_rd *rd, uint64_t *out)
{
    int64_t n;
    kf_err_t err = kf_avro_rd_varint(rd, 10, &n);
    if (err)
        return err;
    if (n < 0)
        return kf_avro_rd_fail(rd, KF_ERR_PARSE, "negative length");
    if ((uint64_t)n > rd->len - rd->pos)
        return kf_avro_rd_fail(rd, KF_ERR_TRUNCATED, "length runs past the end of the input");
    *out = (uint64_t)n;
    return KF_OK;
}

static kf_err_t kf_avro_rd_value(struct kf_avro_rd *rd, avro_schema_t s);

/* Arrays and maps: blocks of items until a zero count (negative counts carry a byte size). */
static kf_err_t
kf_avro_rd_blocks(struct kf_avro_rd *rd, avro_schema_t item, int is_map)
{
    kf_err_t err;
    size_t idx = 0;
    for (;;) {
        int64_t count;
        uint64_t n, block_size = 0;
        size_t block_start;
        if ((err = kf_avro_rd_varint(rd, 10, &count)))
            return err;
        if (count == 0)
            return KF_OK;
        if (count == INT64_MIN)
            return kf_avro_rd_fail(rd, KF_ERR_PARSE, "block count out of range");
        n = (uint64_t)(count < 0 ? -count : count);
        if (count < 0 && (err = kf_avro_rd_length(rd, &block_size)))
            return err;
        block_start = rd->pos;
        for (uint64_t i = 0; i < n; i++, idx++) {
            size_t before = rd->pos;
            size_t mark = kf_avro_path_push(&rd->path, "[%zu]", idx);
            if (is_map) {
                uint64_t klen = 0;
                if ((err = kf_avro_rd_length(rd, &klen)))
                    return err;
                if (!kf_avro_utf8_ok((const char *)rd->p + rd->pos, (size_t)klen))
                    return kf_avro_rd_fail(rd, KF_ERR_PARSE, "map key is not UTF-8 without NUL");
                rd->pos += (size_t)klen;
            }
            if ((err = kf_avro_rd_value(rd, item)))
                return err;
            kf_avro_path_pop(&rd->path, mark);
            if (rd->pos == before && ++rd->empty_items > KF_AVRO_MAX_EMPTY_ITEMS)
                return kf_avro_rd_fail(rd, KF_ERR_PARSE, "too many zero-size items");
            /* Every other item consumes a byte, so a huge count simply runs out of input. */
        }
        if (count < 0 && rd->pos - block_start != block_size)
            return kf_avro_rd_fail(rd, KF_ERR_PARSE, "block byte size does not match its items");
    }
}

static kf_err_t
kf_avro_rd_value(struct kf_avro_rd *rd, avro_schema_t s)
{
    kf_err_t err = KF_OK;
    int64_t v = 0;
    uint64_t n;

    s = kf_avro_deref(s);
    if (++rd->depth > KF_AVRO_MAX_DEPTH)
        return kf_avro_rd_fail(rd, KF_ERR_PARSE, "nested too deeply");
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        break;
    case AVRO_BOOLEAN:
        if (rd->pos >= rd->len)
            err = kf_avro_rd_fail(rd, KF_ERR_TRUNCATED, "input ends inside a boolean");
        else if (rd->p[rd->pos] > 1)
            err = kf_avro_rd_fail(rd, KF_ERR_PARSE, "boolean byte is not 0 or 1");
        else
            rd->pos++;
        break;
    case AVRO_INT32:
        err = kf_avro_rd_varint(rd, 5, &v);
        break;
    case AVRO_INT64:
        err = kf_avro_rd_varint(rd, 10, &v);
        break;
    case AVRO_FLOAT:
        err = kf_avro_rd_skip(rd, 4, "input ends inside a float");
        break;
    case AVRO_DOUBLE:
        err = kf_avro_rd_skip(rd, 8, "input ends inside a double");
        break;
    case AVRO_BYTES:
        if (!(err = kf_avro_rd_length(rd, &n)))
            rd->pos += (size_t)n;
        break;
    case AVRO_STRING:
        if ((err = kf_avro_rd_length(rd, &n)))
            break;
        if (!kf_avro_utf8_ok((const char *)rd->p + rd->pos, (size_t)n))
            err = kf_avro_rd_fail(rd, KF_ERR_PARSE, "string is not UTF-8 without NUL");
        else
            rd->pos += (size_t)n;
        break;
    case AVRO_FIXED:
        err = kf_avro_rd_skip(rd, (uint64_t)avro_schema_fixed_size(s), "input ends inside a fixed");
        break;
    case AVRO_ENUM:
        if ((err = kf_avro_rd_varint(rd, 5, &v)))
            break;
        if (v < 0 || v >= avro_schema_enum_number_of_symbols(s))
            err = kf_avro_rd_fail(rd, KF_ERR_PARSE, "enum index out of range");
        break;
    case AVRO_UNION:
        if ((err = kf_avro_rd_varint(rd, 10, &v)))
            break;
        if (v < 0 || (uint64_t)v >= avro_schema_union_size(s))
            err = kf_avro_rd_fail(rd, KF_ERR_PARSE, "union branch index out of range");
        else
            err = kf_avro_rd_value(rd, avro_schema_union_branch(s, (int)v));
        break;
    case AVRO_ARRAY:
        err = kf_avro_rd_blocks(rd, avro_schema_array_items(s), 0);
        break;
    case AVRO_MAP:
        err = kf_avro_rd_blocks(rd, avro_schema_map_values(s), 1);
        break;
    case AVRO_RECORD:
        for (size_t i = 0; i < avro_schema_record_size(s) && !err; i++) {
            size_t mark =
                kf_avro_path_push(&rd->path, ".%s", avro_schema_record_field_name(s, (int)i));
            err = kf_avro_rd_value(rd, avro_schema_record_field_get_by_index(s, (int)i));
            if (!err)
                kf_avro_path_pop(&rd->path, mark);
        }
        break;
    default:
        err = kf_avro_rd_fail(rd, KF_ERR_INTERNAL, "unsupported schema type");
    }
    rd->depth--;
    return err;
}

kf_err_t
kf_avro_wire_validate(
    avro_schema_t writer, const unsigned char *body, size_t len, char *errstr, size_t errstr_size)
{
    struct kf_avro_rd rd = {.p = body, .len = len, .errstr = errstr, .errstr_size = errstr_size};
    const char *name = avro_schema_name(kf_avro_deref(writer));
    kf_avro_path_push(&rd.path, "%s", name ? name : avro_schema_type_name(writer));
    kf_err_t err = kf_avro_rd_value(&rd, writer);
    if (err)
        return err;
    if (rd.pos != rd.len)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                          "%s: %zu trailing bytes after the value", rd.path.buf, rd.len - rd.pos);
    return KF_OK;
}

/* ---- resolution ---------------------------------------------------------------------- */

struct kf_avro_rs {
    const kf_avro_schema_t *reader;
    struct kf_avro_path path;
    char *errstr;
    size_t errstr_size;
};

static kf_err_t kf_avro_rs_fail(struct kf_avro_rs *rs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static kf_err_t
kf_avro_rs_fail(struct kf_avro_rs *rs, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return kf_err_set(rs->errstr, rs->errstr_size, KF_ERR_FORMAT, "%s: %s", rs->path.buf, why);
}

static int
kf_avro_same_name(avro_schema_t a, avro_schema_t b)
{
    /* The specification matches named types on the unqualified name. */
    const char *na = avro_schema_name(a), *nb = avro_schema_name(b);
    return na && nb && strcmp(na, nb) == 0;
}

/* 2 when the writer type w is read as r unchanged, 1 when by promotion, 0 when not at all. */
static int
kf_avro_match(avro_schema_t w, avro_schema_t r)
{
    avro_type_t tw = avro_typeof(w), tr = avro_typeof(r);
    if (tw == tr) {
        if (tw == AVRO_RECORD || tw == AVRO_ENUM || tw == AVRO_FIXED)
            return kf_avro_same_name(w, r) ? 2 : 0;
        return 2;
    }
    switch (tw) {
    case AVRO_INT32:
        return tr == AVRO_INT64 || tr == AVRO_FLOAT || tr == AVRO_DOUBLE;
    case AVRO_INT64:
        return tr == AVRO_FLOAT || tr == AVRO_DOUBLE;
    case AVRO_FLOAT:
        return tr == AVRO_DOUBLE;
    case AVRO_STRING:
        return tr == AVRO_BYTES;
    case AVRO_BYTES:
        return tr == AVRO_STRING;
    default:
        return 0;
    }
}

static kf_err_t kf_avro_rs_value(struct kf_avro_rs *rs, avro_value_t *w, avro_value_t *r);

static kf_err_t
kf_avro_rs_scalar(struct kf_avro_rs *rs, avro_value_t *w, avro_value_t *r)
{
    avro_type_t tw = avro_value_get_type(w), tr = avro_value_get_type(r);
    int rc = 0;
    int32_t i32;
    int64_t i64;
    float f;
    double d;
    const void *buf;
    size_t size;

    switch (tw) {
    case AVRO_NULL:
        rc = avro_value_set_null(r);
        break;
    case AVRO_BOOLEAN:
        rc = avro_value_get_boolean(w, &i32) || avro_value_set_boolean(r, i32);
        break;
    case AVRO_INT32:
        rc = avro_value_get_int(w, &i32);
        if (tr == AVRO_INT32)
            rc = rc || avro_value_set_int(r, i32);
        else if (tr == AVRO_INT64)
            rc = rc || avro_value_set_long(r, i32);
        else if (tr == AVRO_FLOAT)
            rc = rc || avro_value_set_float(r, (float)i32);
        else
            rc = rc || avro_value_set_double(r, i32);
        break;
    case AVRO_INT64:
        rc = avro_value_get_long(w, &i64);
        if (tr == AVRO_INT64)
            rc = rc || avro_value_set_long(r, i64);
        else if (tr == AVRO_FLOAT)
            rc = rc || avro_value_set_float(r, (float)i64);
        else
            rc = rc || avro_value_set_double(r, (double)i64);
        break;
    case AVRO_FLOAT:
        rc = avro_value_get_float(w, &f);
        if (tr == AVRO_FLOAT)
            rc = rc || avro_value_set_float(r, f);
        else
            rc = rc || avro_value_set_double(r, f);
        break;
    case AVRO_DOUBLE:
        rc = avro_value_get_double(w, &d) || avro_value_set_double(r, d);
        break;
    case AVRO_STRING:
        rc = avro_value_get_string(w, (const char **)&buf, &size);
        if (tr == AVRO_STRING)
            rc = rc || avro_value_set_string_len(r, (const char *)buf, size);
        else /* bytes: without the terminating NUL avro-c counts in strings */
            rc = rc || avro_value_set_bytes(r, (void *)buf, size ? size - 1 : 0);
        break;
    case AVRO_BYTES:
        rc = avro_value_get_bytes(w, &buf, &size);
        if (tr == AVRO_BYTES) {
            rc = rc || avro_value_set_bytes(r, (void *)buf, size);
        } else {
            if (!rc && !kf_avro_utf8_ok(buf, size))
                return kf_avro_rs_fail(rs, "bytes are not UTF-8, cannot read as string");
            char *s = malloc(size + 1);
            if (!s)
                return kf_err_set(rs->errstr, rs->errstr_size, KF_ERR_NOMEM, "out of memory");
            memcpy(s, buf, size);
            s[size] = '\0';
            rc = rc || avro_value_set_string_len(r, s, size + 1);
            free(s);
        }
        break;
    case AVRO_FIXED:
        if (avro_schema_fixed_size(avro_value_get_schema(w)) !=
            avro_schema_fixed_size(avro_value_get_schema(r)))
            return kf_avro_rs_fail(rs, "fixed sizes differ");
        rc = avro_value_get_fixed(w, &buf, &size) || avro_value_set_fixed(r, (void *)buf, size);
        break;
    default:
        return kf_avro_rs_fail(rs, "unexpected type");
    }
    if (rc)
        return kf_err_set(rs->errstr, rs->errstr_size, KF_ERR_INTERNAL, "%s: avro-c: %s",
                          rs->path.buf, avro_strerror());
    return KF_OK;
}

static kf_err_t
kf_avro_rs_record(struct kf_avro_rs *rs, avro_value_t *w, avro_value_t *r)
{
    avro_schema_t rsch = kf_avro_deref(avro_value_get_schema(r));
    size_t nfields = avro_schema_record_size(rsch);
    kf_err_t err = KF_OK;

    /* Reader order drives the copy; writer fields the reader dropped are simply ignored. */
    for (size_t i = 0; i < nfields && !err; i++) {
        const char *fname = avro_schema_record_field_name(rsch, (int)i);
        avro_value_t wf, rf;
        size_t mark = kf_avro_path_push(&rs->path, ".%s", fname);
        if (avro_value_get_by_index(r, i, &rf, NULL) != 0)
            return kf_err_set(rs->errstr, rs->errstr_size, KF_ERR_INTERNAL, "%s: avro-c: %s",
                              rs->path.buf, avro_strerror());
        if (avro_value_get_by_name(w, fname, &wf, NULL) == 0) {
            err = kf_avro_rs_value(rs, &wf, &rf);
        } else {
            json_t *def = kf_avro_field_default(rs->reader, rsch, fname);
            if (!def)
                return kf_avro_rs_fail(rs, "field missing in the writer schema and has no "
                                           "default in the reader");
            err = kf_avro_json_fill(rs->reader, avro_schema_record_field_get_by_index(rsch, (int)i),
                                    def, &rf, &rs->path, rs->errstr, rs->errstr_size);
        }
        if (!err)
            kf_avro_path_pop(&rs->path, mark);
    }
    return err;
}

static kf_err_t
kf_avro_rs_value(struct kf_avro_rs *rs, avro_value_t *w, avro_value_t *r)
{
    avro_schema_t ws = kf_avro_deref(avro_value_get_schema(w));
    avro_schema_t rsch = kf_avro_deref(avro_value_get_schema(r));
    kf_err_t err = KF_OK;

    /* A writer union resolves through the branch it actually holds. */
    if (is_avro_union(ws)) {
        avro_value_t wb;
        if (avro_value_get_current_branch(w, &wb) != 0)
            return kf_avro_rs_fail(rs, "writer union without a branch");
        return kf_avro_rs_value(rs, &wb, r);
    }
    if (is_avro_union(rsch)) {
        /* Pick the first reader branch that reads the writer type as is, else by promotion. */
        int best = -1, best_score = 0;
        for (size_t i = 0; i < avro_schema_union_size(rsch); i++) {
            int score = kf_avro_match(ws, kf_avro_deref(avro_schema_union_branch(rsch, (int)i)));
            if (score > best_score) {
                best = (int)i;
                best_score = score;
            }
        }
        if (best < 0)
            return kf_avro_rs_fail(rs, "writer type %s matches no branch of the reader union",
                                   avro_schema_type_name(ws));
        avro_value_t rb;
        if (avro_value_set_branch(r, best, &rb) != 0)
            return kf_err_set(rs->errstr, rs->errstr_size, KF_ERR_INTERNAL, "%s: avro-c: %s",
                              rs->path.buf, avro_strerror());
        return kf_avro_rs_value(rs, w, &rb);
    }
    if (!kf_avro_match(ws, rsch))
        return kf_avro_rs_fail(rs, "writer type %s cannot be read as %s", avro_schema_type_name(ws),
                               avro_schema_type_name(rsch));

    switch (avro_typeof(ws)) {
    case AVRO_RECORD:
        return kf_avro_rs_record(rs, w, r);
    case AVRO_ENUM: {
        int idx = -1;
        avro_value_get_enum(w, &idx);
        const char *sym = avro_schema_enum_get(ws, idx);
        int ridx = sym ? avro_schema_enum_get_by_name(rsch, sym) : -1;
        if (ridx < 0) {
            /* An unknown symbol takes the reader enum's default, as the spec says. */
            char full[256];
            json_t *def =
                json_object_get(rs->reader->defaults, kf_avro_fullname(rsch, full, sizeof(full)));
            ridx = def ? avro_schema_enum_get_by_name(rsch, json_string_value(def)) : -1;
            if (ridx < 0)
                return kf_avro_rs_fail(rs, "enum symbol %s unknown to the reader", sym ? sym : "?");
        }
        avro_value_set_enum(r, ridx);
        return KF_OK;
    }
    case AVRO_ARRAY:
    case AVRO_MAP: {
        size_t n = 0;
        avro_value_get_size(w, &n);
        for (size_t i = 0; i < n && !err; i++) {
            avro_value_t wi, ri;
            const char *key = NULL;
            size_t mark = kf_avro_path_push(&rs->path, "[%zu]", i);
            avro_value_get_by_index(w, i, &wi, &key);
            int rc = avro_typeof(ws) == AVRO_ARRAY ? avro_value_append(r, &ri, NULL)
                                                   : avro_value_add(r, key, &ri, NULL, NULL);
            if (rc != 0)
                return kf_err_set(rs->errstr, rs->errstr_size, KF_ERR_NOMEM, "%s: avro-c: %s",
                                  rs->path.buf, avro_strerror());
            err = kf_avro_rs_value(rs, &wi, &ri);
            if (!err)
                kf_avro_path_pop(&rs->path, mark);
        }
        return err;
    }
    default:
        return kf_avro_rs_scalar(rs, w, r);
    }
}

kf_err_t
kf_avro_resolve(const kf_avro_schema_t *reader,
                avro_value_t *wval,
                avro_value_t *rval,
                char *errstr,
                size_t errstr_size)
{
    struct kf_avro_rs rs = {.reader = reader, .errstr = errstr, .errstr_size = errstr_size};
    kf_avro_path_push(&rs.path, "%s", reader->name);
    return kf_avro_rs_value(&rs, wval, rval);
}
