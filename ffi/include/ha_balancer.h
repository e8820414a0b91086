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
 *     (primaries first, then backups), hab_table_size() for the zone size,
 *     hab_conf_digest() to name the zone;
 *   zone init (master): hab_table_attach() on a reused zone, else
 *     hab_table_init() on fresh shared memory;
 *   per request (workers): hab_attempt_size() bytes from the request pool,
 *     hab_attempt_init(), then hab_get() / hab_free() once per try.
 *
 * The table lives entirely inside the caller's memory (nginx shared
 * memory): no pointers inside it, only indices, so it is valid in every
 * process that maps it.
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
    HAB_BUSY = 7001,              /* no eligible peer */
    HAB_NULL_PARAMETER = 7002,
    HAB_PANIC = 7003,             /* a bug: the core panicked, caught */
    HAB_INVALID_ARGUMENT = 7004,
    HAB_NO_SPACE = 7005,          /* memory region too small */
    HAB_BAD_LAYOUT = 7006,        /* region holds no matching table */
    HAB_UNKNOWN_POLICY = 7007,
    HAB_TOO_LARGE = 7008          /* too many peers or total weight */
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
} hab_peer_conf;


typedef struct hab_upstream_conf {
    uint32_t              policy;          /* hab_policy */
    uint32_t              hash_mode;       /* hab_hash_mode, for HASH */
    uint32_t              decay_ms;        /* EWMA; 0: 10 s */
    uint32_t              balance_factor;  /* HASH: percent, 0: unbounded */
    const hab_peer_conf  *peers;   /* primaries first, then backups */
    size_t                npeers;
    uint32_t              maglev_size; /* HASH maglev: table size, 0: default */
} hab_upstream_conf;


/* Opaque: a balancing table inside caller-owned (shared) memory. */
typedef struct hab_table hab_table;

/* Opaque: per-request state inside caller-owned (request pool) memory. */
typedef struct hab_attempt hab_attempt;


/* No ledger slot: the worker's requests are not reconciled if it dies. */
#define HAB_NO_SLOT  0xffffffffu


/* Whether the process owner (a pid) is still alive: non-zero if so. */
typedef int (*hab_alive_fn)(uint64_t owner, void *data);


/* hab_pick.flags */
#define HAB_PICK_BACKUP  0x0001u  /* the peer is a backup server */


typedef struct hab_pick {
    uint32_t        peer;         /* index into hab_upstream_conf.peers */
    uint32_t        flags;        /* HAB_PICK_* */
} hab_pick;


/* hab_free() outcomes */
#define HAB_OUTCOME_OK      0u    /* response accepted */
#define HAB_OUTCOME_FAILED  1u    /* counts against max_fails */
#define HAB_OUTCOME_NEXT    2u    /* passed on (403/404), not a failure */


/* hab_report.flags */
#define HAB_REPORT_DISABLED   0x0001u  /* this failure reached max_fails */
#define HAB_REPORT_RECOVERED  0x0002u  /* this success cleared failures */
#define HAB_REPORT_LAST_TRY   0x0004u  /* single peer: do not retry */


typedef struct hab_report {
    uint32_t        flags;        /* HAB_REPORT_* */
    uint32_t        peer;
} hab_report;


/* A static, NUL-terminated description of a result code. */
const char *hab_result_str(hab_result rc);

/* Layout version of tables this library builds. */
uint32_t hab_layout_version(void);

/* Bytes of shared memory a table for conf needs. */
hab_result hab_table_size(const hab_upstream_conf *conf, size_t *out_size);

/*
 * A 64-bit digest of conf (policy and every peer's identity and
 * parameters); equal digests mean a reused zone can be adopted as is.
 */
hab_result hab_conf_digest(const hab_upstream_conf *conf,
    uint64_t *out_digest);

/*
 * Builds a fresh table in mem (aligned to 64 bytes, len >= table size).
 * All counters start at zero.
 */
hab_result hab_table_init(const hab_upstream_conf *conf, void *mem,
    size_t len, hab_table **out_table);

/*
 * Adopts the table already in mem if it was built for an equal conf:
 * in-flight counts, failure state and cursors carry over.  HAB_BAD_LAYOUT
 * when it does not match (the caller then calls hab_table_init()).
 */
hab_result hab_table_attach(const hab_upstream_conf *conf, void *mem,
    size_t len, hab_table **out_table);

/*
 * After a reload that changed the upstream: copies the failure state and
 * latency estimates of the peers old also has (matched by identity) into
 * the fresh table.  In-flight counts stay with the old table.
 */
hab_result hab_table_inherit(hab_table *table, const hab_table *old,
    uint32_t *out_carried);

/* Number of peers (primaries and backups) in the table. */
uint32_t hab_table_peers(const hab_table *table);

/* Current in-flight count of a peer, summed over all processes. */
hab_result hab_table_in_flight(const hab_table *table, uint32_t peer,
    uint32_t *out_count);

/*
 * Per-worker in-flight ledger.  A worker claims a slot when it starts
 * (nginx: init_process) with its pid as owner; first, the slots of owners
 * that alive() reports dead are reconciled: their requests leave flight.
 * HAB_BUSY when all slots are taken (the worker then passes HAB_NO_SLOT).
 */
hab_result hab_table_claim_slot(hab_table *table, uint64_t owner,
    hab_alive_fn alive, void *data, uint32_t *out_slot);

/* Gives the slot back (nginx: exit_process), reconciling what it holds. */
hab_result hab_table_release_slot(hab_table *table, uint32_t slot,
    uint64_t owner);

/* Bytes of per-request state hab_attempt_init() needs for this table. */
size_t hab_attempt_size(const hab_table *table);

/*
 * Prepares per-request state in mem (aligned to 8 bytes).  seed feeds the
 * attempt's random draws (p2c, ewma, random); pass a per-process random
 * number so that workers draw independently.  slot is the worker's ledger
 * slot, or HAB_NO_SLOT.
 */
hab_result hab_attempt_init(const hab_table *table, void *mem, size_t len,
    uint64_t now_ms, uint64_t seed, uint32_t slot, hab_attempt **out_attempt);

/*
 * Picks a peer not yet tried by this attempt and counts it in flight.
 * HAB_BUSY when no peer is eligible.  key (key_len bytes; may be NULL when
 * key_len is 0) is the request's hash key, the same on every try; other
 * policies ignore it.  now_ms is a monotonic clock shared by all processes
 * (nginx's ngx_current_msec).
 */
hab_result hab_get(hab_table *table, hab_attempt *attempt,
    const uint8_t *key, size_t key_len, uint64_t now_ms, hab_pick *out_pick);

/*
 * Ends the current try of this attempt with a HAB_OUTCOME_*: the peer
 * leaves flight and its failure state is updated.  Calling it with no try
 * in progress returns HAB_INVALID_ARGUMENT and changes nothing.
 */
hab_result hab_free(hab_table *table, hab_attempt *attempt, uint32_t outcome,
    uint64_t now_ms, hab_report *out_report);


#ifdef __cplusplus
}
#endif

#endif /* HA_BALANCER_H */
