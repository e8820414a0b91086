
/*
 * Copyright (C) ha-balancer authors
 *
 * The per-worker health timer of an ha_balance upstream, whatever the
 * protocol it balances: it asks the core which servers this worker checks
 * now (hab_check_claim: one check per server per interval across all
 * workers), starts those checks, and ends ejections and reports panic
 * mode (hab_health_tick).  The checks themselves, and the servers'
 * addresses, are the subsystem's (ha->ops).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <ha_balancer.h>

#include "ngx_upstream_ha_common.h"


/* peers taken per claim, and ejections ended per tick */
#define NGX_UPSTREAM_HA_BATCH     256

/* claims per tick at most */
#define NGX_UPSTREAM_HA_CLAIMS    16

/* longest sleep of the health timer, ms */
#define NGX_UPSTREAM_HA_TICK_MAX  1000


static void ngx_upstream_ha_health_handler(ngx_event_t *ev);


/* init_process: each worker runs a health timer per upstream */

void
ngx_upstream_ha_start_health(ngx_cycle_t *cycle, ngx_upstream_ha_conf_t *ha)
{
    ngx_event_t  *ev;

    if (ha->conf.health == NULL) {
        return;
    }

    ev = &ha->health_ev;

    ev->handler = ngx_upstream_ha_health_handler;
    ev->data = ha;
    ev->log = cycle->log;
    ev->cancelable = 1;

    ha->health_epoch = 0;
    ha->health_full = 0;
    ha->ops->probe_init(ha);

    ngx_add_timer(ev, 1 + ngx_random() % 20);
}


static void
ngx_upstream_ha_health_handler(ngx_event_t *ev)
{
    ngx_upstream_ha_conf_t  *ha = ev->data;

    size_t             i, n, cap;
    uint32_t           peers[NGX_UPSTREAM_HA_BATCH];
    uint64_t           now, next, due;
    uint32_t           workers;
    ngx_uint_t         k, full;
    ngx_msec_t         delay, grain;
    hab_result         rc;
    ngx_addr_t         addr;
    ngx_pool_t        *pool;
    ngx_core_conf_t   *ccf;
    hab_panic_report   panic;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    now = ngx_current_msec;
    next = now + NGX_UPSTREAM_HA_TICK_MAX;

    /*
     * Ticks come at most every interval / 20 (10 ms to 100 ms): a check is
     * late by less than that, and a tick looks at this worker's share of
     * the servers only, the others (overdue ones to take over) once per
     * half interval.
     */

    grain = ngx_max(ngx_min(ha->health.interval_ms / 20, 100), 10);

    if (ha->health.flags & HAB_HEALTH_CHECK) {

        ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                               ngx_core_module);

        /* "master_process off": the one process checks every server */

        workers = (ngx_process == NGX_PROCESS_SINGLE)
                  ? 1 : (uint32_t) ngx_max(ccf->worker_processes, 1);

        full = (now - ha->health_full >= ha->health.interval_ms / 2);
        if (full) {
            ha->health_full = now;
            ha->ops->keep_sweep(ha);
        }

        for (k = 0; k < NGX_UPSTREAM_HA_CLAIMS; k++) {

            /*
             * a check takes a connection: leave most of them to clients;
             * idle kept ones are closed to make room for checks
             */

            cap = ngx_min(ha->ops->probe_room(), NGX_UPSTREAM_HA_BATCH);

            n = 0;
            due = next;

            rc = hab_check_claim(ha->zone, (uint32_t) ngx_worker, workers,
                                 now, ((uint64_t) ngx_random() << 32)
                                      ^ ngx_random(),
                                 full ? 1 : 0, peers, cap, &n, &due);

            if (rc != HAB_OK) {
                ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                              "ha_balance upstream \"%V\": check claim: %s",
                              ha->name, hab_result_str(rc));
                break;
            }

            for (i = 0; i < n; i++) {
                ha->ops->probe_start(ha, peers[i], ev->log);
            }

            if (n < cap) {
                next = ngx_min(next, due);
                break;
            }

            /* more are due than were taken: again, or at the next tick */

            next = now;
        }
    }

    n = 0;
    ngx_memzero(&panic, sizeof(hab_panic_report));

    rc = hab_health_tick(ha->zone, now, ha->slot, &ha->health_epoch,
                         peers, NGX_UPSTREAM_HA_BATCH, &n, &panic);

    if (rc == HAB_OK) {

        pool = n ? ngx_create_pool(1024, ev->log) : NULL;

        for (i = 0; pool && i < n; i++) {
            if (ha->ops->peer_addr(ha, peers[i], pool, &addr, ev->log)
                != NGX_OK)
            {
                continue;
            }

            ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                          "upstream server %V of \"%V\" returns after "
                          "its ejection", &addr.name, ha->name);
        }

        if (pool) {
            ngx_destroy_pool(pool);
        }

        ngx_upstream_ha_log_panic(ev->log, ha->name, &ha->health, &panic);
    }

    if (ha->health.base_ejection_ms || ha->health.panic_percent) {
        next = ngx_min(next, now + 100);
    }

    delay = (next > now) ? (ngx_msec_t) (next - now) : 0;
    delay = ngx_max(delay, grain);

    ngx_add_timer(ev, ngx_min(delay, NGX_UPSTREAM_HA_TICK_MAX));
}


/* exit_process: the checks still in flight end without a verdict */

void
ngx_upstream_ha_stop_health(ngx_upstream_ha_conf_t *ha)
{
    if (ha->conf.health == NULL) {
        return;
    }

    if (ha->health_ev.timer_set) {
        ngx_del_timer(&ha->health_ev);
    }

    ha->ops->stop_probes(ha);
}
