
/*
 * Copyright (C) ha-balancer authors
 *
 * An upstream's shared memory zone over its life: created and initialised
 * by the library at the first start, adopted as it is by a reload that
 * keeps the upstream, or carried over (what is known of each server) from
 * the zone of a changed upstream; at a fresh start or binary upgrade the
 * admin and health state come from "ha_state_file".
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


static ngx_http_upstream_ha_srv_conf_t *ngx_http_upstream_ha_old_zone(
    ngx_shm_zone_t *shm_zone, ngx_http_upstream_ha_srv_conf_t *hcf);
static void ngx_http_upstream_ha_restore(ngx_shm_zone_t *shm_zone,
    ngx_http_upstream_ha_srv_conf_t *hcf);


ngx_int_t
ngx_http_upstream_ha_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_upstream_ha_srv_conf_t  *ohcf = data;

    void                             *mem;
    uint32_t                          carried;
    hab_buf                          *dropped;
    hab_zone                         *old;
    hab_result                        rc;
    ngx_slab_pool_t                  *shpool;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (ohcf && ohcf->zone) {

        /* the zone survived a reload: adopt its state */

        rc = hab_zone_attach(&hcf->conf, ohcf->zone, hcf->zone_size,
                             &hcf->zone);
        if (rc == HAB_OK) {
            hcf->refused_shared = shpool->data;

            ngx_log_error(NGX_LOG_INFO, shm_zone->shm.log, 0,
                          "ha_balance upstream \"%V\": state kept",
                          hcf->name);
#if (HAB_RESOLVE)
            if (hcf->resolve) {
                (void) ngx_http_upstream_ha_sync(hcf, shm_zone->shm.log);
            }
#endif
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": cannot reuse zone: %s",
                      hcf->name, hab_result_str(rc));
        return NGX_ERROR;
    }

    mem = ngx_slab_alloc(shpool, hcf->zone_size);
    if (mem == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": cannot allocate %uz bytes "
                      "in shared memory", hcf->name, hcf->zone_size);
        return NGX_ERROR;
    }

    rc = hab_zone_init(&hcf->conf, mem, hcf->zone_size, &hcf->zone);
    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": %s",
                      hcf->name, hab_result_str(rc));
        return NGX_ERROR;
    }

    /*
     * the list change last refused and logged, by any worker: a refusal
     * is logged once, not once per worker; kept across reloads that keep
     * the zone (shpool->data)
     */

    hcf->refused_shared = ngx_slab_alloc(shpool, sizeof(ngx_atomic_t));
    if (hcf->refused_shared != NULL) {
        *hcf->refused_shared = 0;
    }

    shpool->data = (void *) hcf->refused_shared;

#if (HAB_RESOLVE)

    /*
     * nginx's upstream zone, initialised before this one, holds the list
     * as resolved so far (the old cycle's addresses after a reload)
     */

    if (hcf->resolve) {
        (void) ngx_http_upstream_ha_sync(hcf, shm_zone->shm.log);
    }

#endif

    /* the upstream changed at reload: keep what is known of its servers */

    ohcf = ngx_http_upstream_ha_old_zone(shm_zone, hcf);
    old = ohcf ? ohcf->zone : NULL;

    if (old == NULL) {
        ngx_http_upstream_ha_restore(shm_zone, hcf);
        return NGX_OK;
    }

#if !(HAB_RESOLVE)

    /* ha_server: the old zone's resolved servers, until worker 0 answers */

    ngx_http_upstream_ha_dns_seed(hcf, ohcf, shm_zone->shm.log);

#endif

    dropped = NULL;

    if (hab_zone_carry(hcf->zone, old, ngx_current_msec, &carried, &dropped)
        == HAB_OK)
    {
        ngx_log_error(NGX_LOG_INFO, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": state of %uD servers "
                      "kept", hcf->name, carried);
    }

    if (dropped) {
        ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": servers added through "
                      "the API not kept, no room (ha_api_max %ui): %*s",
                      hcf->name, hcf->api_max, hab_buf_len(dropped),
                      hab_buf_data(dropped));
        hab_buf_free(dropped);
    }

    return NGX_OK;
}


/*
 * A fresh start (or a binary upgrade): the state file, if any, holds the
 * admin state the previous nginx had.  It is read once per configuration;
 * an unreadable or corrupt file is reported and ignored.
 */

static void
ngx_http_upstream_ha_restore(ngx_shm_zone_t *shm_zone,
    ngx_http_upstream_ha_srv_conf_t *hcf)
{
    uint32_t                           applied, unmatched;
    hab_buf                           *err, *refused;
    hab_result                         rc;
    ngx_http_upstream_ha_main_conf_t  *hmcf;

    hmcf = hcf->hmcf;

    if (hmcf == NULL || hmcf->state_file.len == 0) {
        return;
    }

    if (!hmcf->state_read) {
        hmcf->state_read = 1;
        err = NULL;

        rc = hab_state_load(hmcf->state_file.data, hmcf->state_file.len,
                            &hmcf->state, &err);

        if (rc != HAB_OK) {
            ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                          "ha_state_file \"%V\" ignored: %*s",
                          &hmcf->state_file, hab_buf_len(err),
                          hab_buf_data(err));
            hab_buf_free(err);
            hmcf->state = NULL;
            return;
        }
    }

    if (hmcf->state == NULL) {
        return;
    }

    refused = NULL;

    rc = hab_state_apply(hmcf->state, hcf->zone, hcf->name->data,
                         hcf->name->len, &applied, &unmatched, &refused);

    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": state from \"%V\" "
                      "not restored: %s", hcf->name, &hmcf->state_file,
                      hab_result_str(rc));
        return;
    }

    if (refused != NULL) {
        ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": state from \"%V\": %*s",
                      hcf->name, &hmcf->state_file, hab_buf_len(refused),
                      hab_buf_data(refused));
        hab_buf_free(refused);
    }

    if (unmatched) {
        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": %uD entries of \"%V\" "
                      "match no server, ignored", hcf->name, unmatched,
                      &hmcf->state_file);
    }

    if (applied) {
        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": admin state of %uD "
                      "servers restored from \"%V\"", hcf->name, applied,
                      &hmcf->state_file);
    }
}


static ngx_http_upstream_ha_srv_conf_t *
ngx_http_upstream_ha_old_zone(ngx_shm_zone_t *shm_zone,
    ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_shm_zone_t                   *zone;
    ngx_http_upstream_ha_srv_conf_t  *ohcf;

    /* "ha_balance:http:NAME:" then the configuration's digest */

    zone = ngx_upstream_ha_old_shm_zone(shm_zone, sizeof("ha_balance:http:") - 1
                                                  + hcf->name->len + 1);
    if (zone == NULL) {
        return NULL;
    }

    ohcf = zone->data;

    return (ohcf->zone != NULL && ohcf->zone != hcf->zone) ? ohcf : NULL;
}
