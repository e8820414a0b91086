/*
 * ha_balancer.h - C ABI of the ha-balancer core.
 *
 * Every symbol is prefixed hab_ / HAB_.  Every function returns a
 * hab_result (or a plain value where it cannot fail), never unwinds, and
 * writes its out-parameters only on HAB_OK.
 *
 * Life cycle, as nginx-module/ uses it:
 *
 *   config time (master, also under nginx -t):
 *     fill a hab_upstream_conf with one hab_peer_conf per server
 *     (primaries first, then backups), hab_zone_size() for the zone size,
 *     hab_conf_digest() to name the zone;
 *   zone init (master): hab_zone_attach() on a reused zone, else
 *     hab_zone_init() on fresh shared memory, then hab_zone_carry() from
 *     the old cycle's zone or hab_state_apply() from the state file;
 *   worker start: hab_zone_claim_slot() (the worker's ledger slot, which
 *     reconciles dead workers' slots), hab_zone_release_slot() at exit;
 *   per request (workers): hab_attempt_size() bytes from the request pool,
 *     hab_attempt_init(), then hab_attempt_pick() / hab_attempt_release()
 *     once per try, hab_attempt_end() when the request ends;
 *   request queue (workers, ha_queue): hab_queue_enter() after HAB_BUSY,
 *     hab_queue_try() when woken, hab_queue_leave() on timeout or abort;
 *     every hab_wake a call gives is delivered to the worker it names;
 *   health timer (workers, ha_check and friends): hab_check_claim(),
 *     hab_check_done() per check, hab_health_tick();
 *   servers resolved at run time (workers): hab_zone_source() and
 *     hab_zone_resolve() when nginx's list changes;
 *   operator API (workers): hab_api_handle(); the state file:
 *     hab_state_load() / hab_state_apply() at zone init.
 *
 * The zone lives entirely inside the caller's memory (nginx shared
 * memory): no pointers inside it, only offsets and indices, so it is valid
 * in every process that maps it.
 */

#ifndef HA_BALANCER_H
#define HA_BALANCER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif


/* Result codes: explicit, never reused; 7000 keeps them apart from errno. */
typedef enum hab_result {
    HAB_OK = 7000,
    HAB_BUSY = 7001,              /* no eligible peer, or busy */
    HAB_NULL_PARAMETER = 7002,
    HAB_PANIC = 7003,             /* a bug: the core panicked, caught */
    HAB_INVALID_ARGUMENT = 7004,
    HAB_NO_SPACE = 7005,          /* not enough (shared) memory */
    HAB_BAD_LAYOUT = 7006,        /* region holds no matching table */
    HAB_UNKNOWN_POLICY = 7007,
    HAB_TOO_LARGE = 7008,         /* too many peers or total weight */
    HAB_BAD_STATE = 7009,         /* state file unreadable or corrupt */
    HAB_QUEUE_FULL = 7010         /* ha_queue: full, an overflow (502) */
} hab_result;


/* Balancing policies. */
typedef enum hab_policy {
    HAB_POLICY_ROUND_ROBIN = 1,
    HAB_POLICY_LEAST_CONN = 2,
    HAB_POLICY_P2C = 3,
    HAB_POLICY_EWMA = 4,
    HAB_POLICY_RANDOM = 5,
    HAB_POLICY_HASH = 6
} hab_policy;


/* How HAB_POLICY_HASH maps keys to peers. */
typedef enum hab_hash_mode {
    HAB_HASH_PLAIN = 0,           /* nginx's "hash $key" */
    HAB_HASH_CONSISTENT = 1,      /* nginx's "hash $key consistent" */
    HAB_HASH_MAGLEV = 2
} hab_hash_mode;


/* hab_peer_conf.flags */
#define HAB_PEER_BACKUP  0x0001u
#define HAB_PEER_DOWN    0x0002u
/* hab_slot_peer.flags only: a server added through the API */
#define HAB_PEER_API     0x0004u


/* One server line, as nginx parsed it. */
typedef struct hab_peer_conf {
    const uint8_t  *id;           /* identity: upstream, server, address */
    size_t          id_len;
    const uint8_t  *server;       /* the server directive's address */
    size_t          server_len;
    uint32_t        weight;       /* >= 1 */
    uint32_t        max_conns;    /* 0: unlimited */
    uint32_t        max_fails;    /* 0: never disabled */
    uint32_t        flags;        /* HAB_PEER_* */
    uint64_t        fail_timeout_ms;
    uint32_t        position;     /* configuration order: the API's id */
    uint32_t        reserved;     /* zero */
    const uint8_t  *sid;          /* session id (ha_route); NULL or empty:
                                   * the hex MD5 of the address, as nginx's
                                   * sticky; at most HAB_SID_MAX bytes */
    size_t          sid_len;
} hab_peer_conf;


/* Longest session id: nginx's NGX_HTTP_UPSTREAM_SID_LEN (MD5 in hex). */
#define HAB_SID_MAX  32


/* hab_health_conf.flags */
#define HAB_HEALTH_CHECK        0x0001u  /* ha_check is configured */
#define HAB_HEALTH_MANDATORY    0x0002u  /* servers start checking */
#define HAB_HEALTH_PERSISTENT   0x0004u  /* healthy in the state file: up */
#define HAB_HEALTH_CLEAR_FAILS  0x0008u  /* a pass clears max_fails */


/* The health directives of an upstream; times in ms, 0: off. */
typedef struct hab_health_conf {
    uint32_t        flags;               /* HAB_HEALTH_* */
    uint32_t        interval_ms;         /* ha_check */
    uint32_t        jitter_ms;
    uint32_t        timeout_ms;          /* <= interval_ms */
    uint32_t        fails;               /* >= 1 */
    uint32_t        passes;              /* >= 1 */
    uint32_t        slow_start_ms;       /* ha_slow_start */
    uint32_t        consecutive_5xx;     /* ha_outlier */
    uint32_t        consecutive_errors;
    uint32_t        base_ejection_ms;
    uint32_t        max_ejection_ms;     /* 0: max(300 s, base) */
    uint32_t        max_ejection_percent;    /* 0: 100 */
    uint32_t        panic_percent;       /* ha_panic */
    uint32_t        queue;               /* ha_queue number; 0: none,
                                          * <= HAB_QUEUE_MAX */
    uint32_t        reserved[2];         /* zero */
} hab_health_conf;

/* Most waiters hab_health_conf.queue may ask for (nginx -t refuses more). */
#define HAB_QUEUE_MAX  262144u


/* hab_upstream_conf.schedule_room: 0 means the default */
#define HAB_SCHEDULE_ROOM_DEFAULT  262144u
#define HAB_SCHEDULE_ROOM_MAX      4194304u

/* hab_upstream_conf.api_max: at most this many (ha_api_max) */
#define HAB_API_MAX                1048576u

/* hab_upstream_conf.nbuckets: at most this many (ha_latency_buckets) */
#define HAB_BUCKETS_MAX            15u


typedef struct hab_upstream_conf {
    uint32_t              policy;          /* hab_policy */
    uint32_t              hash_mode;       /* hab_hash_mode, for HASH */
    uint32_t              decay_ms;        /* EWMA; 0: 10 s */
    uint32_t              balance_factor;  /* HASH: percent, 0: unbounded */
    const hab_peer_conf  *peers;   /* primaries first, then backups */
    size_t                npeers;
    uint32_t              maglev_size; /* HASH maglev: table size, 0: default */
    uint32_t              schedule_room; /* ROUND_ROBIN, LEAST_CONN, HASH:
                                          * schedule entries weight changes
                                          * may always reach; 0: the
                                          * default, at most
                                          * HAB_SCHEDULE_ROOM_MAX */
    const hab_health_conf *health;     /* NULL: none */
    size_t                capacity;    /* peer slots: 0 for npeers +
                                        * api_max; npeers for a static
                                        * upstream; more for one whose
                                        * servers nginx resolves at run
                                        * time (hab_zone_resolve()) or the
                                        * API adds; at least npeers +
                                        * api_max */
    uint32_t              sessions;    /* 1: the upstream binds sessions
                                        * (ha_sticky), else 0 */
    uint32_t              api_max;     /* ha_api_max: servers the API may
                                        * add, 0 to HAB_API_MAX */
    const uint32_t       *buckets;     /* ha_latency_buckets: bounds of the
                                        * latency histograms, ms, strictly
                                        * increasing, the first above 0;
                                        * NULL: the default */
    size_t                nbuckets;    /* 1 to HAB_BUCKETS_MAX (0 with
                                        * NULL) */
} hab_upstream_conf;


/* Opaque: an upstream's zone inside caller-owned (shared) memory. */
typedef struct hab_zone hab_zone;

/* Opaque: per-request state inside caller-owned (request pool) memory. */
typedef struct hab_attempt hab_attempt;

/* Opaque: bytes owned by the library, given back with hab_buf_free(). */
typedef struct hab_buf hab_buf;


/* No ledger slot: the worker's requests are not reconciled if it dies. */
#define HAB_NO_SLOT  0xffffffffu


/* Whether the process owner (a pid) is still alive: non-zero if so. */
typedef int (*hab_alive_fn)(uint64_t owner, void *data);


/* hab_pick.flags */
#define HAB_PICK_BACKUP  0x0001u  /* the peer is a backup server */
#define HAB_PICK_BOUND   0x0002u  /* the server the request is bound to */


typedef struct hab_pick {
    uint32_t        peer;         /* slot: hab_upstream_conf.peers order for
                                   * a static upstream */
    uint32_t        flags;        /* HAB_PICK_* */
} hab_pick;


/* hab_attempt_release() outcomes */
#define HAB_OUTCOME_OK      0u    /* response accepted */
#define HAB_OUTCOME_FAILED  1u    /* counts against max_fails */
#define HAB_OUTCOME_NEXT    2u    /* passed on (403/404), not a failure */


/* hab_report.flags */
#define HAB_REPORT_DISABLED   0x0001u  /* this failure reached max_fails */
#define HAB_REPORT_RECOVERED  0x0002u  /* this success cleared failures */
#define HAB_REPORT_LAST_TRY   0x0004u  /* single peer: do not retry */
#define HAB_REPORT_EJECTED    0x0008u  /* this try ejected an outlier */

/* hab_report.eject_reason */
#define HAB_EJECT_5XX         1u       /* consecutive 5xx responses */
#define HAB_EJECT_ERRORS      2u       /* consecutive gateway errors */

/* hab_panic_report.change */
#define HAB_PANIC_MODE_NONE     0u
#define HAB_PANIC_MODE_ENTERED  1u     /* this call put the upstream in panic */
#define HAB_PANIC_MODE_LEFT     2u     /* this call ended it */


/* hab_wake.channel: the worker registered no wake channel */
#define HAB_NO_CHANNEL  0xffffffffu


/*
 * A worker to wake: the ledger slot owning the head of the queue
 * (HAB_NO_SLOT: nobody) and the channel it registered.  Deliver every
 * wake you get: until that worker calls hab_queue_woken(), no other wake
 * of it is given.
 */
typedef struct hab_wake {
    uint32_t        slot;         /* ledger slot; HAB_NO_SLOT: none */
    uint32_t        channel;      /* hab_queue_set_wake(); HAB_NO_CHANNEL */
} hab_wake;


/* A re-evaluation of the panic threshold. */
typedef struct hab_panic_report {
    uint32_t        change;       /* HAB_PANIC_MODE_* */
    uint32_t        healthy;      /* primaries in service and healthy */
    uint32_t        total;        /* primaries in service */
    uint32_t        reserved;
} hab_panic_report;


typedef struct hab_report {
    uint32_t        flags;        /* HAB_REPORT_* */
    uint32_t        peer;
    uint64_t        down_ms;      /* with RECOVERED: ms it was unavailable */
    uint32_t        eject_reason; /* with EJECTED: HAB_EJECT_* */
    uint32_t        eject_count;  /* with EJECTED: how many in a row */
    uint64_t        eject_ms;     /* with EJECTED: for how long */
    hab_panic_report  panic;      /* after an ejection */
    hab_wake        wake;         /* the queue's head to wake; slot
                                   * HAB_NO_SLOT: none */
} hab_report;


/* hab_try.flags */
#define HAB_TRY_HEADER_TIME   0x0001u  /* header_ms is known */


/* What the caller knows of a finished try, for the statistics. */
typedef struct hab_try {
    uint32_t        status;       /* HTTP status; 0: no response header */
    uint32_t        flags;        /* HAB_TRY_* */
    uint64_t        header_ms;    /* time to the response header */
    uint64_t        sent;         /* bytes sent to the server */
    uint64_t        received;     /* bytes received from it */
} hab_try;


/* A static, NUL-terminated description of a result code. */
const char *hab_result_str(unsigned int rc);   /* any hab_result */

/* Layout version of zones this library builds. */
uint32_t hab_layout_version(void);

/* Bytes of shared memory a zone for conf needs (with room for several
 * table generations). */
hab_result hab_zone_size(const hab_upstream_conf *conf, size_t *out_size);

/*
 * After HAB_TOO_LARGE: why, with the figures and the limit, in a buffer the
 * caller frees with hab_buf_free() (*out_reason is NULL when conf is not
 * too large).
 */
hab_result hab_conf_explain(const hab_upstream_conf *conf,
    hab_buf **out_reason);

/*
 * A 64-bit digest of conf (policy and every peer's identity and
 * parameters); equal digests mean a reused zone can be adopted as is.
 */
hab_result hab_conf_digest(const hab_upstream_conf *conf,
    uint64_t *out_digest);

/*
 * Builds a fresh zone in mem (aligned to 64 bytes, len >= zone size): all
 * counters zero, generation 1 built from the configured weights.
 */
hab_result hab_zone_init(const hab_upstream_conf *conf, void *mem,
    size_t len, hab_zone **out_zone);

/*
 * Adopts the zone already in mem if it was built for an equal conf:
 * in-flight counts, failure state, admin state and the serving generation
 * carry over.  HAB_BAD_LAYOUT when it does not match (the caller then
 * calls hab_zone_init()).
 */
hab_result hab_zone_attach(const hab_upstream_conf *conf, void *mem,
    size_t len, hab_zone **out_zone);

/*
 * After a reload that changed the upstream: carries the state of the peers
 * old also has (matched by identity: failure window, latency, admin state,
 * weight override, health as far as the new configuration has it) into
 * the fresh zone; servers new at now_ms slow-start.  Servers added through
 * the API are added again, up to the new zone's api_max; those past it
 * are named in *out_dropped (their server strings, ", " between; NULL
 * when none; free it with hab_buf_free()).  In-flight counts stay with
 * the old zone, where the old workers release them.  Each out-parameter
 * may be NULL.
 */
hab_result hab_zone_carry(hab_zone *zone, const hab_zone *old,
    uint64_t now_ms, uint32_t *out_carried, hab_buf **out_dropped);

/* Number of peers (primaries and backups) in the zone: its slots, the
 * range of every peer index (a dynamic zone: its capacity). */
uint32_t hab_zone_peers(const hab_zone *zone);

/*
 * Servers resolved at run time (nginx >= 1.27.3 "server ... resolve",
 * "service=").  A zone built with conf->capacity above its configured
 * peers has that many peer slots; hab_zone_resolve() makes a new peer list
 * (what nginx's upstream zone holds after a change) its membership: a
 * server whose identity stays keeps its slot and all its state, a new one
 * takes a free slot as a new server, a vanished one drains (its slot is
 * reused only once nothing refers to it).  See docs/discovery-design.md.
 */

/* hab_zone_resolve() out_slots: this peer is in no slot (not built yet) */
#define HAB_NO_PEER             0xffffffffu

/* hab_peer_conf.position of a resolved server: the API numbers it after
 * the configured ones (configured count + slot) */
#define HAB_POSITION_NONE       0xffffffffu

/* hab_slot_info.status */
#define HAB_SLOT_FREE           0u   /* no identity, named by no generation */
#define HAB_SLOT_LIVE           1u
#define HAB_SLOT_RETIRING       2u   /* left the list; its requests finish */


/* Where a generation's membership came from: the caller's list id and
 * its change counter (nginx: a configuration's id and *peers->config). */
typedef struct hab_source {
    uint64_t        list;
    uint64_t        config;
} hab_source;


typedef struct hab_resolve_report {
    uint64_t        generation;   /* serving after the call */
    hab_source      source;       /* ... and its source */
    uint32_t        built;        /* 1: this call published it */
    uint32_t        refused;      /* why not built, a hab_result: HAB_OK
                                   * (nothing to do), HAB_BUSY (another
                                   * builder, or an older list),
                                   * HAB_NO_SPACE, HAB_TOO_LARGE */
    uint32_t        kept;         /* slots kept, revived, given to new */
    uint32_t        revived;      /* identities, turned draining, */
    uint32_t        added;        /* reused */
    uint32_t        retired;
    uint32_t        reused;
    uint32_t        deferred;     /* new ones left for a later call: no
                                   * slot is free until the servers
                                   * leaving are done (the call is made
                                   * again, its source's config then
                                   * UINT64_MAX) */
} hab_resolve_report;


typedef struct hab_slot_info {
    uint32_t        status;       /* HAB_SLOT_* */
    uint32_t        epoch;        /* bumped each time the slot is reused */
} hab_slot_info;


/*
 * Makes list (list->peers, list->npeers: primaries first, the zone's
 * policy; health and capacity ignored) the zone's membership, as copied at
 * change counter config of list list_id, and publishes a generation of it,
 * unless the serving generation came from (list_id, config) already or
 * from a larger list_id (the workers of an older configuration never
 * publish), or another process holds the builder lease (owner, alive and
 * data as for hab_zone_claim_slot()).  Then, in every case, writes for
 * each peer k of the list the slot holding its identity in the generation
 * serving after the call into out_slots[k] (HAB_NO_PEER when it has none),
 * occurrences of an identity matched in order, and the report into *out.
 * With too few free slots for the newcomers while other servers leave,
 * a generation without the latter and with the newcomers that fit is
 * published (out->deferred: the others; its source's config UINT64_MAX,
 * so the next call applies the list again, once the slots of those
 * leaving are free).  A list the zone cannot take otherwise (no free slot
 * and nobody leaving, the arena full, an identity too long) changes
 * nothing: the serving generation stays, the reason in out->refused.
 * Errors: HAB_NULL_PARAMETER, HAB_INVALID_ARGUMENT (a list for another
 * policy, or invalid parameters).
 */
hab_result hab_zone_resolve(hab_zone *zone, const hab_upstream_conf *list,
    uint64_t list_id, uint64_t config, uint64_t now_ms, uint64_t owner,
    uint32_t slot, hab_alive_fn alive, void *data, uint32_t *out_slots,
    hab_resolve_report *out);

/*
 * The source of the generation serving new requests.  slot: the caller's
 * ledger slot (HAB_NO_SLOT for none); the generation is read under a pin
 * counted in that slot's row, so that a worker killed while it reads
 * leaves no pin once its slot is reconciled (hab_zone_resolve() reads the
 * same way).
 */
hab_result hab_zone_source(const hab_zone *zone, uint32_t slot,
    hab_source *out);

/* Status and epoch of a peer slot (HAB_INVALID_ARGUMENT past the end). */
hab_result hab_zone_slot(const hab_zone *zone, uint32_t slot,
    hab_slot_info *out);

/*
 * What a peer slot holds, for a worker with no peer of its own for it (a
 * server added through the API): hab_zone_slot_peer() copies the slot's
 * server string, then its address (the identity's last part), into buf.
 */
#define HAB_SLOT_TEXT_MAX       896u

typedef struct hab_slot_peer {
    uint32_t        status;       /* HAB_SLOT_* */
    uint32_t        epoch;        /* the text belongs to this epoch */
    uint32_t        flags;        /* HAB_PEER_BACKUP | HAB_PEER_DOWN |
                                   * HAB_PEER_API */
    uint32_t        weight;       /* as configured (or added) */
    uint32_t        max_conns;    /* 0: unlimited */
    uint32_t        max_fails;    /* 0: never */
    uint64_t        fail_timeout_ms;
    size_t          server_len;   /* first in buf */
    size_t          address_len;  /* after it */
} hab_slot_peer;

/* HAB_BUSY: the slot was given to another server during the copy;
 * HAB_NO_SPACE: cap too small (HAB_SLOT_TEXT_MAX always does). */
hab_result hab_zone_slot_peer(const hab_zone *zone, uint32_t slot,
    uint8_t *buf, size_t cap, hab_slot_peer *out);

/* Number of the table generation serving new requests. */
uint64_t hab_zone_generation(const hab_zone *zone);

/* Current in-flight count of a peer, summed over all processes. */
hab_result hab_zone_in_flight(const hab_zone *zone, uint32_t peer,
    uint32_t *out_count);

/*
 * Per-worker in-flight ledger.  A worker claims a slot when it starts
 * (nginx: init_process) with its pid as owner; first, the slots of owners
 * that alive() reports dead are reconciled: their requests leave flight
 * and their holds on generations are dropped.  HAB_BUSY when all slots
 * are taken (the worker then passes HAB_NO_SLOT).
 */
hab_result hab_zone_claim_slot(hab_zone *zone, uint64_t owner,
    hab_alive_fn alive, void *data, uint32_t *out_slot);

/*
 * Reconciles the slots of owners alive() reports dead, as
 * hab_zone_claim_slot() does first, without claiming one (a worker whose
 * queue head belongs to a dead worker of an old cycle, which nginx does
 * not replace); me: the caller's pid.  *out_reaped: slots reconciled.
 */
hab_result hab_zone_reap(hab_zone *zone, uint64_t me, hab_alive_fn alive,
    void *data, uint32_t *out_reaped);

/* Gives the slot back (nginx: exit_process), reconciling what it holds. */
hab_result hab_zone_release_slot(hab_zone *zone, uint32_t slot,
    uint64_t owner);

/* Bytes of per-request state hab_attempt_init() needs for this zone. */
size_t hab_attempt_size(const hab_zone *zone);

/*
 * Prepares per-request state in mem (aligned to 8 bytes) and pins the
 * generation serving now: every try of this request runs on it, and it is
 * not reclaimed before hab_attempt_end().  seed feeds the attempt's random
 * draws (p2c, ewma, random); pass a per-process random number so that
 * workers draw independently.  slot is the worker's ledger slot, or
 * HAB_NO_SLOT.
 */
hab_result hab_attempt_init(hab_zone *zone, void *mem, size_t len,
    uint64_t now_ms, uint64_t seed, uint32_t slot, hab_attempt **out_attempt);

/*
 * Picks a peer not yet tried by this attempt and counts it in flight.
 * HAB_BUSY when no peer is eligible.  key (key_len bytes; may be NULL when
 * key_len is 0) is the request's hash key, the same on every try; other
 * policies ignore it.  now_ms is a monotonic clock shared by all processes
 * (nginx's ngx_current_msec).
 */
hab_result hab_attempt_pick(hab_zone *zone, hab_attempt *attempt,
    const uint8_t *key, size_t key_len, uint64_t now_ms, hab_pick *out_pick);

/*
 * As hab_attempt_pick(), for a request bound to a server (ha_sticky): by
 * its session id (sid, sid_len bytes: a cookie's or a route variable's
 * value) or, when sid is NULL, by the hash of one (sid_hash, what a learnt
 * session maps to; 0: none).  While that server can take the try (a
 * draining one can) it gets it, flagged HAB_PICK_BOUND; otherwise the
 * policy picks as for an unbound request.  O(1): every generation of an
 * upstream that binds sessions indexes its servers' ids.
 */
hab_result hab_attempt_pick_bound(hab_zone *zone, hab_attempt *attempt,
    const uint8_t *key, size_t key_len, const uint8_t *sid, size_t sid_len,
    uint64_t sid_hash, uint64_t now_ms, hab_pick *out_pick);


/*
 * Learnt sessions (ha_sticky learn): a lock-free table in its own zone,
 * mapping session ids to servers (by hab_sid.hash); bounded, oldest
 * evicted first, entries expiring timeout_ms after they were last learnt.
 */

/* Opaque: a learn table inside caller-owned (shared) memory. */
typedef struct hab_learn hab_learn;

#define HAB_LEARN_TIMEOUT_MAX  2147483648u

typedef struct hab_learn_stats {
    uint64_t        entries;      /* sessions held (not expired) */
    uint64_t        capacity;     /* at most */
    uint64_t        created;
    uint64_t        evicted;      /* oldest first, before they expired */
    uint64_t        expired;
} hab_learn_stats;

/* Sessions a table in bytes holds (0: too small), and the bytes it takes. */
size_t hab_learn_capacity(size_t bytes);
size_t hab_learn_size(size_t capacity);

/* An empty table at mem (64-byte aligned), or the one already there. */
hab_result hab_learn_init(void *mem, size_t len, uint64_t timeout_ms,
    hab_learn **out);
hab_result hab_learn_attach(void *mem, size_t len, uint64_t timeout_ms,
    hab_learn **out);

/* The server session id was learnt for (its hab_sid.hash), 0: none. */
uint64_t hab_learn_lookup(const hab_learn *table, const uint8_t *id,
    size_t id_len, uint64_t now_ms);

/*
 * Session id is held by the server whose session id hashes to sid_hash;
 * create 1: a session the response created, 0: one the request named
 * (refreshed or moved, never created).
 */
hab_result hab_learn_learn(hab_learn *table, const uint8_t *id,
    size_t id_len, uint64_t sid_hash, uint64_t now_ms, uint32_t create);

/* The live sessions of from (an old cycle's table) into to. */
hab_result hab_learn_carry(hab_learn *to, const hab_learn *from,
    uint64_t now_ms, uint64_t *out_carried);

/* Counters; entries costs a pass over the table. */
hab_result hab_learn_stats_get(const hab_learn *table, uint64_t now_ms,
    hab_learn_stats *out);

/*
 * The sessions file (ha_state_file PATH: PATH.sessions) keeps learnt
 * sessions across a restart: written by the master when it exits, read
 * by each fresh learn zone.  Failures: HAB_BAD_STATE, why in *out_error
 * (when not NULL; free it with hab_buf_free()).
 */
typedef struct hab_learn_zone {
    const uint8_t   *name;        /* zone=NAME:SIZE */
    size_t           name_len;
    const hab_learn *table;
} hab_learn_zone;

hab_result hab_sessions_save(const uint8_t *state_file, size_t len,
    const hab_learn_zone *zones, size_t n, uint64_t now_ms,
    uint64_t *out_saved, hab_buf **out_error);
hab_result hab_sessions_restore(const uint8_t *state_file, size_t len,
    const uint8_t *name, size_t name_len, hab_learn *table, uint64_t now_ms,
    uint64_t *out_restored, hab_buf **out_error);


/* A server's session id. */
typedef struct hab_sid {
    uint64_t        hash;         /* what a learnt session keeps; 0: none */
    uint32_t        len;          /* bytes used in data */
    uint32_t        reserved;     /* zero */
    uint8_t         data[HAB_SID_MAX];  /* not NUL-terminated */
} hab_sid;

/*
 * The session id of peer, the peer of a pick of this attempt (whose pin
 * keeps the peer's slot from being given to another server), into out.
 */
hab_result hab_attempt_sid(const hab_zone *zone, hab_attempt *attempt,
    uint32_t peer, hab_sid *out);

/*
 * Ends the current try of this attempt with a HAB_OUTCOME_*: the peer
 * leaves flight, its failure state is updated, and the try is counted in
 * its statistics with what info says of it (NULL: nothing beyond the
 * outcome).  Calling it with no try in progress returns
 * HAB_INVALID_ARGUMENT and changes nothing.  out_report->wake names the
 * worker to wake when the upstream has a queue (deliver it).
 */
hab_result hab_attempt_release(hab_zone *zone, hab_attempt *attempt,
    uint32_t outcome, const hab_try *info, uint64_t now_ms,
    hab_report *out_report);

/*
 * The try in progress ends as if it had not been made (the caller could
 * not use the peer: nginx no longer lists it): it leaves flight, stays
 * tried, and nothing is counted, neither a failure nor a statistic.
 * HAB_INVALID_ARGUMENT with no try in progress.
 */
hab_result hab_attempt_abandon(hab_zone *zone, hab_attempt *attempt);

/* As hab_attempt_abandon(), and the wake the release gives (a zone with a
 * queue: deliver it; slot HAB_NO_SLOT: none). */
hab_result hab_attempt_abandon_wake(hab_zone *zone, hab_attempt *attempt,
    hab_wake *out_wake);

/* The source of the generation the attempt runs on now (a retry in a
 * dynamic zone moves to the newest). */
hab_result hab_attempt_source(const hab_zone *zone,
    const hab_attempt *attempt, hab_source *out);

/*
 * Ends the request (nginx: a request pool cleanup): releases a try still
 * in progress and drops the hold on its generation.  Idempotent.
 */
hab_result hab_attempt_end(hab_zone *zone, hab_attempt *attempt);

/* As hab_attempt_end(), and the wake that releasing a try still in
 * progress gives (slot HAB_NO_SLOT: none). */
hab_result hab_attempt_end_wake(hab_zone *zone, hab_attempt *attempt,
    hab_wake *out_wake);


/*
 * The request queue (ha_queue, hab_health_conf.queue): one FIFO for all
 * workers, in the zone.  A request that finds no server (HAB_BUSY) enters
 * with hab_queue_enter() and waits; the head tries with hab_queue_try()
 * when its worker is woken (hab_queue_woken()) or at once when it entered
 * as the head; a waiter that times out or whose client goes away leaves
 * with hab_queue_leave().  Every hab_wake a call gives names a worker to
 * wake; deliver it.  A worker waits only with its ledger slot
 * (hab_zone_claim_slot()).
 */

/* hab_ticket.flags */
#define HAB_TICKET_HEAD      0x0001u  /* the head: try at once */

/* hab_queue_leave() reasons */
#define HAB_QUEUE_TIMEOUT    1u       /* the waiter's deadline passed */
#define HAB_QUEUE_ABANDONED  2u       /* its client went away */


/* A waiter's place, kept by the worker that entered. */
typedef struct hab_ticket {
    uint64_t        ticket;       /* the order of service */
    uint32_t        slot;         /* the owner's ledger slot */
    uint32_t        flags;        /* HAB_TICKET_* */
} hab_ticket;


/* The queue's counters, for the API. */
typedef struct hab_queue_stats {
    uint32_t        size;         /* waiters now, all workers */
    uint32_t        max_size;     /* ha_queue number; 0: no queue */
    uint32_t        overflows;    /* refused: the queue was full */
    uint32_t        timeouts;
    uint32_t        abandoned;
    uint32_t        served;       /* waiters that got a server */
    uint32_t        reserved[2];
} hab_queue_stats;


/*
 * Waiters now, all workers (0 for NULL or no queue).  A request that is
 * not a retry picks only while this is 0, else it enters the queue:
 * newcomers never overtake.
 */
uint32_t hab_queue_waiting(const hab_zone *zone);

/*
 * Enters the queue for a request of the worker holding ledger slot slot:
 * a ticket, with HAB_TICKET_HEAD when it heads the queue already (try at
 * once).  HAB_QUEUE_FULL: full, counted as an overflow;
 * HAB_INVALID_ARGUMENT: no queue, or slot is no ledger slot.
 */
hab_result hab_queue_enter(hab_zone *zone, uint32_t slot, uint64_t now_ms,
    hab_ticket *out_ticket);

/*
 * The try of waiter ticket, whose request is attempt: when it is the
 * head, the normal pick (as hab_attempt_pick()).  HAB_OK: the pick is
 * counted in flight, the request has left the queue, and *out_wake names
 * the new head's worker.  HAB_BUSY: not the head, or no room: keep
 * waiting.  Another error leaves the ticket queued: leave it.
 */
hab_result hab_queue_try(hab_zone *zone, hab_attempt *attempt,
    const hab_ticket *ticket, const uint8_t *key, size_t key_len,
    uint64_t now_ms, hab_pick *out_pick, hab_wake *out_wake);

/*
 * A waiter leaves without a server (why: HAB_QUEUE_TIMEOUT or
 * HAB_QUEUE_ABANDONED), once, by the worker that entered, never after a
 * hab_queue_try() that returned HAB_OK; *out_wake: the next head's
 * worker when it was the head.
 */
hab_result hab_queue_leave(hab_zone *zone, const hab_ticket *ticket,
    uint32_t why, hab_wake *out_wake);

/*
 * The worker of ledger slot slot was woken: allows its next wake, then
 * gives the queue's head (out_head->slot == slot: one of this worker's
 * waiters, out_head->ticket, tries; HAB_NO_SLOT: nobody waits).
 */
hab_result hab_queue_woken(hab_zone *zone, uint32_t slot,
    hab_ticket *out_head);

/* Wakes the head whatever happened (after a reconciliation, a health or
 * API change): the wake to deliver, slot HAB_NO_SLOT if none. */
hab_result hab_queue_kick(hab_zone *zone, hab_wake *out_wake);

/* Registers the wake channel of slot's worker (HAB_NO_CHANNEL: none). */
hab_result hab_queue_set_wake(hab_zone *zone, uint32_t slot,
    uint32_t channel);

/* The queue's counters (all 0 without a queue). */
hab_result hab_queue_stats_get(const hab_zone *zone, hab_queue_stats *out);


/* hab_check_report.transition */
#define HAB_CHECK_NONE       0u
#define HAB_CHECK_UP         1u   /* checking: passed its first check */
#define HAB_CHECK_HEALTHY    2u   /* unhealthy: passed "passes" in a row */
#define HAB_CHECK_UNHEALTHY  3u   /* failed "fails" in a row (or the first) */


/* hab_check_result.reason: why a check ended as it did (never reused) */
#define HAB_CHECK_REASON_NONE                    0u   /* not told */
#define HAB_CHECK_REASON_PASSED                  1u
#define HAB_CHECK_REASON_CONNECT_REFUSED         2u
#define HAB_CHECK_REASON_CONNECT_ERROR           3u
#define HAB_CHECK_REASON_TIMEOUT                 4u
#define HAB_CHECK_REASON_SEND_FAILED             5u
#define HAB_CHECK_REASON_RECV_FAILED             6u   /* a reset */
#define HAB_CHECK_REASON_NO_RESPONSE             7u
#define HAB_CHECK_REASON_INCOMPLETE_HEADER       8u
#define HAB_CHECK_REASON_INVALID_STATUS_LINE     9u
#define HAB_CHECK_REASON_INVALID_HEADER          10u
#define HAB_CHECK_REASON_INVALID_CONTENT_LENGTH  11u
#define HAB_CHECK_REASON_STATUS                  12u  /* status: which */
#define HAB_CHECK_REASON_INVALID_CHUNKED_BODY    13u
#define HAB_CHECK_REASON_INCOMPLETE_BODY         14u
#define HAB_CHECK_REASON_BODY_MISMATCH           15u
#define HAB_CHECK_REASON_TLS                     16u
#define HAB_CHECK_REASON_INTERNAL                17u  /* the prober's own */
#define HAB_CHECK_REASON_HTTP2                   18u  /* gRPC: not HTTP/2 */
#define HAB_CHECK_REASON_GRPC_STATUS             19u  /* status: grpc-status */
#define HAB_CHECK_REASON_NOT_SERVING             20u  /* status: serving */


/* One check's verdict and how it went. */
typedef struct hab_check_result {
    uint32_t          passed;      /* non-zero: passed */
    uint32_t          reason;      /* HAB_CHECK_REASON_* */
    uint32_t          status;      /* the answer's HTTP status, 0: none */
    uint32_t          duration_ms; /* from its start to its verdict */
} hab_check_result;


typedef struct hab_check_report {
    uint32_t          transition; /* HAB_CHECK_* */
    uint32_t          rise;       /* consecutive passes */
    uint32_t          fall;       /* consecutive failures */
    uint32_t          reserved;
    hab_panic_report  panic;      /* after a transition */
} hab_check_report;

/*
 * Active checks.  Worker "worker" of "workers" takes the checks due at
 * now_ms (at most cap peer indices into out_peers, their number in
 * *out_n): its own peers (index % workers == worker) when due, others once
 * overdue by an interval and the timeout.  *out_next_ms: when the next
 * one falls due (UINT64_MAX: none).  seed varies the jitter.  Without
 * full only the worker's own peers are looked at (n / workers of them);
 * a full pass, about once per interval, takes over overdue ones.
 */
hab_result hab_check_claim(hab_zone *zone, uint32_t worker, uint32_t workers,
    uint64_t now_ms, uint64_t seed, uint32_t full, uint32_t *out_peers,
    size_t cap, size_t *out_n, uint64_t *out_next_ms);

/*
 * The result of a check of peer that ended at now_ms: its verdict and,
 * kept for the API, its reason, status and duration (an unknown reason:
 * HAB_INVALID_ARGUMENT).  epoch is the slot's epoch when the check started (hab_zone_slot()): if
 * the slot has been given to another server since, the verdict is dropped
 * (HAB_OK, transition HAB_CHECK_NONE).  Only LIVE slots are ever claimed.
 * slot is the calling worker's ledger slot (hab_zone_claim_slot()), or
 * HAB_NO_SLOT: it keeps a slot from being reused while the verdict writes.
 */
hab_result hab_check_done(hab_zone *zone, uint32_t peer, uint32_t epoch,
    uint32_t slot, const hab_check_result *result, uint64_t now_ms,
    hab_check_report *out_report);


/*
 * gRPC health checks (ha_check type=grpc): the prober sends the bytes
 * hab_grpc_request() makes (the HTTP/2 client preface, SETTINGS, one
 * grpc.health.v1.Health/Check call on stream 1) on a new connection, then
 * hands everything read so far to hab_grpc_answer_read() each time more
 * comes, until the verdict is not HAB_GRPC_AGAIN; once the answer says
 * the server's SETTINGS came, it sends a SETTINGS acknowledgement.
 */

#define HAB_GRPC_AGAIN          0u
#define HAB_GRPC_PASSED         1u
#define HAB_GRPC_FAILED         2u

#define HAB_GRPC_SERVICE_MAX    1024u  /* also the longest authority */

typedef struct hab_grpc_answer {
    uint32_t          verdict;    /* HAB_GRPC_* */
    uint32_t          reason;     /* failed: HAB_CHECK_REASON_* */
    uint32_t          status;     /* failed: HTTP, grpc or serving status */
    uint32_t          settings;   /* non-zero: acknowledge the server's */
    uint8_t           why[48];    /* failed: a NUL-terminated text */
} hab_grpc_answer;

/*
 * The bytes of one check to out (cap bytes), their number in *out_len;
 * HAB_NO_SPACE when cap is too small (out may be NULL), the number needed
 * in *out_len.  tls non-zero: ":scheme https".
 */
hab_result hab_grpc_request(const uint8_t *authority, size_t authority_len,
    const uint8_t *service, size_t service_len, uint32_t tls, uint8_t *out,
    size_t cap, size_t *out_len);

/*
 * The verdict on the len bytes the server sent so far, from the first;
 * eof non-zero: nothing more will come.  pass_status: grpc_status=, a
 * grpc-status that passes (0: none).
 */
hab_result hab_grpc_answer_read(const uint8_t *buf, size_t len, uint32_t eof,
    uint32_t pass_status, hab_grpc_answer *out);

/*
 * A worker's health timer: ends the outlier ejections that are over (the
 * peers that returned into out_peers, at most cap, their number in
 * *out_n) and, when the health epoch moved since *epoch (updated),
 * re-evaluates the panic threshold into *out_panic.  slot: the worker's
 * ledger slot; ejections change under a lease named by it (HAB_NO_SLOT:
 * no ejection ends in this worker).
 */
hab_result hab_health_tick(hab_zone *zone, uint64_t now_ms, uint32_t slot,
    uint64_t *epoch, uint32_t *out_peers, size_t cap, size_t *out_n,
    hab_panic_report *out_panic);

/* HAB_INVALID_ARGUMENT when the health values are inconsistent. */
hab_result hab_health_validate(const hab_health_conf *conf);


/* Operator API (ha_api).  See docs/api.md for paths and bodies. */

#define HAB_API_OTHER  0u
#define HAB_API_GET    1u
#define HAB_API_HEAD   2u
#define HAB_API_PATCH  3u
#define HAB_API_DELETE 4u
#define HAB_API_POST   5u

/* hab_api_request.flags */
#define HAB_API_WRITE  0x0001u    /* write=on */
#define HAB_API_HTML   0x0002u    /* the client accepts text/html */

/* hab_api_response.content_type */
#define HAB_API_JSON        0u    /* application/json */
#define HAB_API_PROMETHEUS  1u    /* text/plain; version=0.0.4 */
#define HAB_API_HTML_PAGE   2u    /* text/html */
#define HAB_API_NO_BODY     3u    /* 204 */


typedef struct hab_api_upstream {
    const uint8_t    *name;
    size_t            name_len;
    hab_zone         *zone;
    const hab_learn  *learn;       /* ha_sticky learn's table; NULL: none */
    const uint8_t    *learn_zone;  /* its zone's name */
    size_t            learn_zone_len;
} hab_api_upstream;


/*
 * nginx's own figures, for the NGINX Plus API's "nginx", "processes",
 * "connections" and "http/requests" (zero or empty when unknown).
 */
typedef struct hab_api_nginx {
    const uint8_t  *version;      /* NGINX_VERSION, e.g. "1.22.1" */
    size_t          version_len;
    const uint8_t  *address;      /* the connection's local address, no
                                   * port; may be NULL if address_len 0 */
    size_t          address_len;
    uint64_t        pid;          /* the worker's pid */
    uint64_t        ppid;         /* the master's pid */
    uint64_t        generation;   /* configuration loads since start,
                                   * 1: never reloaded */
    uint64_t        load_wall_ms; /* when the configuration in force was
                                   * loaded, ms since epoch */
    uint64_t        respawned;    /* workers started to replace a dead
                                   * one; 0: not known */
    uint32_t        stub;         /* 1: the counters below are nginx's
                                   * stub_status ones; 0: none */
    uint32_t        reserved;     /* zero */
    uint64_t        accepted;     /* connections accepted */
    uint64_t        handled;      /* connections handled */
    uint64_t        active;       /* connections open, idle ones included */
    uint64_t        requests;     /* requests */
    uint64_t        reading;      /* connections reading a request header */
    uint64_t        writing;      /* connections writing an answer */
    uint64_t        waiting;      /* idle keepalive connections */
} hab_api_nginx;


typedef struct hab_api_request {
    uint32_t        method;       /* HAB_API_GET ... */
    uint32_t        flags;        /* HAB_API_WRITE */
    const uint8_t  *path;         /* below the location, no query string */
    size_t          path_len;
    const uint8_t  *query;        /* without "?"; may be NULL if query_len 0 */
    size_t          query_len;
    const uint8_t  *body;         /* may be NULL when body_len is 0 */
    size_t          body_len;
    const uint8_t  *state_file;   /* NULL: no ha_state_file */
    size_t          state_file_len;
    uint64_t        now_ms;
    uint64_t        wall_ms;      /* wall clock at now_ms, ms since epoch */
    uint64_t        owner;        /* builder lease owner: the worker's pid */
    hab_alive_fn    alive;
    void           *alive_data;
    const uint8_t  *request_id;   /* $request_id; may be NULL if
                                   * request_id_len 0 */
    size_t          request_id_len;
    hab_api_nginx   nginx;
} hab_api_request;


typedef struct hab_api_response {
    uint32_t        status;       /* HTTP status */
    uint32_t        content_type; /* HAB_API_JSON ... */
    hab_buf        *body;         /* never NULL on HAB_OK */
    hab_buf        *log;          /* NULL, or a line for the error log */
    hab_buf        *notice;       /* NULL, or the admin change made, for
                                   * the log at notice */
} hab_api_response;


/*
 * Answers one API request over n upstreams; after an accepted change the
 * state file (if given) is rewritten atomically.  The caller frees
 * out->body, out->log and out->notice.
 */
hab_result hab_api_handle(const hab_api_request *req,
    const hab_api_upstream *ups, size_t n, hab_api_response *out);

/*
 * A body comes in chunks (at most 64 KiB each, never empty):
 * hab_buf_chunk() gives chunk i's length and bytes, 0 past the last;
 * hab_buf_len() the total.  hab_buf_data() is the bytes of a one-chunk
 * buffer, such as a log line.  The bytes stay valid until hab_buf_free().
 */
size_t hab_buf_chunk(const hab_buf *buf, size_t i, const uint8_t **out_data);
const uint8_t *hab_buf_data(const hab_buf *buf);
size_t hab_buf_len(const hab_buf *buf);
void hab_buf_free(hab_buf *buf);


/* State file (ha_state_file): admin state across restart and upgrade. */

typedef struct hab_state hab_state;

/*
 * Reads the state file at path (path_len bytes, not NUL-terminated).
 * *out_state is NULL when the file does not exist.  HAB_BAD_STATE when it
 * cannot be read or is corrupt; the reason in *out_error (free it).
 */
hab_result hab_state_load(const uint8_t *path, size_t path_len,
    hab_state **out_state, hab_buf **out_error);

/*
 * Restores the admin state the file holds for upstream name into a fresh
 * zone: the servers restored in *out_applied, the file's entries for name
 * that match no server in *out_unmatched, and, when the file's weights
 * could not be put in force (dropped: the configured weights serve), why
 * in *out_refused (else NULL; free it).  Each out-parameter may be NULL.
 */
hab_result hab_state_apply(const hab_state *state, hab_zone *zone,
    const uint8_t *name, size_t name_len, uint32_t *out_applied,
    uint32_t *out_unmatched, hab_buf **out_refused);

/*
 * Counts the state file's entries whose upstream is none of the n
 * upstreams of ups (only their names are read): entries in *out_entries,
 * upstreams in *out_upstreams.
 */
hab_result hab_state_unclaimed(const hab_state *state,
    const hab_api_upstream *ups, size_t n, uint32_t *out_entries,
    uint32_t *out_upstreams);

void hab_state_free(hab_state *state);

/*
 * Rewrites the state file at path from the n upstreams (a worker calls it
 * after a health transition; the API does after each change it accepts).
 * HAB_BAD_STATE when it cannot be written, why in *out_err (free it with
 * hab_buf_free()).
 */
hab_result hab_state_save(const hab_api_upstream *ups, size_t n,
    const uint8_t *path, size_t path_len, hab_buf **out_err);


#ifdef __cplusplus
}
#endif

#endif /* HA_BALANCER_H */
