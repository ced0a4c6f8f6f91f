/*
 * kf_avro JSON mapping and record field accessors.
 *
 * The JSON shape is the one the pipeline speaks (see kf_avro.h): unions are their plain
 * branch value rather than Avro's {"type": value} wrapper, so an API body can be turned
 * into an InferenceRequest without rewriting. The same filler applies schema defaults,
 * which is how kf_avro_resolve() fills reader fields that an older writer did not have.
 */
#include "avro_int.h"

#include <math.h>
#include <string.h>

static kf_err_t
kf_avro_jfail(
    struct kf_avro_path *path, char *errstr, size_t errstr_size, kf_err_t err, const char *what)
{
    return kf_err_set(errstr, errstr_size, err, "%s: %s", path->len ? path->buf : "(value)", what);
}

/* ---- JSON -> value --------------------------------------------------------------------- */

/* How well a JSON value fits a union branch: 2 exactly, 1 by conversion, 0 not at all. */
static int
kf_avro_json_fits(avro_schema_t s, const json_t *j)
{
    s = kf_avro_deref(s);
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        return json_is_null(j) ? 2 : 0;
    case AVRO_BOOLEAN:
        return json_is_boolean(j) ? 2 : 0;
    case AVRO_INT32:
        return json_is_integer(j) && json_integer_value(j) >= INT32_MIN &&
                       json_integer_value(j) <= INT32_MAX
                   ? 2
                   : 0;
    case AVRO_INT64:
        return json_is_integer(j) ? 2 : 0;
    case AVRO_FLOAT:
    case AVRO_DOUBLE:
        return json_is_real(j) ? 2 : json_is_integer(j) ? 1 : 0;
    case AVRO_STRING:
        return json_is_string(j) ? 2 : 0;
    case AVRO_BYTES:
    case AVRO_FIXED:
        return json_is_string(j) ? 1 : 0;
    case AVRO_ENUM:
        return json_is_string(j) && avro_schema_enum_get_by_name(s, json_string_value(j)) >= 0 ? 2
                                                                                               : 0;
    case AVRO_ARRAY:
        return json_is_array(j) ? 2 : 0;
    case AVRO_MAP:
        return json_is_object(j) ? 1 : 0;
    case AVRO_RECORD:
        return json_is_object(j) ? 2 : 0;
    default:
        return 0;
    }
}

/* Bytes and fixed: each code point 0-255 of the (UTF-8) JSON string is one byte. */
static kf_err_t
kf_avro_json_bytes(const json_t *j,
                   unsigned char **out,
                   size_t *out_len,
                   struct kf_avro_path *path,
                   char *errstr,
                   size_t errstr_size)
{
    const unsigned char *s = (const unsigned char *)json_string_value(j);
    size_t n = json_string_length(j), k = 0;
    unsigned char *buf = malloc(n + 1);
    if (!buf)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n;) {
        /* jansson guarantees valid UTF-8; only U+0000..U+00FF are allowed here. */
        if (s[i] < 0x80) {
            buf[k++] = s[i++];
        } else if ((s[i] == 0xC2 || s[i] == 0xC3) && i + 1 < n) {
            buf[k++] = (unsigned char)(((s[i] & 0x03) << 6) | (s[i + 1] & 0x3F));
            i += 2;
        } else {
            free(buf);
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "bytes string has a code point above U+00FF");
        }
    }
    *out = buf;
    *out_len = k;
    return KF_OK;
}

static kf_err_t
kf_avro_json_record(const kf_avro_schema_t *ks,
                    avro_schema_t s,
                    const json_t *j,
                    avro_value_t *v,
                    struct kf_avro_path *path,
                    char *errstr,
                    size_t errstr_size)
{
    const char *key;
    json_t *jv;
    kf_err_t err = KF_OK;

    if (!json_is_object(j))
        return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG, "expected an object");
    /* Unknown keys are typos or version skew: say so instead of silently dropping data. */
    json_object_foreach((json_t *)j, key, jv)
    {
        if (avro_schema_record_field_get_index(s, key) < 0) {
            char why[160];
            snprintf(why, sizeof(why), "unknown field \"%.100s\"", key);
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG, why);
        }
    }
    for (size_t i = 0; i < avro_schema_record_size(s) && !err; i++) {
        const char *fname = avro_schema_record_field_name(s, (int)i);
        avro_value_t fv;
        size_t mark = kf_avro_path_push(path, ".%s", fname);
        const json_t *fj = json_object_get(j, fname);
        if (!fj)
            fj = kf_avro_field_default(ks, s, fname);
        if (!fj)
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "missing required field");
        if (avro_value_get_by_index(v, i, &fv, NULL) != 0)
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INTERNAL, avro_strerror());
        err = kf_avro_json_fill(ks, avro_schema_record_field_get_by_index(s, (int)i), fj, &fv, path,
                                errstr, errstr_size);
        if (!err)
            kf_avro_path_pop(path, mark);
    }
    return err;
}

kf_err_t
kf_avro_json_fill(const kf_avro_schema_t *ks,
                  avro_schema_t schema,
                  const json_t *j,
                  avro_value_t *v,
                  struct kf_avro_path *path,
                  char *errstr,
                  size_t errstr_size)
{
    avro_schema_t s = kf_avro_deref(schema);
    int rc = 0;
    kf_err_t err = KF_OK;

    switch (avro_typeof(s)) {
    case AVRO_NULL:
        if (!json_is_null(j))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG, "expected null");
        rc = avro_value_set_null(v);
        break;
    case AVRO_BOOLEAN:
        if (!json_is_boolean(j))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "expected true or false");
        rc = avro_value_set_boolean(v, json_is_true(j));
        break;
    case AVRO_INT32:
        if (!kf_avro_json_fits(s, j))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "expected a 32-bit integer");
        rc = avro_value_set_int(v, (int32_t)json_integer_value(j));
        break;
    case AVRO_INT64:
        if (!json_is_integer(j))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "expected an integer");
        rc = avro_value_set_long(v, (int64_t)json_integer_value(j));
        break;
    case AVRO_FLOAT:
    case AVRO_DOUBLE:
        if (!json_is_number(j))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "expected a number");
        rc = avro_typeof(s) == AVRO_FLOAT ? avro_value_set_float(v, (float)json_number_value(j))
                                          : avro_value_set_double(v, json_number_value(j));
        break;
    case AVRO_STRING:
        if (!json_is_string(j))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "expected a string");
        if (memchr(json_string_value(j), '\0', json_string_length(j)))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "string contains a NUL character");
        /* avro-c string sizes count the terminating NUL. */
        rc = avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1);
        break;
    case AVRO_BYTES:
    case AVRO_FIXED: {
        unsigned char *buf;
        size_t n;
        if (!json_is_string(j))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "expected a string of bytes");
        if ((err = kf_avro_json_bytes(j, &buf, &n, path, errstr, errstr_size)))
            return err;
        if (avro_typeof(s) == AVRO_FIXED && (int64_t)n != avro_schema_fixed_size(s)) {
            free(buf);
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "wrong number of bytes for fixed");
        }
        rc = avro_typeof(s) == AVRO_FIXED ? avro_value_set_fixed(v, buf, n)
                                          : avro_value_set_bytes(v, buf, n);
        free(buf);
        break;
    }
    case AVRO_ENUM: {
        int idx = json_is_string(j) ? avro_schema_enum_get_by_name(s, json_string_value(j)) : -1;
        if (idx < 0) {
            char why[256];
            int len = snprintf(why, sizeof(why), "expected one of");
            for (int i = 0; i < avro_schema_enum_number_of_symbols(s) && len < 200; i++)
                len += snprintf(why + len, sizeof(why) - (size_t)len, " %s",
                                avro_schema_enum_get(s, i));
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG, why);
        }
        rc = avro_value_set_enum(v, idx);
        break;
    }
    case AVRO_ARRAY: {
        if (!json_is_array(j))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "expected an array");
        avro_schema_t items = avro_schema_array_items(s);
        for (size_t i = 0; i < json_array_size(j) && !err; i++) {
            avro_value_t iv;
            size_t mark = kf_avro_path_push(path, "[%zu]", i);
            if (avro_value_append(v, &iv, NULL) != 0)
                return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_NOMEM, avro_strerror());
            err =
                kf_avro_json_fill(ks, items, json_array_get(j, i), &iv, path, errstr, errstr_size);
            if (!err)
                kf_avro_path_pop(path, mark);
        }
        break;
    }
    case AVRO_MAP: {
        const char *key;
        json_t *jv;
        if (!json_is_object(j))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "expected an object (map)");
        avro_schema_t values = avro_schema_map_values(s);
        json_object_foreach((json_t *)j, key, jv)
        {
            avro_value_t mv;
            size_t mark = kf_avro_path_push(path, ".%s", key);
            if (avro_value_add(v, key, &mv, NULL, NULL) != 0)
                return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_NOMEM, avro_strerror());
            if ((err = kf_avro_json_fill(ks, values, jv, &mv, path, errstr, errstr_size)))
                return err;
            kf_avro_path_pop(path, mark);
        }
        break;
    }
    case AVRO_RECORD:
        return kf_avro_json_record(ks, s, j, v, path, errstr, errstr_size);
    case AVRO_UNION: {
        int best = -1, best_score = 0;
        for (size_t i = 0; i < avro_schema_union_size(s); i++) {
            int score = kf_avro_json_fits(avro_schema_union_branch(s, (int)i), j);
            if (score > best_score) {
                best = (int)i;
                best_score = score;
            }
        }
        if (best < 0) {
            char why[256];
            int len = snprintf(why, sizeof(why), "value matches no branch of the union (");
            for (size_t i = 0; i < avro_schema_union_size(s) && len < 200; i++)
                len += snprintf(
                    why + len, sizeof(why) - (size_t)len, "%s%s", i ? " | " : "",
                    avro_schema_type_name(kf_avro_deref(avro_schema_union_branch(s, (int)i))));
            snprintf(why + len, sizeof(why) - (size_t)len, ")");
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG, why);
        }
        avro_value_t bv;
        if (avro_value_set_branch(v, best, &bv) != 0)
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INTERNAL, avro_strerror());
        return kf_avro_json_fill(ks, avro_schema_union_branch(s, best), j, &bv, path, errstr,
                                 errstr_size);
    }
    default:
        return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_UNSUPPORTED, "unsupported type");
    }
    if (rc != 0)
        return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INTERNAL, avro_strerror());
    return err;
}

kf_err_t
kf_avro_from_json(const kf_avro_schema_t *schema,
                  const json_t *json,
                  avro_value_t *out_value,
                  char *errstr,
                  size_t errstr_size)
{
    struct kf_avro_path path = {.len = 0};
    avro_value_t v;
    if (!schema || !json || !out_value)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "NULL argument");
    kf_err_t err = kf_avro_value_new(schema, &v, errstr, errstr_size);
    if (err)
        return err;
    const char *short_name = avro_schema_name(schema->avro);
    kf_avro_path_push(&path, "%s", short_name ? short_name : schema->name);
    err = kf_avro_json_fill(schema, schema->avro, json, &v, &path, errstr, errstr_size);
    if (err) {
        avro_value_decref(&v);
        return err;
    }
    *out_value = v;
    return KF_OK;
}

/* ---- value -> JSON --------------------------------------------------------------------- */

/* Bytes as a JSON string of code points 0-255 (the inverse of kf_avro_json_bytes). */
static json_t *
kf_avro_bytes_json(const unsigned char *p, size_t n)
{
    char *s = malloc(2 * n + 1);
    size_t k = 0;
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x80) {
            s[k++] = (char)p[i];
        } else {
            s[k++] = (char)(0xC0 | (p[i] >> 6));
            s[k++] = (char)(0x80 | (p[i] & 0x3F));
        }
    }
    json_t *j = json_stringn(s, k);
    free(s);
    return j;
}

static kf_err_t
kf_avro_to_json_rec(
    avro_value_t *v, json_t **out, struct kf_avro_path *path, char *errstr, size_t errstr_size)
{
    avro_schema_t s = kf_avro_deref(avro_value_get_schema(v));
    json_t *j = NULL;
    kf_err_t err = KF_OK;
    int32_t i32 = 0;
    int64_t i64 = 0;
    float f = 0;
    double d = 0;
    const void *buf = NULL;
    size_t size = 0;

    switch (avro_value_get_type(v)) {
    case AVRO_NULL:
        j = json_null();
        break;
    case AVRO_BOOLEAN:
        avro_value_get_boolean(v, &i32);
        j = json_boolean(i32);
        break;
    case AVRO_INT32:
        avro_value_get_int(v, &i32);
        j = json_integer(i32);
        break;
    case AVRO_INT64:
        avro_value_get_long(v, &i64);
        j = json_integer(i64);
        break;
    case AVRO_FLOAT:
    case AVRO_DOUBLE:
        if (avro_value_get_type(v) == AVRO_FLOAT) {
            avro_value_get_float(v, &f);
            d = f;
        } else {
            avro_value_get_double(v, &d);
        }
        if (!isfinite(d))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_FORMAT,
                                 "NaN or infinity has no JSON form");
        j = json_real(d);
        break;
    case AVRO_STRING:
        avro_value_get_string(v, (const char **)&buf, &size);
        j = json_stringn(buf, size ? size - 1 : 0);
        if (!j)
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_FORMAT,
                                 "string is not valid UTF-8");
        break;
    case AVRO_BYTES:
        avro_value_get_bytes(v, &buf, &size);
        j = kf_avro_bytes_json(buf, size);
        break;
    case AVRO_FIXED:
        avro_value_get_fixed(v, &buf, &size);
        j = kf_avro_bytes_json(buf, size);
        break;
    case AVRO_ENUM: {
        avro_value_get_enum(v, &i32);
        const char *sym = avro_schema_enum_get(s, i32);
        if (!sym)
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_FORMAT,
                                 "enum index out of range");
        j = json_string(sym);
        break;
    }
    case AVRO_UNION: {
        avro_value_t bv;
        if (avro_value_get_current_branch(v, &bv) != 0)
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_FORMAT,
                                 "union has no branch selected");
        return kf_avro_to_json_rec(&bv, out, path, errstr, errstr_size);
    }
    case AVRO_RECORD:
    case AVRO_MAP:
    case AVRO_ARRAY: {
        int is_array = avro_value_get_type(v) == AVRO_ARRAY;
        avro_value_get_size(v, &size);
        j = is_array ? json_array() : json_object();
        for (size_t i = 0; j && i < size && !err; i++) {
            avro_value_t cv;
            const char *name = NULL;
            json_t *cj = NULL;
            avro_value_get_by_index(v, i, &cv, &name);
            size_t mark = is_array ? kf_avro_path_push(path, "[%zu]", i)
                                   : kf_avro_path_push(path, ".%s", name ? name : "?");
            if ((err = kf_avro_to_json_rec(&cv, &cj, path, errstr, errstr_size)))
                break;
            kf_avro_path_pop(path, mark);
            if (is_array ? json_array_append_new(j, cj) : json_object_set_new(j, name, cj))
                err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        }
        if (err) {
            json_decref(j);
            return err;
        }
        break;
    }
    default:
        return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_UNSUPPORTED, "unsupported type");
    }
    if (!j)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    *out = j;
    return KF_OK;
}

kf_err_t
kf_avro_to_json(avro_value_t *value, json_t **out_json, char *errstr, size_t errstr_size)
{
    struct kf_avro_path path = {.len = 0};
    if (!value || !out_json)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "NULL argument");
    const char *name = avro_schema_name(kf_avro_deref(avro_value_get_schema(value)));
    kf_avro_path_push(&path, "%s", name ? name : "value");
    return kf_avro_to_json_rec(value, out_json, &path, errstr, errstr_size);
}

/* ---- pre-encode check ------------------------------------------------------------------ */

kf_err_t
kf_avro_value_check(avro_value_t *v, struct kf_avro_path *path, char *errstr, size_t errstr_size)
{
    kf_err_t err = KF_OK;
    size_t size = 0;
    switch (avro_value_get_type(v)) {
    case AVRO_UNION: {
        avro_value_t bv;
        int disc = -1;
        avro_value_get_discriminant(v, &disc);
        if (disc < 0 || avro_value_get_current_branch(v, &bv) != 0)
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "union has no branch selected (set it, or null)");
        return kf_avro_value_check(&bv, path, errstr, errstr_size);
    }
    case AVRO_STRING: {
        const char *s = NULL;
        avro_value_get_string(v, &s, &size);
        if (size && !kf_avro_utf8_ok(s, size - 1))
            return kf_avro_jfail(path, errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "string is not UTF-8 without NUL");
        return KF_OK;
    }
    case AVRO_RECORD:
    case AVRO_MAP:
    case AVRO_ARRAY:
        avro_value_get_size(v, &size);
        for (size_t i = 0; i < size && !err; i++) {
            avro_value_t cv;
            const char *name = NULL;
            avro_value_get_by_index(v, i, &cv, &name);
            size_t mark =
                name ? kf_avro_path_push(path, ".%s", name) : kf_avro_path_push(path, "[%zu]", i);
            if (!(err = kf_avro_value_check(&cv, path, errstr, errstr_size)))
                kf_avro_path_pop(path, mark);
        }
        return err;
    default:
        return KF_OK;
    }
}

/* ---- field setters and getters --------------------------------------------------------- */

/* The value to write for `field`: the field itself, or its union branch of type a or b. */
static kf_err_t
kf_avro_field_slot(avro_value_t *rec,
                   const char *field,
                   avro_type_t a,
                   avro_type_t b,
                   avro_value_t *out,
                   avro_type_t *out_type)
{
    avro_value_t fv;
    if (!rec || !field || avro_value_get_by_name(rec, field, &fv, NULL) != 0)
        return KF_ERR_NOT_FOUND;
    avro_schema_t s = kf_avro_deref(avro_value_get_schema(&fv));
    if (is_avro_union(s)) {
        for (size_t i = 0; i < avro_schema_union_size(s); i++) {
            avro_type_t t = avro_typeof(kf_avro_deref(avro_schema_union_branch(s, (int)i)));
            if (t == a || t == b) {
                if (avro_value_set_branch(&fv, (int)i, out) != 0)
                    return KF_ERR_INTERNAL;
                *out_type = t;
                return KF_OK;
            }
        }
        return KF_ERR_INVALID_ARG;
    }
    if (avro_typeof(s) != a && avro_typeof(s) != b)
        return KF_ERR_INVALID_ARG;
    *out = fv;
    *out_type = avro_typeof(s);
    return KF_OK;
}

kf_err_t
kf_avro_set_null(avro_value_t *rec, const char *field)
{
    avro_value_t v;
    avro_type_t t;
    kf_err_t err = kf_avro_field_slot(rec, field, AVRO_NULL, AVRO_NULL, &v, &t);
    return err ? err : (avro_value_set_null(&v) ? KF_ERR_INTERNAL : KF_OK);
}

kf_err_t
kf_avro_set_string(avro_value_t *rec, const char *field, const char *s)
{
    avro_value_t v;
    avro_type_t t;
    if (!s)
        return kf_avro_set_null(rec, field);
    kf_err_t err = kf_avro_field_slot(rec, field, AVRO_STRING, AVRO_STRING, &v, &t);
    return err ? err : (avro_value_set_string(&v, s) ? KF_ERR_INTERNAL : KF_OK);
}

kf_err_t
kf_avro_set_long(avro_value_t *rec, const char *field, int64_t x)
{
    avro_value_t v;
    avro_type_t t;
    kf_err_t err = kf_avro_field_slot(rec, field, AVRO_INT64, AVRO_INT32, &v, &t);
    if (err)
        return err;
    if (t == AVRO_INT32) {
        if (x < INT32_MIN || x > INT32_MAX)
            return KF_ERR_INVALID_ARG;
        return avro_value_set_int(&v, (int32_t)x) ? KF_ERR_INTERNAL : KF_OK;
    }
    return avro_value_set_long(&v, x) ? KF_ERR_INTERNAL : KF_OK;
}

kf_err_t
kf_avro_set_double(avro_value_t *rec, const char *field, double x)
{
    avro_value_t v;
    avro_type_t t;
    kf_err_t err = kf_avro_field_slot(rec, field, AVRO_DOUBLE, AVRO_FLOAT, &v, &t);
    if (err)
        return err;
    int rc = t == AVRO_FLOAT ? avro_value_set_float(&v, (float)x) : avro_value_set_double(&v, x);
    return rc ? KF_ERR_INTERNAL : KF_OK;
}

kf_err_t
kf_avro_set_bool(avro_value_t *rec, const char *field, int x)
{
    avro_value_t v;
    avro_type_t t;
    kf_err_t err = kf_avro_field_slot(rec, field, AVRO_BOOLEAN, AVRO_BOOLEAN, &v, &t);
    return err ? err : (avro_value_set_boolean(&v, x != 0) ? KF_ERR_INTERNAL : KF_OK);
}

kf_err_t
kf_avro_set_enum(avro_value_t *rec, const char *field, const char *symbol)
{
    avro_value_t v;
    avro_type_t t;
    kf_err_t err = kf_avro_field_slot(rec, field, AVRO_ENUM, AVRO_ENUM, &v, &t);
    if (err)
        return err;
    int idx = symbol
                  ? avro_schema_enum_get_by_name(kf_avro_deref(avro_value_get_schema(&v)), symbol)
                  : -1;
    if (idx < 0)
        return KF_ERR_INVALID_ARG;
    return avro_value_set_enum(&v, idx) ? KF_ERR_INTERNAL : KF_OK;
}

/* The current non-null value of `field`, looking through a union. */
static kf_err_t
kf_avro_field_read(avro_value_t *rec, const char *field, avro_value_t *out)
{
    avro_value_t fv;
    if (!rec || !field || avro_value_get_by_name(rec, field, &fv, NULL) != 0)
        return KF_ERR_NOT_FOUND;
    if (avro_value_get_type(&fv) == AVRO_UNION) {
        avro_value_t bv;
        if (avro_value_get_current_branch(&fv, &bv) != 0)
            return KF_ERR_NOT_FOUND;
        fv = bv;
    }
    if (avro_value_get_type(&fv) == AVRO_NULL)
        return KF_ERR_NOT_FOUND;
    *out = fv;
    return KF_OK;
}

kf_err_t
kf_avro_get_string(avro_value_t *rec, const char *field, const char **out_s)
{
    avro_value_t v;
    size_t size;
    kf_err_t err = kf_avro_field_read(rec, field, &v);
    if (err)
        return err;
    if (avro_value_get_type(&v) != AVRO_STRING)
        return KF_ERR_INVALID_ARG;
    return avro_value_get_string(&v, out_s, &size) ? KF_ERR_INTERNAL : KF_OK;
}

kf_err_t
kf_avro_get_long(avro_value_t *rec, const char *field, int64_t *out_v)
{
    avro_value_t v;
    int32_t i32 = 0;
    kf_err_t err = kf_avro_field_read(rec, field, &v);
    if (err)
        return err;
    switch (avro_value_get_type(&v)) {
    case AVRO_INT32:
        avro_value_get_int(&v, &i32);
        *out_v = i32;
        return KF_OK;
    case AVRO_INT64:
        return avro_value_get_long(&v, out_v) ? KF_ERR_INTERNAL : KF_OK;
    default:
        return KF_ERR_INVALID_ARG;
    }
}

kf_err_t
kf_avro_get_double(avro_value_t *rec, const char *field, double *out_v)
{
    avro_value_t v;
    float f = 0;
    kf_err_t err = kf_avro_field_read(rec, field, &v);
    if (err)
        return err;
    switch (avro_value_get_type(&v)) {
    case AVRO_FLOAT:
        avro_value_get_float(&v, &f);
        *out_v = f;
        return KF_OK;
    case AVRO_DOUBLE:
        return avro_value_get_double(&v, out_v) ? KF_ERR_INTERNAL : KF_OK;
    default:
        return KF_ERR_INVALID_ARG;
    }
}

kf_err_t
kf_avro_get_enum(avro_value_t *rec, const char *field, const char **out_symbol)
{
    avro_value_t v;
    int idx = -1;
    kf_err_t err = kf_avro_field_read(rec, field, &v);
    if (err)
        return err;
    if (avro_value_get_type(&v) != AVRO_ENUM)
        return KF_ERR_INVALID_ARG;
    avro_value_get_enum(&v, &idx);
    *out_symbol = avro_schema_enum_get(kf_avro_deref(avro_value_get_schema(&v)), idx);
    return *out_symbol ? KF_OK : KF_ERR_INTERNAL;
}
