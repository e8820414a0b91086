
/*
 * Copyright (C) ha-balancer authors
 *
 * The module's part in the life of a cycle: in the master once every zone
 * is initialised (init_module), and in each worker process what it takes
 * at its start and gives back at its exit (init_process, exit_process):
 * its slot of every zone's in-flight ledger, the resolve and health
 * timers, its peer index; in the master at its exit (exit_master), the
 * learnt sessions saved for the next start.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


/*
 * Configurations loaded since nginx started, counted in the master (the
 * module stays loaded across a reload, its statics with it); each worker
 * is forked with its cycle's number.
 */

static uint64_t  ngx_http_upstream_ha_loads;


/*
 * After every zone is initialised: the configuration's number and time
 * of load are taken (the NGINX Plus API's "generation" and
 * "load_timestamp"); the state file's entries of upstreams that are not
 * configured (renamed or removed) are ignored, and said so once.  Only
 * when the file was read, i.e. some zone was fresh.
 */

ngx_int_t
ngx_http_upstream_ha_init_module(ngx_cycle_t *cycle)
{
    uint32_t                           entries, upstreams;
    ngx_uint_t                         i, n;
    hab_api_upstream                  *ups;
    ngx_http_upstream_ha_srv_conf_t   *hcf;
    ngx_http_upstream_main_conf_t     *umcf;
    ngx_http_upstream_ha_main_conf_t  *hmcf;

    /* ha_queue: the wake channels, before any worker is forked */

    i = 0;

    while ((hcf = ngx_http_upstream_ha_next_conf(cycle, &i)) != NULL) {
        if (hcf->ha.health.queue) {
            if (ngx_upstream_ha_wake_init_master(cycle) != NGX_OK) {
                return NGX_ERROR;
            }

            break;
        }
    }

    hmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_upstream_ha_module);

    if (hmcf == NULL) {
        return NGX_OK;
    }

    hmcf->generation = ++ngx_http_upstream_ha_loads;
    hmcf->load_wall_ms = (uint64_t) ((int64_t) ngx_current_msec
                                     + hmcf->wall_offset);

    if (hmcf->state.parsed == NULL) {
        return NGX_OK;
    }

    umcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_upstream_module);

    ups = ngx_pnalloc(cycle->pool, (umcf->upstreams.nelts + 1)
                                   * sizeof(hab_api_upstream));
    if (ups == NULL) {
        return NGX_ERROR;
    }

    n = ngx_http_upstream_ha_upstreams(cycle, ups);

    if (hab_state_unclaimed(hmcf->state.parsed, ups, n, &entries, &upstreams)
        == HAB_OK
        && upstreams)
    {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "%uD entries of %uD upstreams in \"%V\" name no "
                      "ha_balance upstream, ignored", entries, upstreams,
                      &hmcf->state.file);
    }

    return NGX_OK;
}


/*
 * Each worker claims a slot of every zone's in-flight ledger; claiming
 * first returns the requests of workers that died, and their holds on
 * table generations (see core/src/layout/ledger.rs).
 */

ngx_int_t
ngx_http_upstream_ha_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    hab_result                        rc;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    i = 0;

    while ((hcf = ngx_http_upstream_ha_next_conf(cycle, &i)) != NULL) {

        rc = hab_zone_claim_slot(hcf->ha.zone, (uint64_t) ngx_pid,
                                 ngx_upstream_ha_alive, NULL,
                                 &hcf->ha.slot);

        if (rc != HAB_OK) {
            hcf->ha.slot = HAB_NO_SLOT;
            ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                          "ha_balance upstream \"%V\": no ledger slot: %s",
                          hcf->ha.name, hab_result_str(rc));
        }

#if (HAB_RESOLVE)
        if (hcf->ha.resolve
            && ngx_http_upstream_ha_start_resolve(cycle, hcf) != NGX_OK)
        {
            return NGX_ERROR;
        }
#else
        /* ha_server: worker 0 resolves (a respawned one resumes) */

        ngx_http_upstream_ha_start_dns(cycle, hcf);
#endif

        ngx_upstream_ha_start_health(cycle, &hcf->ha);

        /* ha_queue: the wake channel; the head, if the claim freed it */

        ngx_http_upstream_ha_queue_start(cycle, hcf);
    }

    return NGX_OK;
}


void
ngx_http_upstream_ha_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    i = 0;

    while ((hcf = ngx_http_upstream_ha_next_conf(cycle, &i)) != NULL) {

        /* checks in flight first: they name peers by the index */

        ngx_upstream_ha_stop_health(&hcf->ha);

#if (HAB_RESOLVE)
        if (hcf->ha.resolve) {
            ngx_http_upstream_ha_stop_resolve(hcf);
        }
#else
        ngx_http_upstream_ha_stop_dns(hcf);
#endif

        /* this worker's peers for servers added through the API */

        ngx_http_upstream_ha_free_added(hcf);

        /* the peer index ngx_http_upstream_ha_index() built */

        if (hcf->peer) {
            ngx_free(hcf->peer);
            hcf->peer = NULL;
            hcf->indexed = NULL;
        }

        if (hcf->ha.slot == HAB_NO_SLOT) {
            continue;
        }

        (void) hab_zone_release_slot(hcf->ha.zone, hcf->ha.slot,
                                     (uint64_t) ngx_pid);
        hcf->ha.slot = HAB_NO_SLOT;
    }
}


/*
 * The master's exit (a stop, a restart): learnt sessions go to the
 * sessions file beside ha_state_file, for the next start.
 */

void
ngx_http_upstream_ha_exit_master(ngx_cycle_t *cycle)
{
    uint64_t                           saved;
    hab_buf                           *err;
    ngx_str_t                         *state_file;
    ngx_uint_t                         i, n;
    hab_result                         rc;
    hab_learn_zone                    *zones;
    ngx_http_upstream_ha_srv_conf_t   *hcf;

    n = 0;
    i = 0;
    state_file = NULL;

    while ((hcf = ngx_http_upstream_ha_next_conf(cycle, &i)) != NULL) {
        if (hcf->sticky.learn != NULL && hcf->sticky.state_file != NULL) {
            state_file = hcf->sticky.state_file;
            n++;
        }
    }

    if (n == 0) {
        return;
    }

    zones = ngx_alloc(n * sizeof(hab_learn_zone), cycle->log);
    if (zones == NULL) {
        return;
    }

    n = 0;
    i = 0;

    while ((hcf = ngx_http_upstream_ha_next_conf(cycle, &i)) != NULL) {
        if (hcf->sticky.learn != NULL && hcf->sticky.state_file != NULL) {
            zones[n].name = hcf->sticky.shm_zone->shm.name.data;
            zones[n].name_len = hcf->sticky.shm_zone->shm.name.len;
            zones[n].table = hcf->sticky.learn;
            n++;
        }
    }

    ngx_time_update();

    err = NULL;
    saved = 0;

    rc = hab_sessions_save(state_file->data, state_file->len, zones, n,
                           ngx_current_msec, &saved, &err);

    if (rc == HAB_OK) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "%uL learnt sessions of %ui zones saved beside "
                      "ha_state_file \"%V\"", saved, n, state_file);

    } else if (err != NULL) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "cannot save learnt sessions: %*s",
                      hab_buf_len(err), hab_buf_data(err));
        hab_buf_free(err);
    }

    ngx_free(zones);
}
