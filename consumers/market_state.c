/*
 * market_state.c: the latest MarketTick per symbol, in memory. A chained hash table under one
 * mutex: the follower thread writes, enrichment reads (copies out), and both are short, so a
 * single lock is simpler than anything finer and never the bottleneck next to PostgreSQL.
 */
#include "kf_enrich.h"

#include "kf_avro.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct kf_market_node {
    struct kf_market_node *next;
    kf_market_entry_t entry;
} kf_market_node_t;

struct kf_market_state {
    pthread_mutex_t mu;
    kf_market_node_t **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};

/* FNV-1a: symbols are short ASCII strings. */
static size_t
kf_market_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)h;
}

kf_err_t
kf_market_state_new(kf_market_state_t **out_ms, char *errstr, size_t errstr_size)
{
    KF_ASSERT(out_ms);
    kf_market_state_t *ms = calloc(1, sizeof(*ms));
    if (ms)
        ms->buckets = calloc(256, sizeof(*ms->buckets));
    if (!ms || !ms->buckets) {
        free(ms);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    ms->nbuckets = 256;
    pthread_mutex_init(&ms->mu, NULL);
    *out_ms = ms;
    return KF_OK;
}

void
kf_market_state_destroy(kf_market_state_t *ms)
{
    if (!ms)
        return;
    for (size_t b = 0; b < ms->nbuckets; b++) {
        kf_market_node_t *n = ms->buckets[b];
        while (n) {
            kf_market_node_t *next = n->next;
            free(n);
            n = next;
        }
    }
    free(ms->buckets);
    pthread_mutex_destroy(&ms->mu);
    free(ms);
}

/* Doubles the bucket array when the load passes 1; on allocation failure the table just
 * stays slower. Called with the lock held. */
static void
kf_market_grow(kf_market_state_t *ms)
{
    size_t nb = ms->nbuckets * 2;
    kf_market_node_t **nbk = calloc(nb, sizeof(*nbk));
    if (!nbk)
        return;
    for (size_t b = 0; b < ms->nbuckets; b++) {
        kf_market_node_t *n = ms->buckets[b];
        while (n) {
            kf_market_node_t *next = n->next;
            size_t h = kf_market_hash(n->entry.symbol) & (nb - 1);
            n->next = nbk[h];
            nbk[h] = n;
            n = next;
        }
    }
    free(ms->buckets);
    ms->buckets = nbk;
    ms->nbuckets = nb;
}

static kf_market_node_t **
kf_market_find(kf_market_state_t *ms, const char *symbol)
{
    kf_market_node_t **pn = &ms->buckets[kf_market_hash(symbol) & (ms->nbuckets - 1)];
    while (*pn && strcmp((*pn)->entry.symbol, symbol))
        pn = &(*pn)->next;
    return pn;
}

int
kf_market_state_apply(kf_market_state_t *ms, const kf_market_entry_t *e)
{
    KF_ASSERT(ms && e && e->symbol[0]);
    int applied = 0;
    pthread_mutex_lock(&ms->mu);
    kf_market_node_t **pn = kf_market_find(ms, e->symbol);
    if (*pn) {
        const kf_market_entry_t *cur = &(*pn)->entry;
        /* Event time decides; the offset only breaks ties (same instant sent twice). */
        if (e->event_time_ms > cur->event_time_ms ||
            (e->event_time_ms == cur->event_time_ms && e->offset > cur->offset)) {
            (*pn)->entry = *e;
            applied = 1;
        }
    } else {
        kf_market_node_t *n = malloc(sizeof(*n));
        if (!n) {
            applied = -1;
        } else {
            n->entry = *e;
            n->next = NULL;
            *pn = n;
            ms->count++;
            applied = 1;
            if (ms->count > ms->nbuckets)
                kf_market_grow(ms);
        }
    }
    pthread_mutex_unlock(&ms->mu);
    return applied;
}

int
kf_market_state_remove(kf_market_state_t *ms, const char *symbol, int32_t partition, int64_t offset)
{
    KF_ASSERT(ms && symbol);
    int removed = 0;
    pthread_mutex_lock(&ms->mu);
    kf_market_node_t **pn = kf_market_find(ms, symbol);
    /* Only a tombstone written after the stored tick deletes it (replays see them in order;
     * a tick from another partition, after a repartition, is left alone). */
    if (*pn && (*pn)->entry.partition == partition && offset > (*pn)->entry.offset) {
        kf_market_node_t *dead = *pn;
        *pn = dead->next;
        free(dead);
        ms->count--;
        removed = 1;
    }
    pthread_mutex_unlock(&ms->mu);
    return removed;
}

kf_err_t
kf_market_state_get(kf_market_state_t *ms, const char *symbol, kf_market_entry_t *out)
{
    KF_ASSERT(ms && symbol && out);
    kf_err_t err = KF_ERR_NOT_FOUND;
    pthread_mutex_lock(&ms->mu);
    kf_market_node_t **pn = kf_market_find(ms, symbol);
    if (*pn) {
        *out = (*pn)->entry;
        err = KF_OK;
    }
    pthread_mutex_unlock(&ms->mu);
    return err;
}

size_t
kf_market_state_count(kf_market_state_t *ms)
{
    KF_ASSERT(ms);
    pthread_mutex_lock(&ms->mu);
    size_t n = ms->count;
    pthread_mutex_unlock(&ms->mu);
    return n;
}

/* Copies a string field into a fixed buffer; 0 when it does not fit. */
static int
kf_market_copy(char *dst, size_t size, const char *src, size_t len)
{
    if (len >= size)
        return 0;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return 1;
}

kf_err_t
kf_market_state_apply_record(kf_market_state_t *ms,
                             const kf_kafka_record_t *rec,
                             int *out_applied,
                             char *errstr,
                             size_t errstr_size)
{
    KF_ASSERT(ms && rec);
    if (out_applied)
        *out_applied = 0;
    kf_market_entry_t e;
    memset(&e, 0, sizeof(e));
    if (!rec->key || rec->key_len == 0 ||
        !kf_market_copy(e.symbol, sizeof(e.symbol), rec->key, rec->key_len) ||
        memchr(rec->key, '\0', rec->key_len))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "market record without a usable key (symbol)");
    if (!rec->value) {
        int removed = kf_market_state_remove(ms, e.symbol, rec->partition, rec->offset);
        if (out_applied)
            *out_applied = removed;
        return KF_OK;
    }
    avro_value_t v;
    kf_err_t err =
        kf_avro_decode(NULL, rec->value, rec->value_len, kf_avro_schema_get(KF_AVRO_MARKET_TICK),
                       &v, NULL, errstr, errstr_size);
    if (err)
        return err;
    const char *sym = NULL, *source = "";
    err = kf_avro_get_string(&v, "symbol", &sym);
    if (!err)
        err = kf_avro_get_double(&v, "price", &e.price);
    if (!err)
        err = kf_avro_get_long(&v, "event_time", &e.event_time_ms);
    if (err) {
        avro_value_decref(&v);
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "MarketTick without symbol, price or event_time");
    }
    e.has_bid = kf_avro_get_double(&v, "bid", &e.bid) == KF_OK;
    e.has_ask = kf_avro_get_double(&v, "ask", &e.ask) == KF_OK;
    kf_avro_get_double(&v, "volume", &e.volume);
    kf_avro_get_string(&v, "source", &source);
    if (strcmp(sym, e.symbol))
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "MarketTick symbol '%.32s' differs from its key '%s'", sym, e.symbol);
    else if (!(e.price > 0) || !isfinite(e.price) || (e.has_bid && !isfinite(e.bid)) ||
             (e.has_ask && !isfinite(e.ask)) || !isfinite(e.volume))
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "MarketTick %s: price must be > 0 and numbers finite", e.symbol);
    else if (!kf_market_copy(e.source, sizeof(e.source), source, strlen(source)))
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "MarketTick %s: source longer than %d bytes", e.symbol,
                         KF_MARKET_SOURCE_MAX);
    avro_value_decref(&v);
    if (err)
        return err;
    snprintf(e.topic, sizeof(e.topic), "%s", rec->topic ? rec->topic : "");
    e.partition = rec->partition;
    e.offset = rec->offset;
    int applied = kf_market_state_apply(ms, &e);
    if (applied < 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    if (out_applied)
        *out_applied = applied;
    return KF_OK;
}
