
/*
 * Copyright (C) ha-balancer authors
 *
 * Types shared by the balancer (ngx_http_upstream_ha_module.c) and its
 * active health checks (ngx_http_upstream_ha_check.c).
 */


#ifndef _NGX_HTTP_UPSTREAM_HA_MODULE_H_INCLUDED_
#define _NGX_HTTP_UPSTREAM_HA_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>


/* bounds of "table_size=" (the core's maglev::MIN/MAX_TABLE_SIZE) */
#define HAB_MAGLEV_MIN  257
#define HAB_MAGLEV_MAX  65537011


#define NGX_HTTP_UPSTREAM_HA_CHECK_HTTP  0
#define NGX_HTTP_UPSTREAM_HA_CHECK_TCP   1


typedef struct {
    ngx_str_t                           state_file;
    hab_state                          *state;      /* parsed, lazily */
    ngx_uint_t                          state_read; /* unsigned:1 */

    /*
     * wall clock minus ngx_current_msec, ms, taken once in the master so
     * that every worker shows the same dates for the same instants
     */
    int64_t                             wall_offset;
} ngx_http_upstream_ha_main_conf_t;


typedef struct {
    ngx_flag_t                          enable;
    ngx_flag_t                          write;
    ngx_str_t                           prefix;     /* the location's name */
} ngx_http_upstream_ha_api_conf_t;


typedef struct {
    ngx_uint_t                          lo;
    ngx_uint_t                          hi;
} ngx_http_upstream_ha_range_t;


/* ha_check: how a check is made (the core decides who and when) */

typedef struct {
    ngx_uint_t                          set;        /* unsigned:1 */
    ngx_uint_t                          type;       /* ..._CHECK_HTTP/TCP */
    ngx_str_t                           uri;
    ngx_str_t                           host;       /* empty: the server's */
    in_port_t                           port;       /* 0: the server's */
    ngx_uint_t                          tls;        /* unsigned:1 */
    ngx_array_t                        *status;     /* of ..._range_t */
#if (NGX_PCRE)
    ngx_regex_t                        *body;
#endif
    ngx_str_t                           body_src;
#if (NGX_HTTP_SSL)
    ngx_ssl_t                          *ssl;
#endif
} ngx_http_upstream_ha_check_conf_t;


typedef struct {
    ngx_uint_t                          policy;     /* HAB_POLICY_*, 0: unset */
    ngx_str_t                          *name;       /* upstream name */
    ngx_http_complex_value_t            key;        /* hash */
    ngx_http_upstream_srv_conf_t       *uscf;

    hab_upstream_conf                   conf;
    hab_health_conf                     health;
    ngx_http_upstream_ha_check_conf_t   check;
    size_t                              zone_size;
    ngx_shm_zone_t                     *shm_zone;
    hab_zone                           *zone;
    uint32_t                            slot;       /* worker's ledger slot */
    ngx_http_upstream_ha_main_conf_t   *hmcf;

    /* per worker: table index -> nginx peer, built lazily */
    ngx_http_upstream_rr_peers_t       *indexed;
    ngx_http_upstream_rr_peer_t       **peer;
    ngx_uint_t                          npeers;

    /* per worker: the health timer and its checks in flight */
    ngx_event_t                         health_ev;
    uint64_t                            health_epoch;
    uint64_t                            health_full;   /* last full pass */
    ngx_uint_t                          probes;
    ngx_queue_t                         probing;    /* checks in flight */
} ngx_http_upstream_ha_srv_conf_t;


typedef struct {
    /* the round robin peer data must be first */
    ngx_http_upstream_rr_peer_data_t    rrp;

    ngx_http_upstream_ha_srv_conf_t    *conf;
    ngx_http_request_t                 *request;
    ngx_http_upstream_rr_peers_t       *peers;      /* primaries */
    hab_attempt                        *attempt;
    ngx_str_t                           key;        /* hash */
} ngx_http_upstream_ha_peer_data_t;


extern ngx_module_t  ngx_http_upstream_ha_module;


ngx_int_t ngx_http_upstream_ha_index(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_rr_peers_t *peers, ngx_log_t *log);
ngx_http_upstream_ha_srv_conf_t *ngx_http_upstream_ha_next_conf(
    ngx_cycle_t *cycle, ngx_uint_t *i);
ngx_uint_t ngx_http_upstream_ha_upstreams(ngx_cycle_t *cycle,
    hab_api_upstream *ups);

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
void ngx_http_upstream_ha_start_health(ngx_cycle_t *cycle,
    ngx_http_upstream_ha_srv_conf_t *hcf);
void ngx_http_upstream_ha_stop_health(ngx_http_upstream_ha_srv_conf_t *hcf);
void ngx_http_upstream_ha_log_panic(ngx_log_t *log,
    ngx_http_upstream_ha_srv_conf_t *hcf, hab_panic_report *panic);


#endif /* _NGX_HTTP_UPSTREAM_HA_MODULE_H_INCLUDED_ */
