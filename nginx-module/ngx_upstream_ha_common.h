
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

#include <ha_balancer.h>


/* bounds of "table_size=" (the core's maglev::MIN/MAX_TABLE_SIZE) */
#define HAB_MAGLEV_MIN  257
#define HAB_MAGLEV_MAX  65537011


int ngx_upstream_ha_alive(uint64_t owner, void *data);
void ngx_upstream_ha_log_panic(ngx_log_t *log, ngx_str_t *name,
    hab_health_conf *health, hab_panic_report *panic);
ngx_int_t ngx_upstream_ha_parse_time(ngx_str_t *value, size_t skip,
    ngx_uint_t zero, uint32_t *out);
ngx_int_t ngx_upstream_ha_maglev_size(ngx_str_t *value);
ngx_shm_zone_t *ngx_upstream_ha_old_shm_zone(ngx_shm_zone_t *shm_zone,
    size_t prefix);
uint64_t ngx_upstream_ha_monotonic_ns(void);


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
