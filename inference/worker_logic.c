/*
 * worker_logic.c: the pure decisions of the inference worker (kf_worker.h, first half):
 * per-partition contiguous-offset tracking, dynamic batching and flow control, deadline and
 * cancellation rules, the cancel record parser and the recently-cancelled set. Nothing here
 * touches Kafka or the engine, so every rule is unit tested on its own.
 */
#include "kf_worker.h"

#include "kf_backend.h"
#include "kf_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- offset tracker ---------------------------------------------------------------------- */

typedef struct kf_track_ent {
    int64_t offset;
    int done;
} kf_track_ent_t;

/* One partition: received offsets in increasing order, as a ring-less array whose head moves
 * forward (compacted when it passes half the capacity). */
typedef struct kf_track_part {
    int32_t partition;
    kf_track_ent_t *ents;
    size_t head, n, cap; /* live entries are ents[head .. head+n) */
    int64_t last;        /* last offset received, -1 none */
    int64_t committed;   /* last committed next-offset, -1 none */
} kf_track_part_t;

struct kf_worker_track {
    kf_track_part_t *parts;
    size_t nparts, cap;
};

kf_worker_track_t *
kf_worker_track_new(void)
{
    return calloc(1, sizeof(kf_worker_track_t));
}

void
kf_worker_track_destroy(kf_worker_track_t *track)
{
    if (!track)
        return;
    for (size_t i = 0; i < track->nparts; i++)
        free(track->parts[i].ents);
    free(track->parts);
    free(track);
}

static kf_track_part_t *
kf_track_find(const kf_worker_track_t *track, int32_t partition)
{
    for (size_t i = 0; i < track->nparts; i++)
        if (track->parts[i].partition == partition)
            return &track->parts[i];
    return NULL;
}

kf_err_t
kf_worker_track_add(kf_worker_track_t *track, int32_t partition, int64_t offset)
{
    KF_ASSERT(track && offset >= 0);
    kf_track_part_t *p = kf_track_find(track, partition);
    if (!p) {
        if (track->nparts == track->cap) {
            size_t cap = track->cap ? track->cap * 2 : 8;
            kf_track_part_t *np = realloc(track->parts, cap * sizeof(*np));
            if (!np)
                return KF_ERR_NOMEM;
            track->parts = np;
            track->cap = cap;
        }
        p = &track->parts[track->nparts++];
        memset(p, 0, sizeof(*p));
        p->partition = partition;
        p->last = -1;
        p->committed = -1;
    }
    /* Kafka delivers a partition in order; anything not beyond the last one is a re-delivery
     * (or already committed) and must not be processed twice. */
    if (offset <= p->last || offset < p->committed)
        return KF_ERR_EXISTS;
    if (p->head + p->n == p->cap) {
        if (p->head > 0 && p->head >= p->cap / 2) {
            memmove(p->ents, p->ents + p->head, p->n * sizeof(*p->ents));
            p->head = 0;
        } else {
            size_t cap = p->cap ? p->cap * 2 : 16;
            kf_track_ent_t *ne = realloc(p->ents, cap * sizeof(*ne));
            if (!ne)
                return KF_ERR_NOMEM;
            p->ents = ne;
            p->cap = cap;
        }
    }
    p->ents[p->head + p->n++] = (kf_track_ent_t){.offset = offset, .done = 0};
    p->last = offset;
    return KF_OK;
}

kf_err_t
kf_worker_track_done(kf_worker_track_t *track, int32_t partition, int64_t offset)
{
    KF_ASSERT(track);
    kf_track_part_t *p = kf_track_find(track, partition);
    if (!p || p->n == 0)
        return KF_ERR_NOT_FOUND;
    /* Binary search: entries are sorted by offset. */
    size_t lo = p->head, hi = p->head + p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->ents[mid].offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == p->head + p->n || p->ents[lo].offset != offset)
        return KF_ERR_NOT_FOUND;
    p->ents[lo].done = 1;
    return KF_OK;
}

int
kf_worker_track_commit_point(const kf_worker_track_t *track, int32_t partition, int64_t *out_next)
{
    KF_ASSERT(track && out_next);
    const kf_track_part_t *p = kf_track_find(track, partition);
    if (!p || p->last < 0)
        return 0;
    /* The first incomplete offset blocks everything after it; with none, all that was
     * received is done and the next offset to read is last + 1. */
    int64_t next = p->last + 1;
    for (size_t i = p->head; i < p->head + p->n; i++)
        if (!p->ents[i].done) {
            next = p->ents[i].offset;
            break;
        }
    if (next <= p->committed)
        return 0;
    *out_next = next;
    return 1;
}

void
kf_worker_track_committed(kf_worker_track_t *track, int32_t partition, int64_t next)
{
    KF_ASSERT(track);
    kf_track_part_t *p = kf_track_find(track, partition);
    if (!p)
        return;
    while (p->n > 0 && p->ents[p->head].offset < next) {
        p->head++;
        p->n--;
    }
    if (p->n == 0)
        p->head = 0;
    if (next > p->committed)
        p->committed = next;
}

void
kf_worker_track_drop(kf_worker_track_t *track, int32_t partition)
{
    KF_ASSERT(track);
    for (size_t i = 0; i < track->nparts; i++)
        if (track->parts[i].partition == partition) {
            free(track->parts[i].ents);
            track->parts[i] = track->parts[--track->nparts];
            return;
        }
}

size_t
kf_worker_track_pending(const kf_worker_track_t *track, int32_t partition)
{
    KF_ASSERT(track);
    const kf_track_part_t *p = kf_track_find(track, partition);
    return p ? p->n : 0;
}

size_t
kf_worker_track_count(const kf_worker_track_t *track)
{
    KF_ASSERT(track);
    return track->nparts;
}

int32_t
kf_worker_track_partition_at(const kf_worker_track_t *track, size_t idx)
{
    KF_ASSERT(track && idx < track->nparts);
    return track->parts[idx].partition;
}

/* ---- batching and flow control ------------------------------------------------------------ */

int64_t
kf_worker_batch_decide(const kf_worker_batch_in_t *in)
{
    KF_ASSERT(in);
    if (in->n_active == 0)
        return -1;
    /* Sequences already generating are never held back for newcomers: they join the next
     * step anyway (continuous batching). Waiting only pays when a batch is about to start. */
    if (in->n_active > in->n_fresh || in->draining)
        return 0;
    if (in->max_batch_seqs > 0 && in->n_fresh >= in->max_batch_seqs)
        return 0;
    int64_t age = in->now_ms - in->oldest_fresh_ms;
    if (age < 0)
        age = 0; /* a clock step backwards: treat as just arrived */
    if (age >= in->max_wait_ms)
        return 0;
    return in->max_wait_ms - age;
}

kf_worker_flow_t
kf_worker_flow_decide(int paused, uint32_t inflight, uint32_t high, uint32_t low)
{
    if (!paused && inflight >= high)
        return KF_WORKER_FLOW_PAUSE;
    if (paused && inflight <= low)
        return KF_WORKER_FLOW_RESUME;
    return KF_WORKER_FLOW_KEEP;
}

/* ---- statuses ----------------------------------------------------------------------------- */

const char *
kf_worker_status_name(kf_worker_status_t status)
{
    switch (status) {
    case KF_WORKER_COMPLETED:
        return "completed";
    case KF_WORKER_FAILED:
        return "failed";
    case KF_WORKER_EXPIRED:
        return "expired";
    case KF_WORKER_CANCELLED:
        return "cancelled";
    case KF_WORKER_DROP:
        return "drop";
    }
    return "failed";
}

int
kf_worker_deadline_passed(int64_t deadline_ms, int64_t now_ms)
{
    return deadline_ms > 0 && deadline_ms <= now_ms;
}

kf_worker_status_t
kf_worker_status_of(kf_finish_t finish, int cancel_requested, int dropped)
{
    /* A revoked partition's job belongs to its next owner now: whatever the engine says, no
     * result may come from here. */
    if (dropped)
        return KF_WORKER_DROP;
    switch (finish) {
    case KF_FINISH_STOP:
    case KF_FINISH_LENGTH:
        return KF_WORKER_COMPLETED;
    case KF_FINISH_DEADLINE:
        return KF_WORKER_EXPIRED;
    case KF_FINISH_CANCELLED:
        /* Only a cancel record makes a job cancelled; the engine also cancels on shutdown,
         * and then the job must be redone. */
        return cancel_requested ? KF_WORKER_CANCELLED : KF_WORKER_DROP;
    case KF_FINISH_ERROR:
    case KF_FINISH_NONE:
        break;
    }
    return KF_WORKER_FAILED;
}

/* ---- cancel records ----------------------------------------------------------------------- */

kf_err_t
kf_worker_cancel_parse(const void *buf,
                       size_t len,
                       char out_request_id[128],
                       char out_tenant_id[128],
                       char *errstr,
                       size_t errstr_size)
{
    out_request_id[0] = out_tenant_id[0] = '\0';
    if (!buf || len == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "cancel record: empty value");
    kf_json_limits_t lim = {.max_bytes = 4096, .max_depth = 4};
    json_t *root = NULL;
    kf_err_t err = kf_json_parse_object(buf, len, &lim, &root, errstr, errstr_size);
    if (err)
        return err;
    const char *rid = NULL, *tid = NULL;
    err = kf_json_get_str(root, "request_id", 127, &rid, errstr, errstr_size);
    if (!err)
        err = kf_json_opt_str(root, "tenant_id", 127, &tid, errstr, errstr_size);
    if (!err && !*rid)
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "cancel record: field 'request_id' is empty");
    if (!err) {
        snprintf(out_request_id, 128, "%s", rid);
        snprintf(out_tenant_id, 128, "%s", tid ? tid : "");
    }
    json_decref(root);
    return err;
}

typedef struct kf_cancel_ent {
    char request_id[128];
    char tenant_id[128];
    int64_t at_ms;
} kf_cancel_ent_t;

struct kf_worker_cancels {
    kf_cancel_ent_t *ents;
    size_t cap, next, n;
    int64_t ttl_ms;
};

kf_worker_cancels_t *
kf_worker_cancels_new(size_t capacity, int64_t ttl_ms)
{
    KF_ASSERT(capacity > 0);
    kf_worker_cancels_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->ents = calloc(capacity, sizeof(*c->ents));
    if (!c->ents) {
        free(c);
        return NULL;
    }
    c->cap = capacity;
    c->ttl_ms = ttl_ms;
    return c;
}

void
kf_worker_cancels_destroy(kf_worker_cancels_t *cancels)
{
    if (!cancels)
        return;
    free(cancels->ents);
    free(cancels);
}

void
kf_worker_cancels_add(kf_worker_cancels_t *cancels,
                      const char *request_id,
                      const char *tenant_id,
                      int64_t now_ms)
{
    KF_ASSERT(cancels && request_id);
    if (!tenant_id)
        tenant_id = "";
    if (strlen(request_id) > 127 || strlen(tenant_id) > 127 || !*request_id)
        return;
    /* A ring: the oldest entry is overwritten first. */
    kf_cancel_ent_t *e = &cancels->ents[cancels->next];
    snprintf(e->request_id, sizeof(e->request_id), "%s", request_id);
    snprintf(e->tenant_id, sizeof(e->tenant_id), "%s", tenant_id);
    e->at_ms = now_ms;
    cancels->next = (cancels->next + 1) % cancels->cap;
    if (cancels->n < cancels->cap)
        cancels->n++;
}

int
kf_worker_cancels_has(const kf_worker_cancels_t *cancels,
                      const char *request_id,
                      const char *tenant_id,
                      int64_t now_ms)
{
    KF_ASSERT(cancels && request_id);
    for (size_t i = 0; i < cancels->n; i++) {
        const kf_cancel_ent_t *e = &cancels->ents[i];
        if (strcmp(e->request_id, request_id))
            continue;
        if (cancels->ttl_ms > 0 && now_ms - e->at_ms > cancels->ttl_ms)
            continue;
        /* An unknown tenant on either side matches; two known ones must agree, so one
         * tenant can never cancel another's request by guessing its id. */
        if (tenant_id && *tenant_id && e->tenant_id[0] && strcmp(e->tenant_id, tenant_id))
            continue;
        return 1;
    }
    return 0;
}

/* ---- backend choice ----------------------------------------------------------------------- */

const char *
kf_worker_pick_backend(const char *device)
{
    if (!device || !strcmp(device, "auto"))
        return kf_backend_available("cuda") ? "cuda" : "cpu";
    if (!strcmp(device, "cpu"))
        return "cpu";
    if (!strcmp(device, "cuda"))
        return "cuda";
    return NULL;
}
