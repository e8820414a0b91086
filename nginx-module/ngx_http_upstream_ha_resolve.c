
/*
 * Copyright (C) ha-balancer authors
 *
 * Servers resolved at run time ("server NAME resolve", "service="): nginx
 * 1.27.3 and later edit the upstream's peer list in its zone whenever DNS
 * changes.  The core's table follows that list (hab_zone_resolve): each
 * worker copies the list out of nginx's locks, hands it to the core,
 * which keeps the state of the servers that stay, and maps the core's
 * slots back to nginx peers for its own requests.  Design:
 * docs/discovery-design.md.
 *
 * Locks: nginx's list locks are held only while copying plain data or
 * taking and dropping references on peers; the core is never called
 * under them.  A peer this module hands to nginx holds a reference
 * (ngx_http_upstream_rr_peer_ref), so that nginx keeps it as a zombie
 * when DNS removes it, and frees it at the last unref, in free.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


/* ha_resolve_max N: room for N servers resolved at run time */

char *
ngx_http_upstream_ha_resolve_max(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (hcf->ha.resolve_max != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);

    if (n == NGX_ERROR || n < 1 || n > HAB_RESOLVE_MAX_LIMIT) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of resolved servers \"%V\": "
                           "from 1 to %d", &value[1], HAB_RESOLVE_MAX_LIMIT);
        return NGX_CONF_ERROR;
    }

    hcf->ha.resolve_max = (ngx_uint_t) n;

    return NGX_CONF_OK;
}


#if (HAB_RESOLVE)


/* how often a worker looks for a list change nobody has built yet, ms */
#define NGX_HTTP_UPSTREAM_HA_RESOLVE_TICK  100

/* rounds of copy and build when the list changes under them */
#define NGX_HTTP_UPSTREAM_HA_SYNC_ROUNDS   3

/* picks of slots this worker has no peer for, per try, before BUSY */
#define NGX_HTTP_UPSTREAM_HA_SKIPS         16


static void ngx_http_upstream_ha_lock_lists(
    ngx_http_upstream_rr_peers_t *peers);
static void ngx_http_upstream_ha_unlock_lists(
    ngx_http_upstream_rr_peers_t *peers);
static ngx_int_t ngx_http_upstream_ha_copy_list(
    ngx_http_upstream_ha_srv_conf_t *hcf, ngx_pool_t *pool,
    hab_upstream_conf *list, ngx_http_upstream_ha_slot_t **held,
    ngx_uint_t *config);
static void ngx_http_upstream_ha_log_resolve(
    ngx_http_upstream_ha_srv_conf_t *hcf, hab_resolve_report *report,
    ngx_uint_t config, uint64_t ns, ngx_log_t *log);
static ngx_int_t ngx_http_upstream_ha_hold(
    ngx_http_upstream_ha_srv_conf_t *hcf, uint32_t slot,
    ngx_http_upstream_ha_slot_t *out);
static ngx_uint_t ngx_http_upstream_ha_map_stale(
    ngx_http_upstream_ha_peer_data_t *hp);
static void ngx_http_upstream_ha_resolve_tick(ngx_event_t *ev);


/*
 * init_upstream: an upstream with resolvable servers gets a zone with
 * room for ha_resolve_max of them beside its static ones
 */

ngx_int_t
ngx_http_upstream_ha_init_resolve(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_uint_t n)
{
    ngx_http_upstream_rr_peers_t  *peers;

    peers = us->peer.data;

    hcf->ha.resolve = (peers->resolve != NULL
                       || (peers->next && peers->next->resolve != NULL));

    if (!hcf->ha.resolve) {
        if (hcf->ha.resolve_max != NGX_CONF_UNSET_UINT) {
            ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                          "ha_balance upstream \"%V\": \"ha_resolve_max\" "
                          "is ignored: no server is resolved at run time "
                          "in %s:%ui", &us->host, us->file_name, us->line);
        }

        return NGX_OK;
    }

    if (hcf->ha.resolve_max == NGX_CONF_UNSET_UINT) {
        hcf->ha.resolve_max = HAB_RESOLVE_MAX_DEFAULT;
    }

    hcf->ha.conf.capacity = n + hcf->ha.resolve_max;

    if (hcf->ha.conf.maglev_size != 0
        && hcf->ha.conf.maglev_size < hcf->ha.conf.capacity)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_balance upstream \"%V\": maglev table size %uD "
                      "is smaller than its %ui servers and "
                      "ha_resolve_max %ui in %s:%ui",
                      &us->host, hcf->ha.conf.maglev_size, n,
                      hcf->ha.resolve_max, us->file_name, us->line);
        return NGX_ERROR;
    }

    /*
     * the list's id: every configuration has a larger one than the one
     * before (old workers that share the zone never publish theirs)
     */

    hcf->list_id = ngx_upstream_ha_monotonic_ns();

    return NGX_OK;
}


/* both lists, in the order nginx's resolve handler takes them */

static void
ngx_http_upstream_ha_lock_lists(ngx_http_upstream_rr_peers_t *peers)
{
    ngx_http_upstream_rr_peers_rlock(peers);

    if (peers->next) {
        ngx_http_upstream_rr_peers_rlock(peers->next);
    }
}


static void
ngx_http_upstream_ha_unlock_lists(ngx_http_upstream_rr_peers_t *peers)
{
    if (peers->next) {
        ngx_http_upstream_rr_peers_unlock(peers->next);
    }

    ngx_http_upstream_rr_peers_unlock(peers);
}


/*
 * The peer list as it is now, copied into pool: primaries, then backups,
 * with the same identities as configured servers have (upstream, server,
 * address); which nginx peer each is into *held; the change counter.
 */

static ngx_int_t
ngx_http_upstream_ha_copy_list(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_pool_t *pool, hab_upstream_conf *list,
    ngx_http_upstream_ha_slot_t **held, ngx_uint_t *config)
{
    u_char                        *p;
    size_t                         len;
    ngx_uint_t                     n, k;
    hab_peer_conf                 *pc;
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *peers, *group;
    ngx_http_upstream_ha_slot_t   *h;

    peers = hcf->uscf->peer.data;

    ngx_http_upstream_ha_lock_lists(peers);

    *config = *peers->config;
    n = peers->number + (peers->next ? peers->next->number : 0);

    pc = ngx_pcalloc(pool, (n ? n : 1) * sizeof(hab_peer_conf));
    h = ngx_pcalloc(pool, (n ? n : 1) * sizeof(ngx_http_upstream_ha_slot_t));

    if (pc == NULL || h == NULL) {
        ngx_http_upstream_ha_unlock_lists(peers);
        return NGX_ERROR;
    }

    k = 0;

    for (group = peers; group; group = (group == peers) ? peers->next : NULL) {
        for (peer = group->peer; peer && k < n; peer = peer->next, k++) {

            len = hcf->ha.name->len + 1 + peer->server.len + 1 + peer->name.len;

            p = ngx_pnalloc(pool, len + peer->server.len);
            if (p == NULL) {
                ngx_http_upstream_ha_unlock_lists(peers);
                return NGX_ERROR;
            }

            pc[k].id = p;
            pc[k].id_len = len;

            p = ngx_cpymem(p, hcf->ha.name->data, hcf->ha.name->len);
            *p++ = '\0';
            p = ngx_cpymem(p, peer->server.data, peer->server.len);
            *p++ = '\0';
            p = ngx_cpymem(p, peer->name.data, peer->name.len);

            pc[k].server = p;
            pc[k].server_len = peer->server.len;
            ngx_memcpy(p, peer->server.data, peer->server.len);

            /* nginx makes an SRV weight of 0 a 1; the core counts in 32 bits */

            pc[k].weight = (uint32_t) ngx_max(ngx_min(peer->weight,
                                                      0xffffffff), 1);
            pc[k].max_conns = (uint32_t) ngx_min(peer->max_conns, 0xffffffff);
            pc[k].max_fails = (uint32_t) ngx_min(peer->max_fails, 0xffffffff);
            pc[k].fail_timeout_ms = (uint64_t) peer->fail_timeout * 1000;
            pc[k].flags = (group != peers ? HAB_PEER_BACKUP : 0)
                          | (peer->down ? HAB_PEER_DOWN : 0);
            pc[k].position = HAB_POSITION_NONE;

            ngx_http_upstream_ha_sticky_route(hcf, peer, &pc[k]);

            h[k].peer = peer;
            h[k].peers = group;
        }
    }

    ngx_http_upstream_ha_unlock_lists(peers);

    *list = hcf->ha.conf;
    list->peers = pc;
    list->npeers = k;
    list->capacity = 0;

    *held = h;

    return NGX_OK;
}


/*
 * Makes the zone follow the list, if nobody has, and rebuilds this
 * worker's slot -> peer map.  The master calls it at zone init (no map).
 */

ngx_int_t
ngx_http_upstream_ha_sync(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_log_t *log)
{
    uint32_t                      *slots;
    uint64_t                       start;
    ngx_uint_t                     round, k, config, cap;
    ngx_pool_t                    *pool;
    hab_result                     rc;
    hab_upstream_conf              list;
    hab_resolve_report             report;
    ngx_http_upstream_rr_peers_t  *peers;
    ngx_http_upstream_ha_slot_t   *held;

    peers = hcf->uscf->peer.data;
    cap = hab_zone_peers(hcf->ha.zone);

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    for (round = 0; round < NGX_HTTP_UPSTREAM_HA_SYNC_ROUNDS; round++) {

        if (ngx_http_upstream_ha_copy_list(hcf, pool, &list, &held, &config)
            != NGX_OK)
        {
            break;
        }

        slots = ngx_palloc(pool, (list.npeers ? list.npeers : 1)
                                 * sizeof(uint32_t));
        if (slots == NULL) {
            break;
        }

        ngx_memzero(&report, sizeof(hab_resolve_report));

        start = ngx_upstream_ha_monotonic_ns();

        rc = hab_zone_resolve(hcf->ha.zone, &list, hcf->list_id,
                              (uint64_t) config, ngx_current_msec,
                              (uint64_t) ngx_pid, hcf->ha.slot,
                              ngx_upstream_ha_alive, NULL, slots,
                              &report);

        if (rc != HAB_OK) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "ha_balance upstream \"%V\": resolve: %s",
                          hcf->ha.name, hab_result_str(rc));
            break;
        }

        ngx_http_upstream_ha_log_resolve(hcf, &report, config,
                                       ngx_upstream_ha_monotonic_ns()
                                       - start, log);

        if (hcf->map == NULL) {
            ngx_destroy_pool(pool);
            return NGX_OK;
        }

        /* the peers are those of the list copied only if it is unchanged */

        ngx_http_upstream_ha_lock_lists(peers);

        if (*peers->config == config) {
            ngx_memzero(hcf->map, cap * sizeof(ngx_http_upstream_ha_slot_t));

            for (k = 0; k < list.npeers; k++) {
                if (slots[k] < cap) {
                    hcf->map[slots[k]] = held[k];
                }
            }

            hcf->map_config = config;
            hcf->map_source = report.source;
            hcf->map_valid = 1;

            ngx_http_upstream_ha_unlock_lists(peers);
            ngx_destroy_pool(pool);

            return NGX_OK;
        }

        ngx_http_upstream_ha_unlock_lists(peers);
        ngx_reset_pool(pool);
    }

    ngx_destroy_pool(pool);

    /* requests meanwhile find no peer here: BUSY, as nginx's own */

    hcf->map_valid = 0;

    return NGX_ERROR;
}


static void
ngx_http_upstream_ha_log_resolve(ngx_http_upstream_ha_srv_conf_t *hcf,
    hab_resolve_report *report, ngx_uint_t config, uint64_t ns,
    ngx_log_t *log)
{
    ngx_atomic_uint_t  last;

    /* the build's cost, the list's copy excluded: docs/benchmarks.md */

    if (report->built) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "ha_balance upstream \"%V\": servers changed: "
                      "%uD kept, %uD back, %uD new, %uD draining%s "
                      "(generation %uL, built in %uL us)", hcf->ha.name,
                      report->kept, report->revived, report->added,
                      report->retired,
                      report->deferred ? ", more new once the slots of "
                                         "those leaving are free" : "",
                      report->generation, (uint64_t) (ns / 1000));
        return;
    }

    if (report->refused == HAB_OK || report->refused == HAB_BUSY) {
        return;
    }

    /*
     * once per change of the list: the list and its change counter are
     * shared (nginx's upstream zone), so only the worker that first
     * records this change in the shared flag logs it
     */

    if (hcf->refused == config + 1) {
        return;
    }

    hcf->refused = config + 1;

    if (hcf->ha.refused_shared != NULL) {
        last = *hcf->ha.refused_shared;

        if (last == (ngx_atomic_uint_t) (config + 1)
            || !ngx_atomic_cmp_set(hcf->ha.refused_shared, last,
                                   (ngx_atomic_uint_t) (config + 1)))
        {
            return;
        }
    }

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "ha_balance upstream \"%V\": the new list of servers is "
                  "not used: %s (at most %ui resolved servers, "
                  "see \"ha_resolve_max\")", hcf->ha.name,
                  hab_result_str(report->refused), hcf->ha.resolve_max);
}


/*
 * The nginx peer in slot, with a reference taken: NGX_OK; NGX_DECLINED:
 * this worker's list has no peer in that slot; NGX_AGAIN: the list
 * changed since the map was built.
 */

static ngx_int_t
ngx_http_upstream_ha_hold(ngx_http_upstream_ha_srv_conf_t *hcf,
    uint32_t slot, ngx_http_upstream_ha_slot_t *out)
{
    ngx_http_upstream_ha_slot_t  *s;

    if (!hcf->map_valid) {
        return NGX_AGAIN;
    }

    if (slot >= hab_zone_peers(hcf->ha.zone)) {
        return NGX_DECLINED;
    }

    s = &hcf->map[slot];

    if (s->peer == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_upstream_rr_peers_rlock(s->peers);

    if (*s->peers->config != hcf->map_config) {
        ngx_http_upstream_rr_peers_unlock(s->peers);
        return NGX_AGAIN;
    }

    ngx_http_upstream_rr_peer_lock(s->peers, s->peer);
    ngx_http_upstream_rr_peer_ref(s->peers, s->peer);
    ngx_http_upstream_rr_peer_unlock(s->peers, s->peer);

    ngx_http_upstream_rr_peers_unlock(s->peers);

    *out = *s;

    return NGX_OK;
}


/* drops the reference get took; nginx frees a removed peer at the last */

void
ngx_http_upstream_ha_unref(ngx_http_upstream_ha_peer_data_t *hp)
{
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *peers;

    if (!hp->ref) {
        return;
    }

    hp->ref = 0;

    peer = hp->rrp.current;
    peers = hp->rrp.peers;

    ngx_http_upstream_rr_peers_rlock(peers);
    ngx_http_upstream_rr_peer_lock(peers, peer);

    if (ngx_http_upstream_rr_peer_unref(peers, peer) == NGX_OK) {
        ngx_http_upstream_rr_peer_unlock(peers, peer);
    }

    ngx_http_upstream_rr_peers_unlock(peers);

    hp->rrp.current = NULL;
}


/* init_peer: whether this worker's map lags behind the list or the zone */

void
ngx_http_upstream_ha_init_resolved_peer(ngx_http_upstream_ha_peer_data_t *hp,
    ngx_log_t *log)
{
    if (ngx_http_upstream_ha_map_stale(hp)) {
        (void) ngx_http_upstream_ha_sync(hp->conf, log);
    }
}


static ngx_uint_t
ngx_http_upstream_ha_map_stale(ngx_http_upstream_ha_peer_data_t *hp)
{
    hab_source                        src;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = hp->conf;

    if (!hcf->map_valid || hp->rrp.config != hcf->map_config) {
        return 1;
    }

    if (hab_attempt_source(hcf->ha.zone, hp->attempt, &src) != HAB_OK) {
        return 1;
    }

    return src.list != hcf->map_source.list
           || src.config != hcf->map_source.config;
}


/*
 * get: the core picks a slot; this worker's peer in it is referenced
 * and handed to nginx.  A slot nginx has no peer for that holds a server
 * added through the API (ha_api_max) gets this worker's own peer
 * (ngx_http_upstream_ha_added_peer), as in upstreams without resolved
 * servers.  Any other slot with no peer here (the list changed between
 * the build and now, or this is an older configuration's worker) is
 * abandoned, without counting anything, and another one picked.
 */

ngx_int_t
ngx_http_upstream_ha_get_resolved_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_upstream_ha_peer_data_t  *hp = data;

    hab_pick                          pick;
    hab_wake                          wake;
    ngx_int_t                         rc, held;
    ngx_uint_t                        skips, syncs;
    ngx_http_upstream_ha_slot_t       s;
    ngx_http_upstream_rr_peer_t      *peer;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "get ha resolved peer, try: %ui", pc->tries);

    pc->cached = 0;
    pc->connection = NULL;

    hcf = hp->conf;
    syncs = 0;

    for (skips = 0; skips < NGX_HTTP_UPSTREAM_HA_SKIPS; skips++) {

        /* a pick, or none (502), or a wait in ha_queue */

        rc = ngx_http_upstream_ha_queue_pick(hp, pc, &pick);

        if (rc == NGX_BUSY) {
            break;
        }

        if (rc != NGX_OK) {
            return rc;
        }

        held = ngx_http_upstream_ha_hold(hcf, pick.peer, &s);

        while (held == NGX_AGAIN && syncs < 2) {
            syncs++;
            (void) ngx_http_upstream_ha_sync(hcf, pc->log);
            held = ngx_http_upstream_ha_hold(hcf, pick.peer, &s);
        }

        if (held == NGX_OK) {
            hp->ref = 1;

            /* the TLS session hooks of round robin use these */

            hp->rrp.current = s.peer;
            hp->rrp.peers = s.peers;

            pc->sockaddr = s.peer->sockaddr;
            pc->socklen = s.peer->socklen;
            pc->name = &s.peer->name;

            ngx_http_upstream_ha_sticky_picked(hp, pc, &pick);

            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                           "get ha peer, current: %uD %V",
                           pick.peer, &s.peer->name);

            return NGX_OK;
        }

        /* a server added through the API: this worker's own peer */

        peer = (hcf->ha.api_max && pick.peer >= hcf->ha.conf.npeers)
               ? ngx_http_upstream_ha_added_peer(hcf, pick.peer, pc->log)
               : NULL;

        if (peer != NULL) {
            hp->rrp.current = peer;
            hp->rrp.peers = hcf->added_peers;

            pc->sockaddr = peer->sockaddr;
            pc->socklen = peer->socklen;
            pc->name = &peer->name;

            ngx_http_upstream_ha_sticky_picked(hp, pc, &pick);

            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                           "get ha peer, current: %uD %V (added)",
                           pick.peer, &peer->name);

            return NGX_OK;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "get ha peer: slot %uD has no peer here", pick.peer);

        if (hab_attempt_abandon_wake(hcf->ha.zone, hp->attempt, &wake)
            == HAB_OK)
        {
            ngx_upstream_ha_wake(&wake, pc->log);
        }

        /* the zone may serve a membership newer than the map */

        if (syncs < 2 && ngx_http_upstream_ha_map_stale(hp)) {
            syncs++;
            (void) ngx_http_upstream_ha_sync(hcf, pc->log);
        }
    }

    pc->name = hp->peers->name;

    return NGX_BUSY;
}


/*
 * A copy of the address and server of the peer in slot, for a health
 * check: the check outlives any lock, and nginx may free the peer.
 */

ngx_int_t
ngx_http_upstream_ha_copy_resolved_peer(ngx_http_upstream_ha_srv_conf_t *hcf,
    uint32_t slot, ngx_pool_t *pool, ngx_addr_t *addr, ngx_str_t *server,
    ngx_log_t *log)
{
    ngx_uint_t                    round;
    ngx_http_upstream_rr_peer_t  *peer;
    ngx_http_upstream_ha_slot_t  *s;

    if (hcf->map == NULL || slot >= hab_zone_peers(hcf->ha.zone)) {
        return NGX_DECLINED;
    }

    for (round = 0; round < 2; round++) {

        if (!hcf->map_valid || round > 0) {
            (void) ngx_http_upstream_ha_sync(hcf, log);
        }

        if (!hcf->map_valid) {
            return NGX_DECLINED;
        }

        s = &hcf->map[slot];

        if (s->peer == NULL) {
            continue;
        }

        ngx_http_upstream_rr_peers_rlock(s->peers);

        if (*s->peers->config != hcf->map_config) {
            ngx_http_upstream_rr_peers_unlock(s->peers);
            continue;
        }

        peer = s->peer;

        addr->sockaddr = ngx_palloc(pool, peer->socklen);
        addr->name.data = ngx_pnalloc(pool, peer->name.len);
        server->data = ngx_pnalloc(pool, peer->server.len + 1);

        if (addr->sockaddr == NULL || addr->name.data == NULL
            || server->data == NULL)
        {
            ngx_http_upstream_rr_peers_unlock(s->peers);
            return NGX_ERROR;
        }

        ngx_memcpy(addr->sockaddr, peer->sockaddr, peer->socklen);
        addr->socklen = peer->socklen;
        ngx_memcpy(addr->name.data, peer->name.data, peer->name.len);
        addr->name.len = peer->name.len;
        ngx_memcpy(server->data, peer->server.data, peer->server.len);
        server->len = peer->server.len;

        ngx_http_upstream_rr_peers_unlock(s->peers);

        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * init_process: the map, and a timer that makes the zone follow changes
 * even when no request comes
 */

ngx_int_t
ngx_http_upstream_ha_start_resolve(ngx_cycle_t *cycle,
    ngx_http_upstream_ha_srv_conf_t *hcf)
{
    size_t  size;

    size = hab_zone_peers(hcf->ha.zone) * sizeof(ngx_http_upstream_ha_slot_t);

    hcf->map = ngx_alloc(size, cycle->log);
    if (hcf->map == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(hcf->map, size);
    hcf->map_valid = 0;

    hcf->resolve_ev.handler = ngx_http_upstream_ha_resolve_tick;
    hcf->resolve_ev.data = hcf;
    hcf->resolve_ev.log = cycle->log;
    hcf->resolve_ev.cancelable = 1;

    ngx_add_timer(&hcf->resolve_ev, NGX_HTTP_UPSTREAM_HA_RESOLVE_TICK);

    return NGX_OK;
}


void
ngx_http_upstream_ha_stop_resolve(ngx_http_upstream_ha_srv_conf_t *hcf)
{
    if (hcf->resolve_ev.timer_set) {
        ngx_del_timer(&hcf->resolve_ev);
    }

    if (hcf->map) {
        ngx_free(hcf->map);
        hcf->map = NULL;
        hcf->map_valid = 0;
    }
}


static void
ngx_http_upstream_ha_resolve_tick(ngx_event_t *ev)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = ev->data;

    hab_source                     src;
    ngx_uint_t                     config;
    ngx_http_upstream_rr_peers_t  *peers;

    peers = hcf->uscf->peer.data;

    ngx_http_upstream_rr_peers_rlock(peers);
    config = *peers->config;
    ngx_http_upstream_rr_peers_unlock(peers);

    if (hab_zone_source(hcf->ha.zone, hcf->ha.slot, &src) == HAB_OK
        && (src.list < hcf->list_id
            || (src.list == hcf->list_id && src.config != config)
            || !hcf->map_valid || config != hcf->map_config
            || src.list != hcf->map_source.list
            || src.config != hcf->map_source.config))
    {
        (void) ngx_http_upstream_ha_sync(hcf, ev->log);
    }

    if (!ngx_exiting) {
        ngx_add_timer(ev, NGX_HTTP_UPSTREAM_HA_RESOLVE_TICK);
    }
}


#endif /* HAB_RESOLVE */
