
/*
 * Copyright (C) ha-balancer authors
 *
 * Types and functions shared by the files of ngx_http_upstream_ha_module:
 * the balancer (ngx_http_upstream_ha_module.c), its health directives
 * (ngx_http_upstream_ha_check.c), the active checks themselves
 * (ngx_http_upstream_ha_probe.c), servers resolved at run time
 * (ngx_http_upstream_ha_resolve.c), the API and state file
 * (ngx_http_upstream_ha_api.c), the request queue
 * (ngx_http_upstream_ha_queue.c), the check answers' parser
 * (ngx_http_upstream_ha_answer.c), nginx's peers and the core's
 * (ngx_http_upstream_ha_peers.c), the peers a worker builds for slots no
 * nginx list covers (ngx_http_upstream_ha_added.c), the module's hooks in a
 * cycle's life (ngx_http_upstream_ha_process.c) and what does not depend on
 * the protocol (ngx_upstream_ha_common.h: the common conf
 * ngx_upstream_ha_conf_t, the shared memory zone's life in
 * ngx_upstream_ha_zone.c, the health timer in ngx_upstream_ha_health.c,
 * ngx_upstream_ha_common.c, ngx_upstream_ha_wake.c).  No file calls one that
 * calls it back, and the ngx_upstream_ha_* files include neither ngx_http.h
 * nor ngx_stream.h (tests/layers.rs).
 */


#ifndef _NGX_HTTP_UPSTREAM_HA_MODULE_H_INCLUDED_
#define _NGX_HTTP_UPSTREAM_HA_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_upstream_ha_common.h"


/*
 * Servers resolved at run time ("server ... resolve", "service="): nginx
 * 1.27.3 and later, with the upstream zone module.  Older nginx (Debian's
 * 1.22) builds the rest from the same source and refuses "resolve" itself.
 */
#if (NGX_HTTP_UPSTREAM_ZONE && defined NGX_HTTP_UPSTREAM_MODIFY             \
     && nginx_version >= 1027003)
#define HAB_RESOLVE  1
#else
#define HAB_RESOLVE  0
#endif

/*
 * nginx 1.29.6 and later have their own "sticky", which asks the balancer
 * for a server by session id (pc->hint) and reads the chosen server's id
 * back (pc->sid): every upstream then keeps its servers' ids, so that
 * stock "sticky" works over ha_balance too (in O(1)).
 */
#if (nginx_version >= 1029006 && (NGX_HTTP_UPSTREAM_SID || NGX_COMPAT))
#define HAB_STOCK_SID  1
#else
#define HAB_STOCK_SID  0
#endif

/* ha_resolve_max: slots for resolved servers, by default */
#define HAB_RESOLVE_MAX_DEFAULT  1024
#define HAB_RESOLVE_MAX_LIMIT    (1 << 20)

/* ha_api_max: slots for servers added through the API */
#define HAB_API_MAX_LIMIT        (1 << 20)


#define NGX_HTTP_UPSTREAM_HA_CHECK_HTTP  0
#define NGX_HTTP_UPSTREAM_HA_CHECK_TCP   1
#define NGX_HTTP_UPSTREAM_HA_CHECK_GRPC  2

/* ha_check keepalive_time= by default, ms */
#define NGX_HTTP_UPSTREAM_HA_KEEPALIVE   60000


typedef struct {
    ngx_upstream_ha_state_t             state;      /* ha_state_file */

    /*
     * wall clock minus ngx_current_msec, ms, taken once in the master so
     * that every worker shows the same dates for the same instants
     */
    int64_t                             wall_offset;

    /*
     * this configuration's load (the master's init_module): its number
     * since nginx started, 1: never reloaded; when, ms since the epoch
     */
    uint64_t                            generation;
    uint64_t                            load_wall_ms;
} ngx_http_upstream_ha_main_conf_t;


typedef struct {
    ngx_flag_t                          enable;
    ngx_flag_t                          write;
    ngx_str_t                           prefix;     /* the location's name */
    ngx_int_t                           request_id; /* $request_id's index */
} ngx_http_upstream_ha_api_conf_t;


typedef struct {
    ngx_uint_t                          lo;
    ngx_uint_t                          hi;
} ngx_http_upstream_ha_range_t;


/* ha_check: how a check is made (the core decides who and when) */

typedef struct {
    ngx_uint_t                          set;        /* unsigned:1 */
    ngx_uint_t                          type;       /* ..._CHECK_* */
    ngx_str_t                           uri;
    ngx_str_t                           host;       /* empty: the server's */
    in_port_t                           port;       /* 0: the server's */
    ngx_uint_t                          tls;        /* unsigned:1 */
    ngx_array_t                        *status;     /* of ..._range_t */
#if (NGX_PCRE)
    ngx_regex_t                        *body;
#endif
    ngx_str_t                           body_src;
    ngx_msec_t                          keepalive;  /* keepalive_time, 0: off */

    /* type=grpc: grpc_service=, grpc_status= (0: none) */
    ngx_str_t                           grpc_service;
    ngx_uint_t                          grpc_status;

    /* the request: method=, ha_check_header, ha_check_body */
    ngx_str_t                           method;     /* empty: GET */
    ngx_array_t                        *headers;    /* of "Name: value" */
    ngx_str_t                           request_body;
    unsigned                            request_body_set:1;
    unsigned                            host_header:1;  /* Host given */
    unsigned                            agent_header:1; /* User-Agent */
#if (NGX_HTTP_SSL)
    ngx_ssl_t                          *ssl;
#endif
} ngx_http_upstream_ha_check_conf_t;


/* ha_sticky: how a request names the server it is bound to */

#define NGX_HTTP_UPSTREAM_HA_STICKY_NONE    0
#define NGX_HTTP_UPSTREAM_HA_STICKY_COOKIE  1
#define NGX_HTTP_UPSTREAM_HA_STICKY_ROUTE   2
#define NGX_HTTP_UPSTREAM_HA_STICKY_LEARN   3

typedef struct {
    ngx_uint_t                          mode;       /* ..._STICKY_* */
    ngx_array_t                        *lookup;     /* variable indexes */
    ngx_array_t                        *create;     /* learn */
    ngx_array_t                        *routes;     /* ha_route */

    /* cookie */
    ngx_str_t                           cookie_name;
    ngx_http_complex_value_t           *domain;
    ngx_http_complex_value_t           *samesite;
    ngx_str_t                           path;       /* "; path=..." */
    time_t                              expires;    /* NGX_CONF_UNSET: none */
    unsigned                            httponly:1;
    unsigned                            secure:1;

    /* learn */
    unsigned                            header:1;
    ngx_msec_t                          timeout;
    ngx_str_t                           host;       /* the upstream's name */
    ngx_shm_zone_t                     *shm_zone;
    ngx_str_t                          *state_file; /* ha_state_file */
    hab_learn                          *learn;
    void                               *learn_mem;
    size_t                              learn_len;
} ngx_http_upstream_ha_sticky_conf_t;


/*
 * A worker's own peer for a slot filled through the API (ha_api_max): no
 * nginx list holds it.  Built from the slot when a pick first names it,
 * rebuilt when the slot's epoch says another server took it.
 */

typedef struct {
    ngx_http_upstream_rr_peer_t         peer;
    uint32_t                            epoch;      /* built for */
    ngx_sockaddr_t                      sockaddr;
    u_char                              name[NGX_SOCKADDR_STRLEN];
    u_char                             *server;     /* ngx_alloc()ed */
    size_t                              server_size;
} ngx_http_upstream_ha_added_t;


/*
 * "ha_server NAME resolve" (nginx older than 1.27.3): a name the module
 * resolves itself, in worker 0, with nginx's resolver; the parameters
 * every address it resolves to takes, and, per worker, its last answer.
 */

typedef struct {
    ngx_str_t                           id;         /* upstream\0server\0addr */
    ngx_str_t                           server;     /* inside id */
    uint32_t                            weight;
    ngx_uint_t                          backup;     /* unsigned:1 */
} ngx_http_upstream_ha_dns_addr_t;


typedef struct ngx_http_upstream_ha_srv_conf_s
    ngx_http_upstream_ha_srv_conf_t;

typedef struct {
    ngx_str_t                           server;     /* as written */
    ngx_str_t                           name;       /* to resolve */
    ngx_str_t                           service;    /* SRV, or empty */
    in_port_t                           port;       /* without service */
    ngx_uint_t                          weight;
    ngx_uint_t                          max_conns;
    ngx_uint_t                          max_fails;
    time_t                              fail_timeout;
    unsigned                            backup:1;
    unsigned                            down:1;

    /* per worker (worker 0): the timer, the last answer */
    unsigned                            answered:1;
    ngx_event_t                         event;
    ngx_http_upstream_ha_srv_conf_t    *hcf;
    ngx_pool_t                         *pool;       /* of addrs */
    ngx_http_upstream_ha_dns_addr_t    *addrs;
    ngx_uint_t                          naddrs;
} ngx_http_upstream_ha_host_t;


/* a worker's view of one peer slot: the nginx peer holding it */

typedef struct {
    ngx_http_upstream_rr_peer_t        *peer;       /* NULL: none here */
    ngx_http_upstream_rr_peers_t       *peers;      /* its list */
} ngx_http_upstream_ha_slot_t;


struct ngx_http_upstream_ha_srv_conf_s {
    /* what does not depend on the protocol: must be first */
    ngx_upstream_ha_conf_t              ha;

    ngx_http_complex_value_t            key;        /* hash */
    ngx_http_upstream_srv_conf_t       *uscf;

    ngx_http_upstream_ha_sticky_conf_t  sticky;
    ngx_http_upstream_ha_check_conf_t   check;
    ngx_http_upstream_ha_main_conf_t   *hmcf;

    /* per worker: table index -> nginx peer, built lazily */
    ngx_http_upstream_rr_peers_t       *indexed;
    ngx_http_upstream_rr_peer_t       **peer;
    ngx_uint_t                          npeers;

    /*
     * ha_api_max (ha.api_max): slots for servers added through the API,
     * after the configured ones; per worker, their peers (slot npeers + i
     * in added[i], NULL until used), the list they claim to be in (no
     * shared pool: TLS sessions stay in the worker), and how many are
     * live in generation added_gen
     */
    ngx_http_upstream_ha_added_t      **added;
    ngx_http_upstream_rr_peers_t       *added_peers;
    uint64_t                            added_gen;
    ngx_uint_t                          added_live;

    /*
     * servers resolved at run time (ha.resolve, ha.resolve_max): this
     * configuration's list id; per worker, slot -> nginx peer, valid while
     * the list's change counter is map_config and the zone serves
     * map_source
     */
    uint64_t                            list_id;
    ngx_http_upstream_ha_slot_t        *map;
    ngx_uint_t                          map_valid;  /* unsigned:1 */
    ngx_uint_t                          map_config;
    hab_source                          map_source;
    ngx_uint_t                          refused;    /* config last logged */
    ngx_event_t                         resolve_ev;

    /* per worker: the checks in flight (the health timer: ha) */
    ngx_uint_t                          probes;
    ngx_queue_t                         probing;    /* checks in flight */
    ngx_rbtree_t                        kept;       /* idle, by slot */
    ngx_rbtree_node_t                   kept_sentinel;

    /*
     * ha_queue (health.queue: its number); per worker, this worker's
     * waiters in ticket order and their watchdog
     */
    ngx_msec_t                          queue_timeout;
    ngx_queue_t                         waiters;
    ngx_uint_t                          nwaiters;
    ngx_event_t                         queue_ev;
    uint64_t                            queue_head;  /* at the last tick */
    ngx_uint_t                          queue_stuck; /* ticks it stayed */

    /*
     * slots after the configured ones whose peers each worker may build
     * itself (ngx_http_upstream_ha_added_peer): every one after them,
     * ha_resolve_max (with "server ... resolve" or "ha_server") plus
     * ha_api_max; with "server ... resolve" only the API's are built so,
     * nginx has peers for the others
     */
    ngx_uint_t                          added_max;

    /*
     * "ha_server" (nginx older than 1.27.3): the names, nginx's resolver
     * (http{}); per worker (worker 0), the list last applied (its
     * digest and source counter) and a timer to apply it again when the
     * core could not
     */
    ngx_array_t                        *hosts;      /* ..._ha_host_t */
    ngx_uint_t                          nprimary;   /* configured */
    ngx_resolver_t                     *resolver;
    ngx_msec_t                          resolver_timeout;
    uint32_t                            dns_digest;
    uint64_t                            dns_config;
    ngx_uint_t                          dns_logged; /* digest + 1 */
    ngx_event_t                         dns_ev;
};


typedef struct ngx_http_upstream_ha_waiter_s  ngx_http_upstream_ha_waiter_t;


typedef struct {
    /* the round robin peer data must be first */
    ngx_http_upstream_rr_peer_data_t    rrp;

    ngx_http_upstream_ha_srv_conf_t    *conf;
    ngx_http_request_t                 *request;
    ngx_http_upstream_rr_peers_t       *peers;      /* primaries */
    hab_attempt                        *attempt;
    ngx_str_t                           key;        /* hash */
    ngx_uint_t                          ref;        /* unsigned:1 */

    /* ha_queue: the request's wait, if it waits; whether get ran once */
    ngx_http_upstream_ha_waiter_t      *waiter;
    ngx_uint_t                          tried;      /* unsigned:1 */

    /* ha_sticky */
    ngx_str_t                           sid;        /* the request's id */
    uint64_t                            sid_hash;   /* a learnt session's */
    uint64_t                            picked_sid; /* the last pick's */
    ngx_table_elt_t                    *cookie;
    ngx_uint_t                          learnt;     /* unsigned:1 */
#if (HAB_STOCK_SID)
    ngx_str_t                           stock_sid;  /* pc->sid for "sticky" */
#endif
} ngx_http_upstream_ha_peer_data_t;


extern ngx_module_t  ngx_http_upstream_ha_module;


/* ngx_http_upstream_ha_process.c: the module's hooks in a cycle */
ngx_int_t ngx_http_upstream_ha_init_module(ngx_cycle_t *cycle);
ngx_int_t ngx_http_upstream_ha_init_process(ngx_cycle_t *cycle);
void ngx_http_upstream_ha_exit_process(ngx_cycle_t *cycle);
void ngx_http_upstream_ha_exit_master(ngx_cycle_t *cycle);

/* ngx_http_upstream_ha_peers.c: nginx's peers and the core's */
ngx_int_t ngx_http_upstream_ha_add_peers(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_rr_peers_t *peers, hab_peer_conf *pc, uint32_t flags);
void ngx_http_upstream_ha_positions(ngx_http_upstream_srv_conf_t *us,
    hab_peer_conf *pc, ngx_uint_t nprimary, ngx_uint_t n);
ngx_int_t ngx_http_upstream_ha_index(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_rr_peers_t *peers, ngx_log_t *log);
ngx_int_t ngx_http_upstream_ha_copy_peer(ngx_http_upstream_ha_srv_conf_t *hcf,
    uint32_t slot, ngx_pool_t *pool, ngx_addr_t *addr, ngx_str_t *server,
    ngx_log_t *log);
ngx_http_upstream_ha_srv_conf_t *ngx_http_upstream_ha_next_conf(
    ngx_cycle_t *cycle, ngx_uint_t *i);
ngx_uint_t ngx_http_upstream_ha_upstreams(ngx_cycle_t *cycle,
    hab_api_upstream *ups);

/* ngx_http_upstream_ha_added.c: peers a worker builds from a slot */
ngx_http_upstream_rr_peer_t *ngx_http_upstream_ha_added_peer(
    ngx_http_upstream_ha_srv_conf_t *hcf, uint32_t slot, ngx_log_t *log);
ngx_uint_t ngx_http_upstream_ha_added_live(
    ngx_http_upstream_ha_srv_conf_t *hcf);
void ngx_http_upstream_ha_free_added(ngx_http_upstream_ha_srv_conf_t *hcf);

char *ngx_http_upstream_ha_check_header(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_upstream_ha_check_body(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_upstream_ha_check(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_upstream_ha_slow_start(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_upstream_ha_outlier(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_upstream_ha_panic(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_upstream_ha_init_health(ngx_conf_t *cf,
    ngx_http_upstream_ha_srv_conf_t *hcf);

char *ngx_http_upstream_ha_resolve_max(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_upstream_ha_dns.c: "ha_server", names the module resolves */
char *ngx_http_upstream_ha_server(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_upstream_ha_init_empty(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
ngx_int_t ngx_http_upstream_ha_init_dns(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_uint_t n);
void ngx_http_upstream_ha_dns_seed(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_ha_srv_conf_t *ohcf, ngx_log_t *log);
void ngx_http_upstream_ha_start_dns(ngx_cycle_t *cycle,
    ngx_http_upstream_ha_srv_conf_t *hcf);
void ngx_http_upstream_ha_stop_dns(ngx_http_upstream_ha_srv_conf_t *hcf);

/* ngx_http_upstream_ha_probe.c: one check of one server */

extern ngx_uint_t  ngx_http_upstream_ha_probes;   /* in flight, all upstreams */

ngx_uint_t ngx_http_upstream_ha_probe_limit(void);
ngx_uint_t ngx_http_upstream_ha_probe_room(void);
void ngx_http_upstream_ha_probe_init(ngx_upstream_ha_conf_t *ha);
void ngx_http_upstream_ha_probe_start(ngx_upstream_ha_conf_t *ha,
    uint32_t peer, ngx_log_t *log);
void ngx_http_upstream_ha_keep_sweep(ngx_upstream_ha_conf_t *ha);
void ngx_http_upstream_ha_stop_probes(ngx_upstream_ha_conf_t *ha);

/* ngx_http_upstream_ha_answer.c: what a check's answer must be */

/* the length of a body whose chunks tell where it ends */
#define NGX_HTTP_UPSTREAM_HA_CHUNKED  -2

ngx_int_t ngx_http_upstream_ha_parse_head(u_char *s, u_char *end,
    ngx_uint_t *status, u_char **body, off_t *length, ngx_uint_t *keep,
    const char **why);
ngx_int_t ngx_http_upstream_ha_chunked_end(u_char *s, u_char *end,
    u_char **last);

/* ngx_http_upstream_ha_sticky.c: "ha_sticky" and "ha_route" */
char *ngx_http_upstream_ha_sticky(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_upstream_ha_route(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_upstream_ha_init_sticky(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf);
ngx_int_t ngx_http_upstream_ha_check_routes(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf);
void ngx_http_upstream_ha_sticky_route(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_rr_peer_t *peer, hab_peer_conf *pc);
void ngx_http_upstream_ha_sticky_init_peer(
    ngx_http_upstream_ha_peer_data_t *hp);
hab_result ngx_http_upstream_ha_sticky_pick(
    ngx_http_upstream_ha_peer_data_t *hp, ngx_peer_connection_t *pc,
    hab_pick *pick);
void ngx_http_upstream_ha_sticky_picked(ngx_http_upstream_ha_peer_data_t *hp,
    ngx_peer_connection_t *pc, hab_pick *pick);
void ngx_http_upstream_ha_sticky_learn(ngx_http_upstream_ha_peer_data_t *hp);
ngx_int_t ngx_http_upstream_ha_sticky_filter_init(ngx_conf_t *cf);

/* ngx_http_upstream_ha_queue.c: "ha_queue", requests waiting for a server */
char *ngx_http_upstream_ha_queue(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_upstream_ha_queue_pick(ngx_http_upstream_ha_peer_data_t *hp,
    ngx_peer_connection_t *pc, hab_pick *pick);
void ngx_http_upstream_ha_queue_start(ngx_cycle_t *cycle,
    ngx_http_upstream_ha_srv_conf_t *hcf);
void ngx_http_upstream_ha_queue_kick(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_log_t *log);

/* ngx_http_upstream_ha_api.c: "ha_api" and "ha_state_file" */
char *ngx_http_upstream_ha_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_upstream_ha_state_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void *ngx_http_upstream_ha_create_api_conf(ngx_conf_t *cf);
char *ngx_http_upstream_ha_merge_api_conf(ngx_conf_t *cf, void *parent,
    void *child);
void ngx_http_upstream_ha_save_state(ngx_http_upstream_ha_srv_conf_t *hcf);

#if (HAB_RESOLVE)
ngx_int_t ngx_http_upstream_ha_init_resolve(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_uint_t n);
ngx_int_t ngx_http_upstream_ha_sync(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_log_t *log);
void ngx_http_upstream_ha_unref(ngx_http_upstream_ha_peer_data_t *hp);
void ngx_http_upstream_ha_init_resolved_peer(
    ngx_http_upstream_ha_peer_data_t *hp, ngx_log_t *log);
ngx_int_t ngx_http_upstream_ha_get_resolved_peer(ngx_peer_connection_t *pc,
    void *data);
ngx_int_t ngx_http_upstream_ha_copy_resolved_peer(
    ngx_http_upstream_ha_srv_conf_t *hcf, uint32_t slot, ngx_pool_t *pool,
    ngx_addr_t *addr, ngx_str_t *server, ngx_log_t *log);
ngx_int_t ngx_http_upstream_ha_start_resolve(ngx_cycle_t *cycle,
    ngx_http_upstream_ha_srv_conf_t *hcf);
void ngx_http_upstream_ha_stop_resolve(ngx_http_upstream_ha_srv_conf_t *hcf);
#endif


#endif /* _NGX_HTTP_UPSTREAM_HA_MODULE_H_INCLUDED_ */
