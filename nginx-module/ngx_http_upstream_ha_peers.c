
/*
 * Copyright (C) ha-balancer authors
 *
 * A worker's view of the upstreams it balances: the ha_balance upstreams
 * of a cycle, and a table index (what the core names a server by) mapped
 * to nginx's peer.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


/*
 * The core names peers by index (primaries, then backups, in
 * configuration order).  The nginx peer list may live in the upstream
 * zone, whose copy is made after configuration; each worker therefore maps
 * indices to peers once, on first use.
 */

ngx_int_t
ngx_http_upstream_ha_index(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_rr_peers_t *peers, ngx_log_t *log)
{
    ngx_uint_t                     i, n;
    ngx_http_upstream_rr_peer_t   *peer, **index;
    ngx_http_upstream_rr_peers_t  *group;

    if (hcf->indexed == peers) {
        return NGX_OK;
    }

    n = peers->number + (peers->next ? peers->next->number : 0);

    if (n != hab_zone_peers(hcf->zone)) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_balance upstream \"%V\": %ui peers, zone has %uD",
                      hcf->name, n, hab_zone_peers(hcf->zone));
        return NGX_ERROR;
    }

    index = ngx_alloc(n * sizeof(ngx_http_upstream_rr_peer_t *), log);
    if (index == NULL) {
        return NGX_ERROR;
    }

    i = 0;

    for (group = peers; group; group = (group == peers) ? peers->next : NULL) {
        for (peer = group->peer; peer && i < n; peer = peer->next) {
            index[i++] = peer;
        }
    }

    if (hcf->peer) {
        ngx_free(hcf->peer);
    }

    hcf->peer = index;
    hcf->npeers = n;
    hcf->indexed = peers;

    return NGX_OK;
}


/*
 * The address, name and server of the peer in slot, copied into pool:
 * for those who use it beyond the moment (health checks, logs).
 * NGX_DECLINED: no such peer in this worker now.
 */

ngx_int_t
ngx_http_upstream_ha_copy_peer(ngx_http_upstream_ha_srv_conf_t *hcf,
    uint32_t slot, ngx_pool_t *pool, ngx_addr_t *addr, ngx_str_t *server,
    ngx_log_t *log)
{
    ngx_http_upstream_rr_peer_t  *peer;

#if (HAB_RESOLVE)
    if (hcf->resolve) {
        return ngx_http_upstream_ha_copy_resolved_peer(hcf, slot, pool, addr,
                                                       server, log);
    }
#endif

    if (ngx_http_upstream_ha_index(hcf, hcf->uscf->peer.data, log) != NGX_OK
        || slot >= hcf->npeers)
    {
        return NGX_DECLINED;
    }

    peer = hcf->peer[slot];

    addr->sockaddr = ngx_palloc(pool, peer->socklen);
    addr->name.data = ngx_pstrdup(pool, &peer->name);
    server->data = ngx_pnalloc(pool, peer->server.len + 1);

    if (addr->sockaddr == NULL || addr->name.data == NULL
        || server->data == NULL)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(addr->sockaddr, peer->sockaddr, peer->socklen);
    addr->socklen = peer->socklen;
    addr->name.len = peer->name.len;
    ngx_memcpy(server->data, peer->server.data, peer->server.len);
    server->len = peer->server.len;

    return NGX_OK;
}


/* the next upstream, from *i on, balanced by this module */

ngx_http_upstream_ha_srv_conf_t *
ngx_http_upstream_ha_next_conf(ngx_cycle_t *cycle, ngx_uint_t *i)
{
    ngx_http_upstream_srv_conf_t    **uscfp;
    ngx_http_upstream_ha_srv_conf_t  *hcf;
    ngx_http_upstream_main_conf_t    *umcf;

    umcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_upstream_module);
    if (umcf == NULL) {
        return NULL;
    }

    uscfp = umcf->upstreams.elts;

    while (*i < umcf->upstreams.nelts) {

        if (uscfp[*i]->srv_conf == NULL) {
            (*i)++;
            continue;
        }

        hcf = ngx_http_conf_upstream_srv_conf(uscfp[(*i)++],
                                              ngx_http_upstream_ha_module);

        if (hcf != NULL && hcf->zone != NULL) {
            return hcf;
        }
    }

    return NULL;
}


/* every ha_balance upstream into ups (room for all upstreams); how many */

ngx_uint_t
ngx_http_upstream_ha_upstreams(ngx_cycle_t *cycle, hab_api_upstream *ups)
{
    ngx_uint_t                        i, n;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    i = 0;
    n = 0;

    while ((hcf = ngx_http_upstream_ha_next_conf(cycle, &i)) != NULL) {
        ups[n].name = hcf->name->data;
        ups[n].name_len = hcf->name->len;
        ups[n].zone = hcf->zone;
        n++;
    }

    return n;
}
