
/*
 * Copyright (C) ha-balancer authors
 *
 * "ha_server NAME resolve [service=...]": servers resolved at run time on
 * nginx older than 1.27.3 (Debian 12's 1.22), whose own "server" refuses
 * "resolve".  Worker 0 resolves each name with nginx's resolver (http{}
 * "resolver"), again when the answer's TTL (or "valid=") runs out, as
 * nginx 1.27.3's upstream zone does; each answer makes the upstream's
 * whole list (its "server" lines and every address resolved so far) the
 * zone's membership, through the core (hab_zone_resolve), which keeps
 * the state of the servers that stay.  No nginx list holds the resolved
 * servers: every worker builds its own peer for a slot when a pick first
 * names it (ngx_http_upstream_ha_added_peer, as for servers added through
 * the API).  Design: docs/discovery-design.md, section 4.
 *
 * On nginx 1.27.3 and later "ha_server" is refused with a hint: nginx's
 * own "server ... resolve" does the same (ngx_http_upstream_ha_resolve.c).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


#if !(HAB_RESOLVE)


/* a core that could not take the list (another builder): again after, ms */
#define NGX_HTTP_UPSTREAM_HA_DNS_RETRY  100

/* the source counter of a list applied in part (core: membership PARTIAL) */
#define NGX_HTTP_UPSTREAM_HA_PARTIAL    ((uint64_t) -1)


static ngx_int_t ngx_http_upstream_ha_dns_parse(ngx_conf_t *cf,
    ngx_http_upstream_ha_host_t *h, ngx_str_t *value, ngx_uint_t n);
static ngx_int_t ngx_http_upstream_ha_dns_seed_group(
    ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_ha_srv_conf_t *ohcf, ngx_pool_t *pool,
    hab_peer_conf *pc, ngx_uint_t n, ngx_uint_t *k, ngx_uint_t backup);
static void ngx_http_upstream_ha_dns_timer(ngx_event_t *ev);
static void ngx_http_upstream_ha_dns_handler(ngx_resolver_ctx_t *ctx);
static ngx_int_t ngx_http_upstream_ha_dns_answer(
    ngx_http_upstream_ha_host_t *h, ngx_resolver_ctx_t *ctx, ngx_log_t *log);
static ngx_int_t ngx_http_upstream_ha_dns_from_zone(
    ngx_http_upstream_ha_host_t *h, ngx_log_t *log);
static ngx_int_t ngx_http_upstream_ha_dns_cmp(const void *one,
    const void *two);
static void ngx_http_upstream_ha_dns_apply(
    ngx_http_upstream_ha_srv_conf_t *hcf, ngx_log_t *log);
static void ngx_http_upstream_ha_dns_retry(ngx_event_t *ev);
static hab_peer_conf *ngx_http_upstream_ha_dns_list(
    ngx_http_upstream_ha_srv_conf_t *hcf, ngx_pool_t *pool, ngx_uint_t *n,
    uint32_t *digest);
static void ngx_http_upstream_ha_dns_entry(
    ngx_http_upstream_ha_srv_conf_t *hcf, ngx_http_upstream_ha_host_t *h,
    ngx_http_upstream_ha_dns_addr_t *a, hab_peer_conf *pc);


#endif


/*
 * ha_server NAME[:PORT] [resolve] [service=NAME] [weight=N] [max_conns=N]
 *     [max_fails=N] [fail_timeout=TIME] [backup] [down]
 */

char *
ngx_http_upstream_ha_server(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
#if (HAB_RESOLVE)

    return "is for nginx older than 1.27.3: use \"server ... resolve\"";

#elif !(NGX_HTTP_UPSTREAM_ZONE)

    return "needs nginx built with the upstream zone module";

#else

    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_str_t                     *value;
    ngx_http_upstream_server_t    *us;
    ngx_http_upstream_ha_host_t   *h;
    ngx_http_upstream_srv_conf_t  *uscf;

    if (hcf->hosts == NULL) {
        hcf->hosts = ngx_array_create(cf->pool, 2,
                                      sizeof(ngx_http_upstream_ha_host_t));
        if (hcf->hosts == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    h = ngx_array_push(hcf->hosts);
    if (h == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(h, sizeof(ngx_http_upstream_ha_host_t));

    value = cf->args->elts;

    if (ngx_http_upstream_ha_dns_parse(cf, h, value, cf->args->nelts)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /*
     * a server with no address in nginx's list: nginx refuses an upstream
     * block without servers ("no servers are inside upstream"); round
     * robin builds no peer of it
     */

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    us = ngx_array_push(uscf->servers);
    if (us == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(us, sizeof(ngx_http_upstream_server_t));

    us->name = value[1];
    us->weight = 1;

    return NGX_CONF_OK;

#endif
}


#if !(HAB_RESOLVE)


static ngx_int_t
ngx_http_upstream_ha_dns_parse(ngx_conf_t *cf, ngx_http_upstream_ha_host_t *h,
    ngx_str_t *value, ngx_uint_t n)
{
    time_t       fail_timeout;
    ngx_str_t    s;
    ngx_url_t    u;
    ngx_int_t    weight, max_conns, max_fails;
    ngx_uint_t   i;

    weight = 1;
    max_conns = 0;
    max_fails = 1;
    fail_timeout = 10;

    for (i = 2; i < n; i++) {

        if (ngx_strncmp(value[i].data, "weight=", 7) == 0) {

            weight = ngx_atoi(&value[i].data[7], value[i].len - 7);

            if (weight == NGX_ERROR || weight == 0 || weight > 0xffffffff) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_conns=", 10) == 0) {

            max_conns = ngx_atoi(&value[i].data[10], value[i].len - 10);

            if (max_conns == NGX_ERROR || max_conns > 0xffffffff) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_fails=", 10) == 0) {

            max_fails = ngx_atoi(&value[i].data[10], value[i].len - 10);

            if (max_fails == NGX_ERROR || max_fails > 0xffffffff) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "fail_timeout=", 13) == 0) {

            s.len = value[i].len - 13;
            s.data = &value[i].data[13];

            fail_timeout = ngx_parse_time(&s, 1);

            if (fail_timeout == (time_t) NGX_ERROR
                || (uint64_t) fail_timeout > 0xffffffff / 1000)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "backup") == 0) {
            h->backup = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "down") == 0) {
            h->down = 1;
            continue;
        }

        /* every ha_server is resolved at run time: "resolve" says so */

        if (ngx_strcmp(value[i].data, "resolve") == 0) {
            continue;
        }

        if (ngx_strncmp(value[i].data, "service=", 8) == 0) {

            h->service.len = value[i].len - 8;
            h->service.data = &value[i].data[8];

            if (h->service.len == 0) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = value[1];
    u.default_port = 80;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        if (u.err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in ha_server \"%V\"", u.err, &u.url);
        }

        return NGX_ERROR;
    }

    if (u.naddrs) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_server \"%V\" is an address: nothing to "
                           "resolve, use \"server\"", &u.url);
        return NGX_ERROR;
    }

    if (u.host.len == 0 || u.uri.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid ha_server \"%V\"", &u.url);
        return NGX_ERROR;
    }

    if (h->service.len && !u.no_port) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "service upstream \"%V\" may not have port",
                           &u.url);
        return NGX_ERROR;
    }

    h->server = value[1];
    h->name = u.host;
    h->port = u.port;
    h->weight = (ngx_uint_t) weight;
    h->max_conns = (ngx_uint_t) max_conns;
    h->max_fails = (ngx_uint_t) max_fails;
    h->fail_timeout = fail_timeout;

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);

    return NGX_ERROR;
}


/*
 * init_upstream, an upstream with "ha_server" lines only (each an entry
 * without addresses): round robin would refuse it ("no servers in
 * upstream"); an empty list of nginx peers instead.  NGX_DECLINED: the
 * upstream has servers of its own.
 */

ngx_int_t
ngx_http_upstream_ha_init_empty(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_uint_t                     i;
    ngx_http_upstream_server_t    *server;
    ngx_http_upstream_rr_peers_t  *peers;

    server = us->servers->elts;

    for (i = 0; i < us->servers->nelts; i++) {
        if (server[i].naddrs) {
            return NGX_DECLINED;
        }
    }

    peers = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_rr_peers_t));
    if (peers == NULL) {
        return NGX_ERROR;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     peers->number = 0;
     *     peers->tries = 0;
     *     peers->peer = NULL;
     *     peers->next = NULL;
     */

    peers->name = &us->host;

    us->peer.init = ngx_http_upstream_init_round_robin_peer;
    us->peer.data = peers;

    return NGX_OK;
}


/*
 * init_upstream: room for ha_resolve_max resolved servers after the n
 * configured ones, nginx's resolver, and the checks nginx 1.27.3 makes
 * for "server ... resolve"
 */

ngx_int_t
ngx_http_upstream_ha_init_dns(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_uint_t n)
{
    ngx_uint_t                     i;
    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_upstream_ha_host_t   *h;
    ngx_http_upstream_rr_peers_t  *peers;

    if (hcf->hosts == NULL) {
        if (hcf->ha.resolve_max != NGX_CONF_UNSET_UINT) {
            ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                          "ha_balance upstream \"%V\": \"ha_resolve_max\" "
                          "is ignored: no server is resolved at run time "
                          "in %s:%ui", &us->host, us->file_name, us->line);
        }

        return NGX_OK;
    }

#if (NGX_HTTP_UPSTREAM_ZONE)
    if (us->shm_zone == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "resolving names at run time requires upstream "
                      "\"%V\" in %s:%ui to be in shared memory",
                      &us->host, us->file_name, us->line);
        return NGX_ERROR;
    }
#endif

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->resolver == NULL || clcf->resolver->connections.nelts == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no resolver defined to resolve names at run time "
                      "in upstream \"%V\" in %s:%ui (\"resolver\" in "
                      "http{})", &us->host, us->file_name, us->line);
        return NGX_ERROR;
    }

    hcf->resolver = clcf->resolver;
    hcf->resolver_timeout = (clcf->resolver_timeout != NGX_CONF_UNSET_MSEC)
                            ? clcf->resolver_timeout : 30000;

    h = hcf->hosts->elts;

    for (i = 0; i < hcf->hosts->nelts; i++) {
        if (h[i].backup
            && hcf->ha.policy != HAB_POLICY_ROUND_ROBIN
            && hcf->ha.policy != HAB_POLICY_LEAST_CONN)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_balance upstream \"%V\": this policy does not "
                          "support backup servers in %s:%ui",
                          &us->host, us->file_name, us->line);
            return NGX_ERROR;
        }
    }

    if (hcf->ha.resolve_max == NGX_CONF_UNSET_UINT) {
        hcf->ha.resolve_max = HAB_RESOLVE_MAX_DEFAULT;
    }

    hcf->ha.conf.capacity = n + hcf->ha.resolve_max;
    hcf->added_max = hcf->ha.resolve_max;

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

    peers = us->peer.data;
    hcf->nprimary = peers->number;

    /*
     * the list's id: every configuration has a larger one than the one
     * before (the workers of an older one that share the zone never
     * publish theirs, core/src/write/membership.rs list_order)
     */

    hcf->list_id = ngx_upstream_ha_monotonic_ns();

    return NGX_OK;
}


/*
 * The old zone's live resolved servers of one group (backup 0: primaries,
 * 1: backups) appended to pc[*k .. n), their identities in pool.
 */

static ngx_int_t
ngx_http_upstream_ha_dns_seed_group(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_ha_srv_conf_t *ohcf, ngx_pool_t *pool,
    hab_peer_conf *pc, ngx_uint_t n, ngx_uint_t *k, ngx_uint_t backup)
{
    u_char         *p, text[HAB_SLOT_TEXT_MAX];
    size_t          len;
    uint32_t        slot, end;
    hab_result      rc;
    hab_slot_peer   sp;

    end = hab_zone_peers(ohcf->ha.zone);

    for (slot = (uint32_t) ohcf->ha.conf.npeers; slot < end && *k < n; slot++) {

        rc = hab_zone_slot_peer(ohcf->ha.zone, slot, text, sizeof(text), &sp);

        if (rc != HAB_OK || sp.status != HAB_SLOT_LIVE
            || (ngx_uint_t) ((sp.flags & HAB_PEER_BACKUP) != 0) != backup)
        {
            continue;
        }

        len = hcf->ha.name->len + 1 + sp.server_len + 1 + sp.address_len;

        p = ngx_pnalloc(pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        pc[*k].id = p;
        pc[*k].id_len = len;

        p = ngx_cpymem(p, hcf->ha.name->data, hcf->ha.name->len);
        *p++ = '\0';
        pc[*k].server = p;
        pc[*k].server_len = sp.server_len;
        p = ngx_cpymem(p, text, sp.server_len);
        *p++ = '\0';
        ngx_memcpy(p, text + sp.server_len, sp.address_len);

        pc[*k].weight = sp.weight;
        pc[*k].max_conns = sp.max_conns;
        pc[*k].max_fails = sp.max_fails;
        pc[*k].fail_timeout_ms = sp.fail_timeout_ms;
        pc[*k].flags = sp.flags & (HAB_PEER_DOWN | HAB_PEER_BACKUP);
        pc[*k].position = HAB_POSITION_NONE;

        (*k)++;
    }

    return NGX_OK;
}


/*
 * Zone init (master), a fresh zone after a reload: the old zone's resolved
 * servers join the configured ones at once, as nginx 1.27.3 pre-resolves
 * a new upstream zone from the old one; worker 0's first answers correct
 * them, and hab_zone_carry() then moves their state across.
 */

void
ngx_http_upstream_ha_dns_seed(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_ha_srv_conf_t *ohcf, ngx_log_t *log)
{
    uint32_t            *slots, end;
    ngx_uint_t           n, k;
    ngx_pool_t          *pool;
    hab_result           rc;
    hab_peer_conf       *pc;
    hab_upstream_conf    list;
    hab_resolve_report   report;

    if (hcf->hosts == NULL || ohcf == NULL || ohcf->hosts == NULL
        || ohcf->ha.zone == NULL)
    {
        return;
    }

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, log);
    if (pool == NULL) {
        return;
    }

    end = hab_zone_peers(ohcf->ha.zone);
    n = hcf->ha.conf.npeers + (end - ohcf->ha.conf.npeers);

    pc = ngx_pcalloc(pool, (n ? n : 1) * sizeof(hab_peer_conf));
    slots = ngx_pcalloc(pool, (n ? n : 1) * sizeof(uint32_t));
    if (pc == NULL || slots == NULL) {
        goto done;
    }

    /* configured primaries, resolved primaries, then backups, likewise */

    k = 0;
    ngx_memcpy(pc, hcf->ha.conf.peers, hcf->nprimary * sizeof(hab_peer_conf));
    k += hcf->nprimary;

    if (ngx_http_upstream_ha_dns_seed_group(hcf, ohcf, pool, pc, n, &k, 0)
        != NGX_OK)
    {
        goto done;
    }

    ngx_memcpy(&pc[k], hcf->ha.conf.peers + hcf->nprimary,
               (hcf->ha.conf.npeers - hcf->nprimary) * sizeof(hab_peer_conf));
    k += hcf->ha.conf.npeers - hcf->nprimary;

    if (ngx_http_upstream_ha_dns_seed_group(hcf, ohcf, pool, pc, n, &k, 1)
        != NGX_OK)
    {
        goto done;
    }

    if (k == hcf->ha.conf.npeers) {
        goto done;
    }

    list = hcf->ha.conf;
    list.peers = pc;
    list.npeers = k;
    list.capacity = 0;

    ngx_memzero(&report, sizeof(hab_resolve_report));

    /* source (list id, 0): worker 0's first answer comes after it */

    rc = hab_zone_resolve(hcf->ha.zone, &list, hcf->list_id, 0,
                          ngx_current_msec, (uint64_t) ngx_pid, HAB_NO_SLOT,
                          ngx_upstream_ha_alive, NULL, slots, &report);

    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_balance upstream \"%V\": resolved servers not "
                      "kept across the reload: %s", hcf->ha.name,
                      hab_result_str(rc));

    } else if (report.built) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "ha_balance upstream \"%V\": %uD resolved servers "
                      "kept across the reload", hcf->ha.name, report.added);
    }

done:

    ngx_destroy_pool(pool);
}


/* init_process: worker 0 resolves every name, at once */

void
ngx_http_upstream_ha_start_dns(ngx_cycle_t *cycle,
    ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_uint_t                    i;
    ngx_http_upstream_ha_host_t  *h;

    if (hcf->hosts == NULL || ngx_worker != 0) {
        return;
    }

    hcf->dns_ev.handler = ngx_http_upstream_ha_dns_retry;
    hcf->dns_ev.data = hcf;
    hcf->dns_ev.log = cycle->log;
    hcf->dns_ev.cancelable = 1;

    h = hcf->hosts->elts;

    for (i = 0; i < hcf->hosts->nelts; i++) {
        h[i].hcf = hcf;
        h[i].answered = 0;
        h[i].pool = NULL;
        h[i].addrs = NULL;
        h[i].naddrs = 0;

        h[i].event.handler = ngx_http_upstream_ha_dns_timer;
        h[i].event.data = &h[i];
        h[i].event.log = cycle->log;
        h[i].event.cancelable = 1;

        ngx_add_timer(&h[i].event, 1);
    }
}


void
ngx_http_upstream_ha_stop_dns(ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_uint_t                    i;
    ngx_http_upstream_ha_host_t  *h;

    if (hcf->hosts == NULL || hcf->dns_ev.handler == NULL) {
        return;
    }

    if (hcf->dns_ev.timer_set) {
        ngx_del_timer(&hcf->dns_ev);
    }

    h = hcf->hosts->elts;

    for (i = 0; i < hcf->hosts->nelts; i++) {
        if (h[i].event.timer_set) {
            ngx_del_timer(&h[i].event);
        }

        if (h[i].pool) {
            ngx_destroy_pool(h[i].pool);
            h[i].pool = NULL;
            h[i].addrs = NULL;
            h[i].naddrs = 0;
        }
    }
}


static void
ngx_http_upstream_ha_dns_timer(ngx_event_t *ev)
{
    ngx_http_upstream_ha_host_t  *h = ev->data;

    ngx_resolver_ctx_t               *ctx;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = h->hcf;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ctx = ngx_resolve_start(hcf->resolver, NULL);
    if (ctx == NULL) {
        goto retry;
    }

    if (ctx == NGX_NO_RESOLVER) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "no resolver defined to resolve %V", &h->name);
        return;
    }

    ctx->name = h->name;
    ctx->service = h->service;
    ctx->handler = ngx_http_upstream_ha_dns_handler;
    ctx->data = h;
    ctx->timeout = hcf->resolver_timeout;
    ctx->cancelable = 1;

    if (ngx_resolve_name(ctx) == NGX_OK) {
        return;
    }

retry:

    ngx_add_timer(ev, ngx_max(hcf->resolver_timeout, 1000));
}


/*
 * An answer, as nginx 1.27.3 takes it (ngx_http_upstream_zone_module.c):
 * errors keep the name's addresses and ask again after resolver_timeout
 * (1 s at least); NXDOMAIN leaves the name no address; the lowest SRV
 * priority is the template's list, the others backups (or dropped where
 * the policy has none); asked again when the answer expires.
 */

static void
ngx_http_upstream_ha_dns_handler(ngx_resolver_ctx_t *ctx)
{
    ngx_http_upstream_ha_host_t  *h = ctx->data;

    time_t                            now, valid;
    ngx_uint_t                        i;
    ngx_msec_t                        timer;
    ngx_event_t                      *ev;
    ngx_resolver_srv_name_t          *srv;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    ev = &h->event;
    hcf = h->hcf;

    for (i = 0; i < ctx->nsrvs; i++) {
        srv = &ctx->srvs[i];

        if (srv->state) {
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "%V could not be resolved (%i: %s) "
                          "while resolving service %V of %V",
                          &srv->name, srv->state,
                          ngx_resolver_strerror(srv->state), &ctx->service,
                          &ctx->name);
        }
    }

    if (ctx->state) {
        if (ctx->service.len) {
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "service %V of %V could not be resolved (%i: %s)",
                          &ctx->service, &ctx->name, ctx->state,
                          ngx_resolver_strerror(ctx->state));

        } else {
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "%V could not be resolved (%i: %s)",
                          &ctx->name, ctx->state,
                          ngx_resolver_strerror(ctx->state));
        }

        if (ctx->state != NGX_RESOLVE_NXDOMAIN) {
            ngx_resolve_name_done(ctx);

            /*
             * never answered since this worker started: the name keeps
             * the servers the zone has for it, so that the other names'
             * changes are not held up
             */

            if (!h->answered
                && ngx_http_upstream_ha_dns_from_zone(h, ev->log) == NGX_OK)
            {
                ngx_http_upstream_ha_dns_apply(hcf, ev->log);
            }

            timer = ngx_max(hcf->resolver_timeout, 1000);
            goto next;
        }

        /* NXDOMAIN: the name has no address now */

        ctx->naddrs = 0;
    }

    now = ngx_time();
    valid = ctx->valid;

    if (ngx_http_upstream_ha_dns_answer(h, ctx, ev->log) != NGX_OK) {
        ngx_resolve_name_done(ctx);
        timer = ngx_max(hcf->resolver_timeout, 1000);
        goto next;
    }

    ngx_resolve_name_done(ctx);

    ngx_http_upstream_ha_dns_apply(hcf, ev->log);

    timer = (ngx_msec_t) 1000 * (valid > now ? valid - now + 1 : 1);

next:

    if (!ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_add_timer(ev, timer);
    }
}


/* the answer's addresses, copied, in an order that does not vary */

static ngx_int_t
ngx_http_upstream_ha_dns_answer(ngx_http_upstream_ha_host_t *h,
    ngx_resolver_ctx_t *ctx, ngx_log_t *log)
{
    u_char                           *p, text[NGX_SOCKADDR_STRLEN];
    size_t                            len;
    u_short                           min_priority;
    in_port_t                         port;
    ngx_str_t                        *server, *name;
    ngx_uint_t                        i, n, backup;
    ngx_pool_t                       *pool;
    ngx_sockaddr_t                    sa;
    ngx_resolver_addr_t              *addr;
    ngx_http_upstream_ha_dns_addr_t  *a;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = h->hcf;
    name = hcf->ha.name;

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    a = ngx_pcalloc(pool, (ctx->naddrs ? ctx->naddrs : 1)
                          * sizeof(ngx_http_upstream_ha_dns_addr_t));
    if (a == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    min_priority = 65535;

    for (i = 0; i < ctx->naddrs; i++) {
        min_priority = ngx_min(ctx->addrs[i].priority, min_priority);
    }

    n = 0;

    for (i = 0; i < ctx->naddrs; i++) {
        addr = &ctx->addrs[i];

        backup = h->backup || (addr->priority != min_priority);

        /* a backup template keeps the lowest priority only, as nginx */

        if (h->backup && addr->priority != min_priority) {
            continue;
        }

        if (backup
            && hcf->ha.policy != HAB_POLICY_ROUND_ROBIN
            && hcf->ha.policy != HAB_POLICY_LEAST_CONN)
        {
            continue;
        }

        if (addr->socklen > sizeof(ngx_sockaddr_t)) {
            continue;
        }

        ngx_memcpy(&sa, addr->sockaddr, addr->socklen);

        if (h->service.len == 0) {
            port = h->port;
            ngx_inet_set_port(&sa.sockaddr, port);
        }

        len = ngx_sock_ntop(&sa.sockaddr, addr->socklen, text,
                            NGX_SOCKADDR_STRLEN, 1);

        server = h->service.len ? &addr->name : &h->server;

        p = ngx_pnalloc(pool, name->len + 1 + server->len + 1 + len);
        if (p == NULL) {
            ngx_destroy_pool(pool);
            return NGX_ERROR;
        }

        a[n].id.data = p;
        a[n].id.len = name->len + 1 + server->len + 1 + len;

        p = ngx_cpymem(p, name->data, name->len);
        *p++ = '\0';
        a[n].server.data = p;
        a[n].server.len = server->len;
        p = ngx_cpymem(p, server->data, server->len);
        *p++ = '\0';
        ngx_memcpy(p, text, len);

        if (h->service.len == 0 || h->weight != 1) {
            a[n].weight = (uint32_t) h->weight;

        } else {
            a[n].weight = addr->weight ? addr->weight : 1;
        }

        a[n].backup = backup;

        ngx_log_debug4(NGX_LOG_DEBUG_HTTP, log, 0,
                       "ha server %V resolved to %*s w:%uD",
                       &h->name, len, text, a[n].weight);

        n++;
    }

    ngx_sort(a, n, sizeof(ngx_http_upstream_ha_dns_addr_t),
             ngx_http_upstream_ha_dns_cmp);

    if (h->pool) {
        ngx_destroy_pool(h->pool);
    }

    h->pool = pool;
    h->addrs = a;
    h->naddrs = n;
    h->answered = 1;

    return NGX_OK;
}


/*
 * The servers the zone serves for a name, as if it had answered so: the
 * live slots after the configured ones whose server is the line's (no
 * "service="), or, for the only "service=" line of the upstream, those
 * that belong to no line without it.  NGX_DECLINED: the zone cannot tell
 * (several "service=" lines).
 */

static ngx_int_t
ngx_http_upstream_ha_dns_from_zone(ngx_http_upstream_ha_host_t *h,
    ngx_log_t *log)
{
    u_char                           *p, text[HAB_SLOT_TEXT_MAX];
    uint32_t                          slot, end;
    ngx_str_t                         server;
    ngx_uint_t                        i, n, mine;
    ngx_pool_t                       *pool;
    hab_slot_peer                     sp;
    ngx_http_upstream_ha_host_t      *hosts;
    ngx_http_upstream_ha_dns_addr_t  *a;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = h->hcf;
    hosts = hcf->hosts->elts;

    if (h->service.len) {
        for (i = 0; i < hcf->hosts->nelts; i++) {
            if (&hosts[i] != h && hosts[i].service.len) {
                return NGX_DECLINED;
            }
        }
    }

    end = hab_zone_peers(hcf->ha.zone);

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    a = ngx_pcalloc(pool, (end - hcf->ha.conf.npeers + 1)
                          * sizeof(ngx_http_upstream_ha_dns_addr_t));
    if (a == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    n = 0;

    for (slot = (uint32_t) hcf->ha.conf.npeers; slot < end; slot++) {

        if (hab_zone_slot_peer(hcf->ha.zone, slot, text, sizeof(text), &sp)
            != HAB_OK
            || sp.status != HAB_SLOT_LIVE)
        {
            continue;
        }

        server.data = text;
        server.len = sp.server_len;

        if (h->service.len == 0) {
            mine = (server.len == h->server.len
                    && ngx_strncmp(server.data, h->server.data, server.len)
                       == 0);

        } else {
            mine = 1;

            for (i = 0; i < hcf->hosts->nelts; i++) {
                if (hosts[i].service.len == 0
                    && server.len == hosts[i].server.len
                    && ngx_strncmp(server.data, hosts[i].server.data,
                                   server.len)
                       == 0)
                {
                    mine = 0;
                    break;
                }
            }
        }

        if (!mine) {
            continue;
        }

        p = ngx_pnalloc(pool, hcf->ha.name->len + 1 + sp.server_len + 1
                              + sp.address_len);
        if (p == NULL) {
            ngx_destroy_pool(pool);
            return NGX_ERROR;
        }

        a[n].id.data = p;
        a[n].id.len = hcf->ha.name->len + 1 + sp.server_len + 1
                      + sp.address_len;

        p = ngx_cpymem(p, hcf->ha.name->data, hcf->ha.name->len);
        *p++ = '\0';
        a[n].server.data = p;
        a[n].server.len = sp.server_len;
        p = ngx_cpymem(p, text, sp.server_len);
        *p++ = '\0';
        ngx_memcpy(p, text + sp.server_len, sp.address_len);

        a[n].weight = sp.weight;
        a[n].backup = (sp.flags & HAB_PEER_BACKUP) ? 1 : 0;

        n++;
    }

    ngx_sort(a, n, sizeof(ngx_http_upstream_ha_dns_addr_t),
             ngx_http_upstream_ha_dns_cmp);

    if (h->pool) {
        ngx_destroy_pool(h->pool);
    }

    h->pool = pool;
    h->addrs = a;
    h->naddrs = n;
    h->answered = 1;

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "ha_balance upstream \"%V\": %V keeps the %ui servers "
                  "it has until it is resolved", hcf->ha.name, &h->server, n);

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_ha_dns_cmp(const void *one, const void *two)
{
    ngx_int_t                         rc;
    ngx_http_upstream_ha_dns_addr_t  *a, *b;

    a = (ngx_http_upstream_ha_dns_addr_t *) one;
    b = (ngx_http_upstream_ha_dns_addr_t *) two;

    if (a->backup != b->backup) {
        return a->backup ? 1 : -1;
    }

    rc = ngx_memn2cmp(a->id.data, b->id.data, a->id.len, b->id.len);

    return rc;
}


/*
 * The upstream's whole list, once every name has answered since this
 * worker started (the zone serves the last list until then: a worker 0
 * that was killed and respawned resumes from it), made the zone's
 * membership if it differs from the list last applied or if someone
 * else's is serving.  The source: this configuration's list id and a
 * counter above every one used before with it (the serving one's, read
 * from the zone, so that a respawned worker 0 goes on from there).
 */

static void
ngx_http_upstream_ha_dns_apply(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_log_t *log)
{
    uint32_t                     *slots, digest;
    uint64_t                      config, start;
    ngx_uint_t                    i, n;
    ngx_pool_t                   *pool;
    hab_source                    src;
    hab_result                    rc;
    hab_peer_conf                *pc;
    hab_upstream_conf             list;
    hab_resolve_report            report;
    ngx_http_upstream_ha_host_t  *h;

    h = hcf->hosts->elts;

    for (i = 0; i < hcf->hosts->nelts; i++) {
        if (!h[i].answered) {
            return;
        }
    }

    if (hab_zone_source(hcf->ha.zone, hcf->ha.slot, &src) != HAB_OK) {
        return;
    }

    if (src.list > hcf->list_id) {

        /* a newer configuration serves its own list */

        return;
    }

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, log);
    if (pool == NULL) {
        return;
    }

    pc = ngx_http_upstream_ha_dns_list(hcf, pool, &n, &digest);
    if (pc == NULL) {
        goto done;
    }

    if (digest == hcf->dns_digest && hcf->dns_config != 0
        && src.list == hcf->list_id && src.config == hcf->dns_config)
    {
        goto done;
    }

    slots = ngx_palloc(pool, (n ? n : 1) * sizeof(uint32_t));
    if (slots == NULL) {
        goto done;
    }

    config = hcf->dns_config;

    if (src.list == hcf->list_id && src.config != NGX_HTTP_UPSTREAM_HA_PARTIAL
        && src.config > config)
    {
        config = src.config;
    }

    config++;

    list = hcf->ha.conf;
    list.peers = pc;
    list.npeers = n;
    list.capacity = 0;

    ngx_memzero(&report, sizeof(hab_resolve_report));

    start = ngx_upstream_ha_monotonic_ns();

    rc = hab_zone_resolve(hcf->ha.zone, &list, hcf->list_id, config,
                          ngx_current_msec, (uint64_t) ngx_pid, hcf->ha.slot,
                          ngx_upstream_ha_alive, NULL, slots, &report);

    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_balance upstream \"%V\": resolve: %s",
                      hcf->ha.name, hab_result_str(rc));
        goto done;
    }

    hcf->dns_config = config;

    if (report.built) {
        hcf->dns_digest = digest;

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "ha_balance upstream \"%V\": servers changed: "
                      "%uD kept, %uD back, %uD new, %uD draining%s "
                      "(generation %uL, built in %uL us)", hcf->ha.name,
                      report.kept, report.revived, report.added,
                      report.retired,
                      report.deferred ? ", more new once the slots of "
                                        "those leaving are free" : "",
                      report.generation,
                      (ngx_upstream_ha_monotonic_ns() - start) / 1000);

        if (report.deferred) {
            hcf->dns_digest = 0;
            goto retry;
        }

        goto done;
    }

    if (report.refused == HAB_OK) {
        hcf->dns_digest = digest;
        goto done;
    }

    if (report.refused == HAB_BUSY) {

        /* another builder holds the lease: the list again soon */

        hcf->dns_digest = 0;
        goto retry;
    }

    /* full: logged once per list; the next answer tries again */

    hcf->dns_digest = 0;

    if (hcf->dns_logged != (ngx_uint_t) digest + 1) {
        hcf->dns_logged = (ngx_uint_t) digest + 1;

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "ha_balance upstream \"%V\": the new list of servers "
                      "is not used: %s (at most %ui resolved servers, "
                      "see \"ha_resolve_max\")", hcf->ha.name,
                      hab_result_str(report.refused), hcf->ha.resolve_max);
    }

    goto done;

retry:

    if (!hcf->dns_ev.timer_set && !ngx_exiting) {
        ngx_add_timer(&hcf->dns_ev, NGX_HTTP_UPSTREAM_HA_DNS_RETRY);
    }

done:

    ngx_destroy_pool(pool);
}


static void
ngx_http_upstream_ha_dns_retry(ngx_event_t *ev)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = ev->data;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_http_upstream_ha_dns_apply(hcf, ev->log);
}


/*
 * configured primaries, resolved primaries, configured backups, resolved
 * backups (the core wants primaries first); the digest of what was
 * resolved
 */

static hab_peer_conf *
ngx_http_upstream_ha_dns_list(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_pool_t *pool, ngx_uint_t *n, uint32_t *digest)
{
    uint32_t                      crc;
    ngx_uint_t                    i, j, k, total, pass;
    hab_peer_conf                *pc;
    ngx_http_upstream_ha_host_t  *h;

    h = hcf->hosts->elts;
    total = hcf->ha.conf.npeers;

    for (i = 0; i < hcf->hosts->nelts; i++) {
        total += h[i].naddrs;
    }

    pc = ngx_pcalloc(pool, (total ? total : 1) * sizeof(hab_peer_conf));
    if (pc == NULL) {
        return NULL;
    }

    ngx_crc32_init(crc);

    k = 0;

    for (pass = 0; pass < 2; pass++) {

        if (pass == 0) {
            ngx_memcpy(pc, hcf->ha.conf.peers,
                       hcf->nprimary * sizeof(hab_peer_conf));
            k = hcf->nprimary;

        } else {
            ngx_memcpy(&pc[k], hcf->ha.conf.peers + hcf->nprimary,
                       (hcf->ha.conf.npeers - hcf->nprimary)
                       * sizeof(hab_peer_conf));
            k += hcf->ha.conf.npeers - hcf->nprimary;
        }

        for (i = 0; i < hcf->hosts->nelts; i++) {
            for (j = 0; j < h[i].naddrs; j++) {

                if (h[i].addrs[j].backup != pass) {
                    continue;
                }

                ngx_http_upstream_ha_dns_entry(hcf, &h[i], &h[i].addrs[j],
                                               &pc[k]);

                ngx_crc32_update(&crc, h[i].addrs[j].id.data,
                                 h[i].addrs[j].id.len);
                ngx_crc32_update(&crc, (u_char *) &pc[k].weight,
                                 sizeof(uint32_t));
                ngx_crc32_update(&crc, (u_char *) &pc[k].flags,
                                 sizeof(uint32_t));
                k++;
            }
        }
    }

    ngx_crc32_final(crc);

    *n = k;
    *digest = crc;

    return pc;
}


static void
ngx_http_upstream_ha_dns_entry(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_ha_host_t *h, ngx_http_upstream_ha_dns_addr_t *a,
    hab_peer_conf *pc)
{
    ngx_http_upstream_rr_peer_t  peer;

    pc->id = a->id.data;
    pc->id_len = a->id.len;
    pc->server = a->server.data;
    pc->server_len = a->server.len;
    pc->weight = a->weight;
    pc->max_conns = (uint32_t) h->max_conns;
    pc->max_fails = (uint32_t) h->max_fails;
    pc->fail_timeout_ms = (uint64_t) h->fail_timeout * 1000;
    pc->flags = (a->backup ? HAB_PEER_BACKUP : 0)
                | (h->down ? HAB_PEER_DOWN : 0);
    pc->position = HAB_POSITION_NONE;

    /* ha_route names servers by their server string */

    ngx_memzero(&peer, sizeof(ngx_http_upstream_rr_peer_t));
    peer.server = a->server;

    ngx_http_upstream_ha_sticky_route(hcf, &peer, pc);
}


#endif /* !HAB_RESOLVE */
