
/*
 * Copyright (C) ha-balancer authors
 *
 * What does not depend on the protocol balanced (HTTP here, stream
 * later): ngx_upstream_ha_common.c.  Needs only nginx's core headers and
 * the core's ABI (ha_balancer.h).
 */


#ifndef _NGX_UPSTREAM_HA_COMMON_H_INCLUDED_
#define _NGX_UPSTREAM_HA_COMMON_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <ha_balancer.h>


/* bounds of "table_size=" (the core's maglev::MIN/MAX_TABLE_SIZE) */
#define HAB_MAGLEV_MIN  257
#define HAB_MAGLEV_MAX  65537011


typedef struct ngx_upstream_ha_conf_s  ngx_upstream_ha_conf_t;


/* the few calls the protocol-free code makes into its subsystem */

typedef struct {
    /* the zone serves this configuration: new, adopted or carried over */
    void                              (*zone_ready)(
                                          ngx_upstream_ha_conf_t *ha,
                                          ngx_log_t *log);

    /* a changed upstream's zone is about to take old's state */
    void                              (*zone_carry)(
                                          ngx_upstream_ha_conf_t *ha,
                                          ngx_upstream_ha_conf_t *old,
                                          ngx_log_t *log);

    /*
     * the health timer's checks: none in flight (init_process), how
     * many more this worker may start, start one of a slot's server,
     * close idle kept connections unused too long, end those in flight
     * (exit_process)
     */
    void                              (*probe_init)(
                                          ngx_upstream_ha_conf_t *ha);
    ngx_uint_t                        (*probe_room)(void);
    void                              (*probe_start)(
                                          ngx_upstream_ha_conf_t *ha,
                                          uint32_t slot, ngx_log_t *log);
    void                              (*keep_sweep)(
                                          ngx_upstream_ha_conf_t *ha);
    void                              (*stop_probes)(
                                          ngx_upstream_ha_conf_t *ha);

    /* a slot's server address, allocated in pool: for messages */
    ngx_int_t                         (*peer_addr)(
                                          ngx_upstream_ha_conf_t *ha,
                                          uint32_t slot, ngx_pool_t *pool,
                                          ngx_addr_t *addr, ngx_log_t *log);
} ngx_upstream_ha_ops_t;


/* "ha_state_file": its name, and its content, read once per configuration */

typedef struct {
    ngx_str_t                           file;
    hab_state                          *parsed;     /* lazily */
    ngx_uint_t                          read;       /* unsigned:1 */
} ngx_upstream_ha_state_t;


/*
 * What an ha_balance upstream is whatever the protocol it balances: the
 * first member of ngx_http_upstream_ha_srv_conf_t (and, later, of the
 * stream one).
 */

struct ngx_upstream_ha_conf_s {
    ngx_uint_t                          policy;     /* HAB_POLICY_*, 0: unset */
    ngx_str_t                          *name;       /* upstream name */
    ngx_str_t                           subsystem;  /* "http": in zone names */
    const ngx_upstream_ha_ops_t        *ops;

    hab_upstream_conf                   conf;
    hab_health_conf                     health;
    size_t                              zone_size;
    ngx_shm_zone_t                     *shm_zone;
    hab_zone                           *zone;
    uint32_t                            slot;       /* worker's ledger slot */
    ngx_upstream_ha_state_t            *state;      /* NULL: no state file */

    /* ha_api_max: slots for servers added through the API */
    ngx_uint_t                          api_max;

    /* servers resolved at run time: whether any, slots for them */
    ngx_uint_t                          resolve;    /* unsigned:1 */
    ngx_uint_t                          resolve_max;

    /* ha_latency_buckets: the histograms' bounds, ms (none: the default) */
    uint32_t                            buckets[HAB_BUCKETS_MAX];
    ngx_uint_t                          nbuckets;

    /* the list change last refused and logged, by any worker */
    ngx_atomic_t                       *refused_shared;

    /* per worker: the health timer */
    ngx_event_t                         health_ev;
    uint64_t                            health_epoch;
    uint64_t                            health_full;   /* last full pass */
};


int ngx_upstream_ha_alive(uint64_t owner, void *data);
void ngx_upstream_ha_log_panic(ngx_log_t *log, ngx_str_t *name,
    hab_health_conf *health, hab_panic_report *panic);
ngx_int_t ngx_upstream_ha_parse_time(ngx_str_t *value, size_t skip,
    ngx_uint_t zero, uint32_t *out);
ngx_int_t ngx_upstream_ha_maglev_size(ngx_str_t *value);
ngx_shm_zone_t *ngx_upstream_ha_old_shm_zone(ngx_shm_zone_t *shm_zone,
    size_t prefix);
uint64_t ngx_upstream_ha_monotonic_ns(void);


/* ngx_upstream_ha_zone.c: an upstream's shared memory zone */
ngx_int_t ngx_upstream_ha_add_zone(ngx_conf_t *cf, ngx_upstream_ha_conf_t *ha,
    void *tag, u_char *file, ngx_uint_t line);


/* ngx_upstream_ha_health.c: the per-worker health timer */
void ngx_upstream_ha_start_health(ngx_cycle_t *cycle,
    ngx_upstream_ha_conf_t *ha);
void ngx_upstream_ha_stop_health(ngx_upstream_ha_conf_t *ha);


/* ngx_upstream_ha_wake.c: the ha_queue wake channels */

/* channels the master creates: the process slots that can be woken */
#define NGX_UPSTREAM_HA_WAKE_CHANNELS  64

/* ms between two looks at the queues by a worker without a channel */
#define NGX_UPSTREAM_HA_WAKE_POLL      100

typedef void (*ngx_upstream_ha_wake_pt)(ngx_log_t *log);

ngx_int_t ngx_upstream_ha_wake_init_master(ngx_cycle_t *cycle);
uint32_t ngx_upstream_ha_wake_init_worker(ngx_cycle_t *cycle,
    ngx_upstream_ha_wake_pt handler);
uint32_t ngx_upstream_ha_wake_channel(void);
ngx_fd_t ngx_upstream_ha_wake_placeholder(void);
void ngx_upstream_ha_wake(hab_wake *wake, ngx_log_t *log);


#endif /* _NGX_UPSTREAM_HA_COMMON_H_INCLUDED_ */
