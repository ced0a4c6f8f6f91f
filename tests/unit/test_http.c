/*
 * Unit tests of kf_http against a libmicrohttpd server started in the test on 127.0.0.1 with
 * an ephemeral port: methods, headers, bodies, status codes, the body-size limit, transport
 * errors and the JSON helper.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "kf_http.h"

static struct MHD_Daemon *server;
static unsigned short server_port;

/* Per-request upload accumulator. */
typedef struct upload {
    kf_buf_t body;
} upload_t;

static enum MHD_Result
reply(struct MHD_Connection *conn,
      unsigned int status,
      const char *ctype,
      const char *body,
      size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (ctype)
        MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "X-Reply", "  yes  ");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
handler(void *cls,
        struct MHD_Connection *conn,
        const char *url,
        const char *method,
        const char *version,
        const char *upload_data,
        size_t *upload_data_size,
        void **con_cls)
{
    (void)cls;
    (void)version;
    upload_t *up = *con_cls;
    if (!up) {
        up = calloc(1, sizeof(*up));
        kf_buf_init(&up->body, 0);
        *con_cls = up;
        return MHD_YES;
    }
    if (*upload_data_size) {
        kf_buf_append(&up->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/echo") == 0) {
        /* Echo what arrived as JSON so the client side can assert on every part. */
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        const char *xt = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Test");
        json_t *j =
            json_pack("{s:s, s:s#, s:s?, s:s?}", "method", method, "body",
                      up->body.data ? up->body.data : "", up->body.len, "ctype", ct, "xtest", xt);
        char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        enum MHD_Result ret = reply(conn, 201, "application/json", text, strlen(text));
        free(text);
        json_decref(j);
        return ret;
    }
    if (strcmp(url, "/big") == 0) {
        static char big[100000];
        memset(big, 'b', sizeof(big));
        return reply(conn, 200, "text/plain", big, sizeof(big));
    }
    if (strcmp(url, "/badgateway") == 0)
        return reply(conn, 502, "text/html", "<html>bad gateway</html>", 24);
    if (strcmp(url, "/notjson") == 0)
        return reply(conn, 200, "text/plain", "not json", 8);
    if (strcmp(url, "/empty") == 0)
        return reply(conn, 204, NULL, "", 0);
    if (strcmp(url, "/slow") == 0) {
        sleep(2);
        return reply(conn, 200, "text/plain", "late", 4);
    }
    return reply(conn, 404, "application/json", "{\"error\":\"no route\"}", 20);
}

static void
completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode t)
{
    (void)cls;
    (void)conn;
    (void)t;
    upload_t *up = *con_cls;
    if (up) {
        kf_buf_free(&up->body);
        free(up);
    }
    *con_cls = NULL;
}

static int
setup(void **state)
{
    (void)state;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    server = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                              NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, &addr,
                              MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
    if (!server)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(server, MHD_DAEMON_INFO_BIND_PORT);
    server_port = info->port;
    return server_port ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    MHD_stop_daemon(server);
    return 0;
}

static void
url_of(char *buf, size_t size, const char *path)
{
    snprintf(buf, size, "http://127.0.0.1:%u%s", (unsigned)server_port, path);
}

static void
test_methods(void **state)
{
    (void)state;
    kf_http_t *http;
    char errstr[256] = "";
    assert_int_equal(kf_http_new(NULL, &http, errstr, sizeof(errstr)), KF_OK);
    char url[128];
    url_of(url, sizeof(url), "/echo");
    kf_http_resp_t resp;
    kf_http_resp_init(&resp);
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE"};
    for (size_t i = 0; i < 4; i++) {
        const char *body = i == 0 ? NULL : "a\0b\nc"; /* binary-safe: embedded NUL */
        kf_http_req_t req = {.method = methods[i],
                             .url = url,
                             .headers = (const char *[]){"X-Test: t1", "Content-Type: x/y", NULL},
                             .body = body,
                             .body_len = body ? 5 : 0};
        assert_int_equal(kf_http_do(http, &req, &resp, errstr, sizeof(errstr)), KF_OK);
        assert_int_equal(resp.status, 201);
        json_t *j = json_loadb(resp.body.data, resp.body.len, JSON_ALLOW_NUL, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "method")), methods[i]);
        assert_string_equal(json_string_value(json_object_get(j, "xtest")), "t1");
        json_t *jb = json_object_get(j, "body");
        assert_int_equal(json_string_length(jb), body ? 5 : 0);
        if (body)
            assert_memory_equal(json_string_value(jb), body, 5);
        json_decref(j);
        char v[32];
        assert_int_equal(kf_http_resp_header(&resp, "x-reply", v, sizeof(v)), KF_OK);
        assert_string_equal(v, "yes");
        assert_int_equal(kf_http_resp_header(&resp, "content-type", v, sizeof(v)), KF_OK);
        assert_string_equal(v, "application/json");
        assert_int_equal(kf_http_resp_header(&resp, "x-missing", v, sizeof(v)), KF_ERR_NOT_FOUND);
    }
    kf_http_req_t head = {.method = "HEAD", .url = url};
    assert_int_equal(kf_http_do(http, &head, &resp, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(resp.status, 201);
    assert_int_equal(resp.body.len, 0);
    kf_http_req_t bad = {.method = "PATCH", .url = url};
    assert_int_equal(kf_http_do(http, &bad, &resp, errstr, sizeof(errstr)), KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "kf_http_do: unsupported method 'PATCH'");
    kf_http_resp_free(&resp);
    kf_http_destroy(http);
}

static void
test_status_and_limits(void **state)
{
    (void)state;
    kf_http_opts_t opts = {.max_body_bytes = 50000, .timeout_ms = 300};
    kf_http_t *http;
    char errstr[256] = "";
    assert_int_equal(kf_http_new(&opts, &http, errstr, sizeof(errstr)), KF_OK);
    char url[128];
    kf_http_resp_t resp;
    kf_http_resp_init(&resp);

    url_of(url, sizeof(url), "/nowhere");
    kf_http_req_t req = {.method = "GET", .url = url};
    assert_int_equal(kf_http_do(http, &req, &resp, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(resp.status, 404);
    assert_string_equal(resp.body.data, "{\"error\":\"no route\"}");
    assert_int_equal(kf_http_status_err(resp.status), KF_ERR_NOT_FOUND);

    url_of(url, sizeof(url), "/big");
    assert_int_equal(kf_http_do(http, &req, &resp, errstr, sizeof(errstr)), KF_ERR_LIMIT);
    char want[256];
    snprintf(want, sizeof(want), "GET %s: response larger than 50000 bytes", url);
    assert_string_equal(errstr, want);

    url_of(url, sizeof(url), "/slow");
    assert_int_equal(kf_http_do(http, &req, &resp, errstr, sizeof(errstr)), KF_ERR_TIMEOUT);
    assert_true(kf_err_is_retriable(KF_ERR_TIMEOUT));

    /* A port nobody listens on: bind one, note it, close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", (unsigned)ntohs(a.sin_port));
    assert_int_equal(kf_http_do(http, &req, &resp, errstr, sizeof(errstr)), KF_ERR_UNAVAILABLE);
    assert_non_null(strstr(errstr, "Couldn't connect to server"));
    assert_int_equal(resp.status, 0);

    /* The same client still works after failures. */
    url_of(url, sizeof(url), "/empty");
    assert_int_equal(kf_http_do(http, &req, &resp, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(resp.status, 204);
    kf_http_resp_free(&resp);
    kf_http_destroy(http);

    assert_int_equal(kf_http_status_err(200), KF_OK);
    assert_int_equal(kf_http_status_err(409), KF_ERR_EXISTS);
    assert_int_equal(kf_http_status_err(429), KF_ERR_UNAVAILABLE);
    assert_int_equal(kf_http_status_err(503), KF_ERR_UNAVAILABLE);
    assert_int_equal(kf_http_status_err(400), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_http_status_err(413), KF_ERR_LIMIT);
}

static void
test_json(void **state)
{
    (void)state;
    kf_http_t *http;
    char errstr[256] = "";
    assert_int_equal(kf_http_new(NULL, &http, errstr, sizeof(errstr)), KF_OK);
    char url[128];
    url_of(url, sizeof(url), "/echo");
    json_t *body = json_pack("{s:i, s:s}", "n", 3, "s", "\xc3\xa9");
    json_t *out = NULL;
    long status = 0;
    assert_int_equal(kf_http_json(http, "POST", url, body, &status, &out, errstr, sizeof(errstr)),
                     KF_OK);
    assert_int_equal(status, 201);
    assert_string_equal(json_string_value(json_object_get(out, "ctype")), "application/json");
    assert_string_equal(json_string_value(json_object_get(out, "body")),
                        "{\"n\":3,\"s\":\"\xc3\xa9\"}");
    json_decref(out);
    json_decref(body);

    url_of(url, sizeof(url), "/badgateway");
    assert_int_equal(kf_http_json(http, "GET", url, NULL, &status, &out, errstr, sizeof(errstr)),
                     KF_ERR_UNAVAILABLE);
    assert_int_equal(status, 502);
    assert_null(out);
    assert_non_null(strstr(errstr, "HTTP 502, body is not JSON"));
    assert_non_null(strstr(errstr, "<html>bad gateway</html>"));

    url_of(url, sizeof(url), "/notjson");
    assert_int_equal(kf_http_json(http, "GET", url, NULL, &status, &out, errstr, sizeof(errstr)),
                     KF_ERR_PARSE);

    url_of(url, sizeof(url), "/empty");
    assert_int_equal(kf_http_json(http, "DELETE", url, NULL, &status, &out, errstr, sizeof(errstr)),
                     KF_OK);
    assert_int_equal(status, 204);
    assert_null(out);
    kf_http_destroy(http);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_status_and_limits),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
