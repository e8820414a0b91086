
/*
 * Copyright (C) ha-balancer authors
 *
 * nginx's peers and the core's.  At configuration, each peer described to
 * the core (identity, limits, position in configuration order); in a
 * worker, the ha_balance upstreams of a cycle, and a table index (what the
 * core names a server by) mapped to nginx's peer.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


static ngx_int_t ngx_http_upstream_ha_check_u32(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_rr_peer_t *peer,
    const char *param, ngx_uint_t value);


ngx_int_t
ngx_http_upstream_ha_add_peers(ngx_conf_t *cf, ngx_http_upstream_srv_conf_t *us,
    ngx_http_upstream_ha_srv_conf_t *hcf, ngx_http_upstream_rr_peers_t *peers,
    hab_peer_conf *pc, uint32_t flags)
{
    u_char                       *p;
    size_t                        len;
    ngx_http_upstream_rr_peer_t  *peer;

    for (peer = peers->peer; peer; peer = peer->next, pc++) {

        /* identity: upstream name, server string, address */

        len = hcf->ha.name->len + 1 + peer->server.len + 1 + peer->name.len;

        p = ngx_pnalloc(cf->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        pc->id = p;
        pc->id_len = len;
        pc->server = peer->server.data;
        pc->server_len = peer->server.len;

        p = ngx_cpymem(p, hcf->ha.name->data, hcf->ha.name->len);
        *p++ = '\0';
        p = ngx_cpymem(p, peer->server.data, peer->server.len);
        *p++ = '\0';
        ngx_memcpy(p, peer->name.data, peer->name.len);

        /* the core counts in 32 bits: refuse what does not fit, never cut */

        if (ngx_http_upstream_ha_check_u32(cf, us, peer, "weight",
                                           peer->weight)
               != NGX_OK
            || ngx_http_upstream_ha_check_u32(cf, us, peer, "max_conns",
                                              peer->max_conns)
               != NGX_OK
            || ngx_http_upstream_ha_check_u32(cf, us, peer, "max_fails",
                                              peer->max_fails)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        /* the core keeps fail_timeout in 32 bits of milliseconds */

        if ((uint64_t) peer->fail_timeout > 0xffffffff / 1000) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_balance upstream \"%V\": server \"%V\": "
                          "\"fail_timeout=%T\" is longer than %uD s "
                          "in %s:%ui", &us->host, &peer->server,
                          peer->fail_timeout, (uint32_t) (0xffffffff / 1000),
                          us->file_name, us->line);
            return NGX_ERROR;
        }

        pc->weight = (uint32_t) peer->weight;
        pc->max_conns = (uint32_t) peer->max_conns;
        pc->max_fails = (uint32_t) peer->max_fails;
        pc->fail_timeout_ms = (uint64_t) peer->fail_timeout * 1000;
        pc->flags = flags | (peer->down ? HAB_PEER_DOWN : 0);

        ngx_http_upstream_ha_sticky_route(hcf, peer, pc);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_ha_check_u32(ngx_conf_t *cf, ngx_http_upstream_srv_conf_t *us,
    ngx_http_upstream_rr_peer_t *peer, const char *param, ngx_uint_t value)
{
    if (value <= 0xffffffff) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "ha_balance upstream \"%V\": server \"%V\": \"%s=%ui\" "
                  "is larger than %uD in %s:%ui",
                  &us->host, &peer->server, param, value,
                  (uint32_t) 0xffffffff, us->file_name, us->line);

    return NGX_ERROR;
}


/*
 * The API numbers servers in configuration order, backups included, as
 * NGINX Plus does; the table lists primaries first.  Round robin expands
 * each server line into one peer per address, primaries and backups in
 * two lists, in order; walk the lines the same way.
 */

void
ngx_http_upstream_ha_positions(ngx_http_upstream_srv_conf_t *us,
    hab_peer_conf *pc, ngx_uint_t nprimary, ngx_uint_t n)
{
    ngx_uint_t                    i, j, pos, primary, backup;
    ngx_http_upstream_server_t   *server;

    if (us->servers == NULL) {
        for (i = 0; i < n; i++) {
            pc[i].position = (uint32_t) i;
        }

        return;
    }

    server = us->servers->elts;
    pos = 0;
    primary = 0;
    backup = nprimary;

    for (i = 0; i < us->servers->nelts; i++) {

#if (HAB_RESOLVE)
        /* resolved at run time: numbered after the configured ones */

        if (server[i].host.len) {
            continue;
        }
#endif

        for (j = 0; j < server[i].naddrs; j++) {

            if (server[i].backup) {
                if (backup < n) {
                    pc[backup++].position = (uint32_t) pos;
                }

            } else if (primary < nprimary) {
                pc[primary++].position = (uint32_t) pos;
            }

            pos++;
        }
    }
}


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

    /* the slots after them are for servers added through the API */

    if (n + hcf->added_max != hab_zone_peers(hcf->ha.zone)) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_balance upstream \"%V\": %ui peers and "
                      "%ui slots for added or resolved servers, zone has %uD",
                      hcf->ha.name, n, hcf->added_max,
                      hab_zone_peers(hcf->ha.zone));
        return NGX_ERROR;
    }

    index = ngx_alloc((n ? n : 1) * sizeof(ngx_http_upstream_rr_peer_t *),
                      log);
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
    ngx_int_t                     rc;

    if (hcf->ha.resolve) {
        rc = ngx_http_upstream_ha_copy_resolved_peer(hcf, slot, pool, addr,
                                                     server, log);

        /* nginx has no peer for a server added through the API */

        if (rc != NGX_DECLINED || hcf->ha.api_max == 0
            || slot < hcf->ha.conf.npeers)
        {
            return rc;
        }
    }
#endif

    if (slot >= hcf->ha.conf.npeers) {

        /* a server added through the API: this worker's own peer */

        peer = ngx_http_upstream_ha_added_peer(hcf, slot, log);
        if (peer == NULL) {
            return NGX_DECLINED;
        }

    } else {
        if (ngx_http_upstream_ha_index(hcf, hcf->uscf->peer.data, log)
            != NGX_OK
            || slot >= hcf->npeers)
        {
            return NGX_DECLINED;
        }

        peer = hcf->peer[slot];
    }

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

        if (hcf != NULL && hcf->ha.zone != NULL) {
            return hcf;
        }
    }

    return NULL;
}


/*
 * every ha_balance upstream into ups (room for all upstreams), with its
 * learnt sessions' table and zone name (ha_sticky learn); how many
 */

ngx_uint_t
ngx_http_upstream_ha_upstreams(ngx_cycle_t *cycle, hab_api_upstream *ups)
{
    ngx_uint_t                        i, n;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    i = 0;
    n = 0;

    while ((hcf = ngx_http_upstream_ha_next_conf(cycle, &i)) != NULL) {
        ups[n].name = hcf->ha.name->data;
        ups[n].name_len = hcf->ha.name->len;
        ups[n].zone = hcf->ha.zone;

        if (hcf->sticky.learn != NULL && hcf->sticky.shm_zone != NULL) {
            ups[n].learn = hcf->sticky.learn;
            ups[n].learn_zone = hcf->sticky.shm_zone->shm.name.data;
            ups[n].learn_zone_len = hcf->sticky.shm_zone->shm.name.len;

        } else {
            ups[n].learn = NULL;
            ups[n].learn_zone = NULL;
            ups[n].learn_zone_len = 0;
        }

        n++;
    }

    return n;
}
