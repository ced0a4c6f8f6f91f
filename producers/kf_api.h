/*
 * kf_api: the HTTP front door of the pipeline (`kinfer api`), on libmicrohttpd.
 *
 *   kf_conf_t *conf = kf_conf_new();
 *   kf_api_conf_register(conf, errstr, sizeof(errstr));   // api.*, topics.*, pg.* keys
 *   ... kf_conf_load_file / kf_conf_load_env / kf_conf_set ...
 *   kf_api_t *api;
 *   if (kf_api_new(conf, &api, errstr, sizeof(errstr)) != KF_OK) ...
 *   printf("listening on port %d\n", kf_api_port(api));
 *   ... until SIGTERM ...
 *   kf_api_shutdown(api);   // stop accepting, finish in-flight requests, flush Kafka
 *   kf_api_destroy(api);
 *
 * Routes (docs/api.md, docs/openapi.json): POST /v1/requests, GET and DELETE
 * /v1/requests/{id}, POST /v1/batches, GET /v1/batches/{id}, GET /v1/batches/{id}/results,
 * GET /healthz, /readyz, /metrics.
 *
 * Guarantees: a request is answered 202 only after Kafka acknowledged (acks=all) its
 * InferenceRequest record on topics.requests; when the delivery fails or times out
 * (api.produce.timeout) the answer is 503 with Retry-After and the request's row is deleted.
 * An Idempotency-Key maps to one request per tenant across restarts and across API processes
 * sharing the database (unique index of 0003). API keys are looked up by SHA-256 in
 * api_keys and cached for api.auth.cache.ttl, so a revoked key keeps working for at most that
 * long on each process.
 *
 * Threads: libmicrohttpd's pool (api.threads, epoll) reads requests and suspends each one
 * while a worker (api.workers, one PostgreSQL connection each) validates, stores and produces
 * it; one thread serves librdkafka's delivery reports and resumes the connection.
 *
 * Thread-safety: kf_api_new/shutdown/destroy from one controlling thread; kf_api_port and
 * kf_api_ready from any thread.
 */
#ifndef KF_API_H
#define KF_API_H

#include <signal.h>
#include <stddef.h>

#include "kf_conf.h"
#include "kf_err.h"
#include "kf_pg.h"

typedef struct kf_api kf_api_t;

/* The api.* keys (listen address, threads, limits, caches, timeouts). */
extern const kf_conf_prop_t kf_api_conf_props[];
/* topics.requests, topics.audit, topics.control with the pipeline defaults. */
extern const kf_conf_prop_t kf_api_topic_conf_props[];

/* Registers the api table, and the topics and pg tables unless another stage already
 * registered those keys (`kinfer run` holds every stage in one kf_conf_t). */
kf_err_t kf_api_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size);

/* Connects to PostgreSQL (api.workers connections), creates the producer (and, when
 * api.topics.create is true, the topics), starts listening. conf is read during the call
 * only. The Kafka bootstrap is kafka.bootstrap.servers, else $KINFER_KAFKA_BROKERS.
 * Errors: KF_ERR_CONFIG (bad or missing keys: pg.dsn, brokers), KF_ERR_UNAVAILABLE /
 * KF_ERR_DB (PostgreSQL), KF_ERR_KAFKA (topic creation), KF_ERR_IO (cannot bind). */
kf_err_t kf_api_new(const kf_conf_t *conf, kf_api_t **out_api, char *errstr, size_t errstr_size);

/* The bound TCP port (useful with api.listen.port = 0). */
int kf_api_port(const kf_api_t *api);

/* Graceful stop: stops accepting connections, waits up to api.shutdown.timeout for
 * requests in flight (including their Kafka acknowledgements), flushes the producer.
 * Idempotent. */
void kf_api_shutdown(kf_api_t *api);

/* Shuts down if needed and frees. NULL is a no-op. */
void kf_api_destroy(kf_api_t *api);

/* Runs an API until *stop becomes non-zero (e.g. &kf_kafka_stop), then shuts down. */
kf_err_t
kf_api_run(const kf_conf_t *conf, volatile sig_atomic_t *stop, char *errstr, size_t errstr_size);

/* Hex SHA-256 of an API key (what api_keys.key_sha256 stores): out gets 64 hex digits + NUL.
 * KF_ERR_INTERNAL when OpenSSL fails. */
kf_err_t kf_api_key_sha256_hex(const char *key, size_t len, char out[65]);

/* ---- administration (`kinfer admin`, tests, demo) ----------------------------------------- */

/* Inserts a tenant with a fresh webhook secret ('whsec_' + base64 of 32 random bytes), which
 * goes to out_secret (>= 64 bytes). rate <= 0 / burst <= 0 take the table defaults (100/200).
 * KF_ERR_EXISTS when the id is taken; KF_ERR_INVALID_ARG for an empty id or name. */
kf_err_t kf_api_admin_create_tenant(kf_pg_t *pg,
                                    const char *tenant_id,
                                    const char *name,
                                    double rate,
                                    int burst,
                                    char *out_secret,
                                    size_t secret_size,
                                    char *errstr,
                                    size_t errstr_size);

/* Creates an API key for a tenant: out_key (>= 64 bytes) receives "kf_" + 48 hex digits;
 * only its SHA-256 is stored. KF_ERR_NOT_FOUND when the tenant does not exist. */
kf_err_t kf_api_admin_create_key(kf_pg_t *pg,
                                 const char *tenant_id,
                                 const char *label,
                                 char *out_key,
                                 size_t key_size,
                                 char *errstr,
                                 size_t errstr_size);

/* Marks a key revoked (by the key itself). KF_ERR_NOT_FOUND when unknown. API processes
 * notice within api.auth.cache.ttl. */
kf_err_t kf_api_admin_revoke_key(kf_pg_t *pg, const char *key, char *errstr, size_t errstr_size);

/* `kinfer api` and `kinfer admin` (cli/main.c table). */
int kf_cmd_api(int argc, char **argv);
int kf_cmd_admin(int argc, char **argv);

#endif /* KF_API_H */
