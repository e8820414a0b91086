
/*
 * Copyright (C) ha-balancer authors
 *
 * Peers each worker builds itself, in its own memory, for slots no nginx
 * list has a peer for: servers added through the API (ha_api_max), on
 * every nginx version, and servers resolved by "ha_server" (nginx older
 * than 1.27.3).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


/*
 * Servers added through the API (ha_api_max) fill slots after the
 * configured ones (npeers .. npeers + added_max - 1: the core puts the
 * configured servers in slots 0 .. npeers - 1 and gives the API only
 * FREE slots, core/src/write/open.rs and added.rs; in an upstream with
 * resolved servers any FREE one, beside theirs), and no nginx list has a
 * peer for them, on any nginx version.  With "ha_server" (nginx older
 * than 1.27.3) resolved servers are built the same way.  Each worker
 * keeps its own peer per such slot, in its own memory, built from what
 * the slot holds (hab_zone_slot_peer) when a pick or a check first names
 * it, and built again when the slot's epoch says the core gave it to
 * another server.
 * No request of any worker still uses a slot the core gives to another
 * server (the reuse rule, core/src/write/membership.rs): the peer is
 * simply rewritten.  No lock is taken; the peers' list has no shared
 * pool, so that nginx's TLS session hooks keep sessions in the peer, in
 * this worker.
 *
 * NULL: no such slot, nobody in it now, or an address this worker
 * cannot use (logged).
 */

ngx_http_upstream_rr_peer_t *
ngx_http_upstream_ha_added_peer(ngx_http_upstream_ha_srv_conf_t *hcf,
    uint32_t slot, ngx_log_t *log)
{
    u_char                        *address, text[HAB_SLOT_TEXT_MAX];
    ngx_int_t                      parsed;
    ngx_uint_t                     i, round;
    ngx_addr_t                     addr;
    ngx_pool_t                    *pool;
    hab_result                     rc;
    hab_slot_info                  info;
    hab_slot_peer                  sp;
    ngx_http_upstream_ha_added_t  *a;

    if (hcf->added_max == 0
        || slot < hcf->ha.conf.npeers
        || slot - hcf->ha.conf.npeers >= hcf->added_max)
    {
        return NULL;
    }

    i = slot - hcf->ha.conf.npeers;

    if (hcf->added == NULL) {
        hcf->added = ngx_calloc(hcf->added_max
                                * sizeof(ngx_http_upstream_ha_added_t *), log);
        if (hcf->added == NULL) {
            return NULL;
        }

        hcf->added_peers = ngx_calloc(sizeof(ngx_http_upstream_rr_peers_t),
                                      log);
        if (hcf->added_peers == NULL) {
            ngx_free(hcf->added);
            hcf->added = NULL;
            return NULL;
        }

        /* shpool NULL: nginx never locks this list, nor keeps it shared */

        hcf->added_peers->name = hcf->ha.name;
    }

    a = hcf->added[i];

    /* the usual case: built for the server in the slot now */

    if (a != NULL
        && hab_zone_slot(hcf->ha.zone, slot, &info) == HAB_OK
        && info.status != HAB_SLOT_FREE
        && info.epoch == a->epoch)
    {
        return &a->peer;
    }

    for (round = 0; round < 3; round++) {
        rc = hab_zone_slot_peer(hcf->ha.zone, slot, text, sizeof(text), &sp);
        if (rc != HAB_BUSY) {
            break;
        }
    }

    if (rc != HAB_OK || sp.status == HAB_SLOT_FREE) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                       "ha added peer: slot %uD holds no server (%d)",
                       slot, (int) rc);
        return NULL;
    }

    /* with "server ... resolve", nginx has the peers of resolved ones */

    if (hcf->ha.resolve && !(sp.flags & HAB_PEER_API)) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "ha added peer: slot %uD is not the API's", slot);
        return NULL;
    }

    pool = ngx_create_pool(NGX_MIN_POOL_SIZE, log);
    if (pool == NULL) {
        return NULL;
    }

    address = text + sp.server_len;

    parsed = ngx_parse_addr_port(pool, &addr, address, sp.address_len);

    if (parsed != NGX_OK || addr.socklen > sizeof(ngx_sockaddr_t)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "ha_balance upstream \"%V\": server \"%*s\" "
                      "(added or resolved): invalid address \"%*s\"",
                      hcf->ha.name, sp.server_len, text, sp.address_len,
                      address);
        ngx_destroy_pool(pool);
        return NULL;
    }

    if (a == NULL) {
        a = ngx_calloc(sizeof(ngx_http_upstream_ha_added_t), log);
        if (a == NULL) {
            ngx_destroy_pool(pool);
            return NULL;
        }

        hcf->added[i] = a;
    }

    if (sp.server_len > a->server_size) {
        if (a->server) {
            ngx_free(a->server);
        }

        a->server_size = 0;

        a->server = ngx_alloc(sp.server_len, log);
        if (a->server == NULL) {
            ngx_destroy_pool(pool);
            return NULL;
        }

        a->server_size = sp.server_len;
    }

#if (NGX_HTTP_SSL)
    /* the session of the server the slot held before */

    if (a->peer.ssl_session) {
        ngx_ssl_free_session(a->peer.ssl_session);
    }
#endif

    ngx_memzero(&a->peer, sizeof(ngx_http_upstream_rr_peer_t));

    ngx_memcpy(&a->sockaddr, addr.sockaddr, addr.socklen);
    ngx_destroy_pool(pool);

    /* "10.0.0.5" is "10.0.0.5:80", as NGINX Plus takes it */

    if (ngx_inet_get_port(&a->sockaddr.sockaddr) == 0) {
        ngx_inet_set_port(&a->sockaddr.sockaddr, 80);
    }

    a->peer.sockaddr = &a->sockaddr.sockaddr;
    a->peer.socklen = addr.socklen;
    a->peer.name.len = ngx_sock_ntop(a->peer.sockaddr, a->peer.socklen,
                                     a->name, NGX_SOCKADDR_STRLEN, 1);
    a->peer.name.data = a->name;

    ngx_memcpy(a->server, text, sp.server_len);
    a->peer.server.data = a->server;
    a->peer.server.len = sp.server_len;

    a->peer.weight = sp.weight;
    a->peer.effective_weight = sp.weight;
    a->peer.max_conns = sp.max_conns;
    a->peer.max_fails = sp.max_fails;
    a->peer.fail_timeout = (time_t) (sp.fail_timeout_ms / 1000);
    a->peer.down = (sp.flags & HAB_PEER_DOWN) ? 1 : 0;

    a->epoch = sp.epoch;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, log, 0,
                   "ha added peer: slot %uD epoch %uD: %V (%V)",
                   slot, sp.epoch, &a->peer.name, &a->peer.server);

    return &a->peer;
}


/*
 * How many slots after the configured ones are LIVE in the generation
 * serving now (counted again when it changes): what a request may try
 * besides the servers nginx counts.  With "server ... resolve" nginx
 * counts the resolved ones: only the API's are counted here.
 */

ngx_uint_t
ngx_http_upstream_ha_added_live(ngx_http_upstream_ha_srv_conf_t *hcf)
{
    u_char         text[HAB_SLOT_TEXT_MAX];
    uint32_t       slot, end;
    uint64_t       gen;
    ngx_uint_t     n;
    hab_slot_info  info;
    hab_slot_peer  sp;

    gen = hab_zone_generation(hcf->ha.zone);

    if (gen == hcf->added_gen) {
        return hcf->added_live;
    }

    n = 0;
    end = (uint32_t) (hcf->ha.conf.npeers + hcf->added_max);

    for (slot = (uint32_t) hcf->ha.conf.npeers; slot < end; slot++) {
        if (hab_zone_slot(hcf->ha.zone, slot, &info) != HAB_OK
            || info.status != HAB_SLOT_LIVE)
        {
            continue;
        }

        if (hcf->ha.resolve
            && (hab_zone_slot_peer(hcf->ha.zone, slot, text, sizeof(text), &sp)
                != HAB_OK
                || !(sp.flags & HAB_PEER_API)))
        {
            continue;
        }

        n++;
    }

    hcf->added_gen = gen;
    hcf->added_live = n;

    return n;
}


/* exit_process: this worker's peers for API slots */

void
ngx_http_upstream_ha_free_added(ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_uint_t                     i;
    ngx_http_upstream_ha_added_t  *a;

    if (hcf->added == NULL) {
        return;
    }

    for (i = 0; i < hcf->added_max; i++) {
        a = hcf->added[i];

        if (a == NULL) {
            continue;
        }

#if (NGX_HTTP_SSL)
        if (a->peer.ssl_session) {
            ngx_ssl_free_session(a->peer.ssl_session);
        }
#endif

        if (a->server) {
            ngx_free(a->server);
        }

        ngx_free(a);
    }

    ngx_free(hcf->added);
    ngx_free(hcf->added_peers);

    hcf->added = NULL;
    hcf->added_peers = NULL;
}
