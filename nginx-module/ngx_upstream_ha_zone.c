
/*
 * Copyright (C) ha-balancer authors
 *
 * An upstream's shared memory zone over its life, whatever the protocol
 * it balances: named, sized and added at configuration time; created and
 * initialised by the library at the first start, adopted as it is by a
 * reload that keeps the upstream, or carried over (what is known of each
 * server) from the zone of a changed upstream; at a fresh start or binary
 * upgrade the admin and health state come from "ha_state_file".  What the
 * subsystem adds (its resolved servers) it does through ha->ops.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <ha_balancer.h>

#include "ngx_upstream_ha_common.h"


static ngx_int_t ngx_upstream_ha_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_upstream_ha_restore(ngx_shm_zone_t *shm_zone,
    ngx_upstream_ha_conf_t *ha);
static ngx_upstream_ha_conf_t *ngx_upstream_ha_old_zone(
    ngx_shm_zone_t *shm_zone, ngx_upstream_ha_conf_t *ha);


/*
 * One zone per upstream, named after the subsystem, the upstream and the
 * configuration digest ("ha_balance:http:NAME:DIGEST"): an unchanged
 * upstream keeps its zone (and its state) across reloads, a changed one
 * gets a fresh zone while old workers keep the old one.  file and line:
 * the upstream's, for the messages.
 */

ngx_int_t
ngx_upstream_ha_add_zone(ngx_conf_t *cf, ngx_upstream_ha_conf_t *ha,
    void *tag, u_char *file, ngx_uint_t line)
{
    size_t       size;
    uint64_t     digest;
    hab_buf     *reason;
    ngx_str_t    name;
    hab_result   rc;

    rc = hab_zone_size(&ha->conf, &ha->zone_size);

    if (rc == HAB_OK) {
        rc = hab_conf_digest(&ha->conf, &digest);
    }

    if (rc == HAB_TOO_LARGE
        && hab_conf_explain(&ha->conf, &reason) == HAB_OK
        && reason != NULL)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_balance upstream \"%V\": %*s in %s:%ui",
                      ha->name, hab_buf_len(reason), hab_buf_data(reason),
                      file, line);
        hab_buf_free(reason);
        return NGX_ERROR;
    }

    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_balance upstream \"%V\": %s in %s:%ui",
                      ha->name, hab_result_str(rc), file, line);
        return NGX_ERROR;
    }

    name.len = sizeof("ha_balance:::") - 1 + ha->subsystem.len
               + ha->name->len + 16;
    name.data = ngx_pnalloc(cf->pool, name.len);
    if (name.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(name.data, "ha_balance:%V:%V:%016uxL",
                &ha->subsystem, ha->name, digest);

    /*
     * the zone (root, state and room for several table generations), slab
     * pool bookkeeping (a page header per page), slack
     */

    size = ngx_align(ha->zone_size, ngx_pagesize);
    size += (size / ngx_pagesize / 64 + 10) * ngx_pagesize;

    ha->shm_zone = ngx_shared_memory_add(cf, &name, size, tag);
    if (ha->shm_zone == NULL) {
        return NGX_ERROR;
    }

    if (ha->shm_zone->data) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "duplicate ha_balance zone \"%V\"", &name);
        return NGX_ERROR;
    }

    ha->shm_zone->init = ngx_upstream_ha_init_zone;
    ha->shm_zone->data = ha;

    return NGX_OK;
}


static ngx_int_t
ngx_upstream_ha_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_upstream_ha_conf_t  *oha = data;

    void                    *mem;
    uint32_t                 carried;
    hab_buf                 *dropped;
    hab_zone                *old;
    hab_result               rc;
    ngx_slab_pool_t         *shpool;
    ngx_upstream_ha_conf_t  *ha;

    ha = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (oha && oha->zone) {

        /* the zone survived a reload: adopt its state */

        rc = hab_zone_attach(&ha->conf, oha->zone, ha->zone_size,
                             &ha->zone);
        if (rc == HAB_OK) {
            ha->refused_shared = shpool->data;

            ngx_log_error(NGX_LOG_INFO, shm_zone->shm.log, 0,
                          "ha_balance upstream \"%V\": state kept",
                          ha->name);

            if (ha->ops->zone_ready) {
                ha->ops->zone_ready(ha, shm_zone->shm.log);
            }

            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": cannot reuse zone: %s",
                      ha->name, hab_result_str(rc));
        return NGX_ERROR;
    }

    mem = ngx_slab_alloc(shpool, ha->zone_size);
    if (mem == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": cannot allocate %uz bytes "
                      "in shared memory", ha->name, ha->zone_size);
        return NGX_ERROR;
    }

    rc = hab_zone_init(&ha->conf, mem, ha->zone_size, &ha->zone);
    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": %s",
                      ha->name, hab_result_str(rc));
        return NGX_ERROR;
    }

    /*
     * the list change last refused and logged, by any worker: a refusal
     * is logged once, not once per worker; kept across reloads that keep
     * the zone (shpool->data)
     */

    ha->refused_shared = ngx_slab_alloc(shpool, sizeof(ngx_atomic_t));
    if (ha->refused_shared != NULL) {
        *ha->refused_shared = 0;
    }

    shpool->data = (void *) ha->refused_shared;

    /*
     * http: nginx's upstream zone, initialised before this one, holds the
     * list as resolved so far (the old cycle's addresses after a reload)
     */

    if (ha->ops->zone_ready) {
        ha->ops->zone_ready(ha, shm_zone->shm.log);
    }

    /* the upstream changed at reload: keep what is known of its servers */

    oha = ngx_upstream_ha_old_zone(shm_zone, ha);
    old = oha ? oha->zone : NULL;

    if (old == NULL) {
        ngx_upstream_ha_restore(shm_zone, ha);
        return NGX_OK;
    }

    if (ha->ops->zone_carry) {
        ha->ops->zone_carry(ha, oha, shm_zone->shm.log);
    }

    dropped = NULL;

    if (hab_zone_carry(ha->zone, old, ngx_current_msec, &carried, &dropped)
        == HAB_OK)
    {
        ngx_log_error(NGX_LOG_INFO, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": state of %uD servers "
                      "kept", ha->name, carried);
    }

    if (dropped) {
        ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": servers added through "
                      "the API not kept, no room (ha_api_max %ui): %*s",
                      ha->name, ha->api_max, hab_buf_len(dropped),
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
ngx_upstream_ha_restore(ngx_shm_zone_t *shm_zone, ngx_upstream_ha_conf_t *ha)
{
    uint32_t                  applied, unmatched;
    hab_buf                  *err, *refused;
    hab_result                rc;
    ngx_upstream_ha_state_t  *state;

    state = ha->state;

    if (state == NULL || state->file.len == 0) {
        return;
    }

    if (!state->read) {
        state->read = 1;
        err = NULL;

        rc = hab_state_load(state->file.data, state->file.len,
                            &state->parsed, &err);

        if (rc != HAB_OK) {
            ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                          "ha_state_file \"%V\" ignored: %*s",
                          &state->file, hab_buf_len(err), hab_buf_data(err));
            hab_buf_free(err);
            state->parsed = NULL;
            return;
        }
    }

    if (state->parsed == NULL) {
        return;
    }

    refused = NULL;

    rc = hab_state_apply(state->parsed, ha->zone, ha->name->data,
                         ha->name->len, &applied, &unmatched, &refused);

    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": state from \"%V\" "
                      "not restored: %s", ha->name, &state->file,
                      hab_result_str(rc));
        return;
    }

    if (refused != NULL) {
        ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": state from \"%V\": %*s",
                      ha->name, &state->file, hab_buf_len(refused),
                      hab_buf_data(refused));
        hab_buf_free(refused);
    }

    if (unmatched) {
        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": %uD entries of \"%V\" "
                      "match no server, ignored", ha->name, unmatched,
                      &state->file);
    }

    if (applied) {
        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "ha_balance upstream \"%V\": admin state of %uD "
                      "servers restored from \"%V\"", ha->name, applied,
                      &state->file);
    }
}


static ngx_upstream_ha_conf_t *
ngx_upstream_ha_old_zone(ngx_shm_zone_t *shm_zone, ngx_upstream_ha_conf_t *ha)
{
    ngx_shm_zone_t          *zone;
    ngx_upstream_ha_conf_t  *oha;

    /* "ha_balance:SUBSYSTEM:NAME:" then the configuration's digest */

    zone = ngx_upstream_ha_old_shm_zone(shm_zone, sizeof("ha_balance:::") - 1
                                                  + ha->subsystem.len
                                                  + ha->name->len);
    if (zone == NULL) {
        return NULL;
    }

    oha = zone->data;

    return (oha->zone != NULL && oha->zone != ha->zone) ? oha : NULL;
}
