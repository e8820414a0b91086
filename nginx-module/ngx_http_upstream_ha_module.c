
/*
 * Copyright (C) ha-balancer authors
 *
 * ha_balance: upstream balancing whose state (in-flight counts, failures,
 * round robin position) lives in shared memory and is common to all worker
 * processes.  The selection logic is in the Rust core behind ha_balancer.h;
 * this file is nginx glue only: the directives, the upstream's init and the
 * balancer's init_peer/get/free.  The zone's life is in
 * ngx_upstream_ha_zone.c, the health directives in
 * ngx_http_upstream_ha_check.c, their timer in ngx_upstream_ha_health.c, the
 * checks in ngx_http_upstream_ha_probe.c, resolved servers in
 * ngx_http_upstream_ha_resolve.c, the API and state file in
 * ngx_http_upstream_ha_api.c, nginx's peers and the core's in
 * ngx_http_upstream_ha_peers.c, the peers a worker builds for slots no nginx
 * list covers in ngx_http_upstream_ha_added.c, the module's hooks in a
 * cycle's life (init_module, init_process, exit_process) in
 * ngx_http_upstream_ha_process.c, what does not depend on the protocol in
 * ngx_upstream_ha_common.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


static ngx_int_t ngx_http_upstream_init_ha(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static void ngx_http_upstream_ha_end_attempt(void *data);
static ngx_int_t ngx_http_upstream_init_ha_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_upstream_get_ha_peer(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_upstream_free_ha_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);

static void *ngx_http_upstream_ha_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_upstream_ha_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_upstream_ha_create_conf(ngx_conf_t *cf);
static char *ngx_http_upstream_ha_balance(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_upstream_ha_hash(ngx_conf_t *cf,
    ngx_http_upstream_ha_srv_conf_t *hcf);
static char *ngx_http_upstream_ha_schedule_room(ngx_conf_t *cf,
    ngx_http_upstream_ha_srv_conf_t *hcf, ngx_str_t *value);
static char *ngx_http_upstream_ha_api_max(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_upstream_ha_latency_buckets(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_upstream_ha_init_api_max(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_uint_t n);
static void ngx_http_upstream_ha_zone_ready(ngx_upstream_ha_conf_t *ha,
    ngx_log_t *log);
static void ngx_http_upstream_ha_zone_carry(ngx_upstream_ha_conf_t *ha,
    ngx_upstream_ha_conf_t *old, ngx_log_t *log);
static ngx_int_t ngx_http_upstream_ha_peer_addr(ngx_upstream_ha_conf_t *ha,
    uint32_t slot, ngx_pool_t *pool, ngx_addr_t *addr, ngx_log_t *log);


/*
 * what the zone's life (ngx_upstream_ha_zone.c) and the health timer
 * (ngx_upstream_ha_health.c) ask of http
 */

static const ngx_upstream_ha_ops_t  ngx_http_upstream_ha_ops = {
    ngx_http_upstream_ha_zone_ready,
    ngx_http_upstream_ha_zone_carry,
    ngx_http_upstream_ha_probe_init,
    ngx_http_upstream_ha_probe_room,
    ngx_http_upstream_ha_probe_start,
    ngx_http_upstream_ha_keep_sweep,
    ngx_http_upstream_ha_stop_probes,
    ngx_http_upstream_ha_peer_addr
};


static ngx_command_t  ngx_http_upstream_ha_commands[] = {

    { ngx_string("ha_balance"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_http_upstream_ha_balance,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_check"),
      NGX_HTTP_UPS_CONF|NGX_CONF_ANY,
      ngx_http_upstream_ha_check,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_check_header"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_http_upstream_ha_check_header,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_check_body"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_http_upstream_ha_check_body,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_slow_start"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_http_upstream_ha_slow_start,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_outlier"),
      NGX_HTTP_UPS_CONF|NGX_CONF_ANY,
      ngx_http_upstream_ha_outlier,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_panic"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_http_upstream_ha_panic,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_sticky"),
      NGX_HTTP_UPS_CONF|NGX_CONF_2MORE,
      ngx_http_upstream_ha_sticky,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_route"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE2,
      ngx_http_upstream_ha_route,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_queue"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE12,
      ngx_http_upstream_ha_queue,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_resolve_max"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_http_upstream_ha_resolve_max,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_server"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_http_upstream_ha_server,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_api_max"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_http_upstream_ha_api_max,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_latency_buckets"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_http_upstream_ha_latency_buckets,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_upstream_ha_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_state_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_upstream_ha_state_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_upstream_ha_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_upstream_ha_sticky_filter_init, /* postconfiguration */

    ngx_http_upstream_ha_create_main_conf, /* create main configuration */
    ngx_http_upstream_ha_init_main_conf,   /* init main configuration */

    ngx_http_upstream_ha_create_conf,      /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_upstream_ha_create_api_conf,  /* create location configuration */
    ngx_http_upstream_ha_merge_api_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_upstream_ha_module = {
    NGX_MODULE_V1,
    &ngx_http_upstream_ha_module_ctx,      /* module context */
    ngx_http_upstream_ha_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_upstream_ha_init_module,      /* init module */
    ngx_http_upstream_ha_init_process,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_upstream_ha_exit_process,     /* exit process */
    ngx_http_upstream_ha_exit_master,      /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_upstream_init_ha(ngx_conf_t *cf, ngx_http_upstream_srv_conf_t *us)
{
    ngx_uint_t                        n;
    ngx_int_t                         empty;
    hab_peer_conf                    *pc;
    ngx_http_upstream_rr_peers_t     *peers;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, cf->log, 0, "init ha balance");

    hcf = ngx_http_conf_upstream_srv_conf(us, ngx_http_upstream_ha_module);

    empty = NGX_DECLINED;

#if !(HAB_RESOLVE)
    if (hcf->hosts != NULL && us->servers != NULL) {

        /* "ha_server" lines only: no peer of nginx's own */

        empty = ngx_http_upstream_ha_init_empty(cf, us);

        if (empty == NGX_ERROR) {
            return NGX_ERROR;
        }
    }
#endif

    if (empty == NGX_DECLINED
        && ngx_http_upstream_init_round_robin(cf, us) != NGX_OK)
    {
        return NGX_ERROR;
    }

    peers = us->peer.data;

    n = peers->number + (peers->next ? peers->next->number : 0);

    pc = ngx_pcalloc(cf->pool, (n ? n : 1) * sizeof(hab_peer_conf));
    if (pc == NULL) {
        return NGX_ERROR;
    }

    hcf->ha.name = &us->host;

    if (peers->next
        && hcf->ha.policy != HAB_POLICY_ROUND_ROBIN
        && hcf->ha.policy != HAB_POLICY_LEAST_CONN)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_balance upstream \"%V\": this policy does not "
                      "support backup servers in %s:%ui",
                      &us->host, us->file_name, us->line);
        return NGX_ERROR;
    }

    if (hcf->ha.conf.maglev_size != 0
        && hcf->ha.conf.maglev_size < peers->number)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_balance upstream \"%V\": maglev table size %uD "
                      "is smaller than its %ui servers in %s:%ui",
                      &us->host, hcf->ha.conf.maglev_size, peers->number,
                      us->file_name, us->line);
        return NGX_ERROR;
    }

    hcf->hmcf = ngx_http_conf_get_module_main_conf(cf,
                                                 ngx_http_upstream_ha_module);
    hcf->ha.state = &hcf->hmcf->state;
    hcf->uscf = us;
    hcf->ha.conf.policy = (uint32_t) hcf->ha.policy;

    if (ngx_http_upstream_ha_init_health(cf, hcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_upstream_ha_init_sticky(cf, us, hcf) != NGX_OK) {
        return NGX_ERROR;
    }
    hcf->ha.conf.peers = pc;
    hcf->ha.conf.npeers = n;

#if (HAB_RESOLVE)
    if (ngx_http_upstream_ha_init_resolve(cf, us, hcf, n) != NGX_OK) {
        return NGX_ERROR;
    }
#else
    if (ngx_http_upstream_ha_init_dns(cf, us, hcf, n) != NGX_OK) {
        return NGX_ERROR;
    }
#endif

    if (ngx_http_upstream_ha_init_api_max(cf, us, hcf, n) != NGX_OK) {
        return NGX_ERROR;
    }

    if (hcf->ha.nbuckets) {
        hcf->ha.conf.buckets = hcf->ha.buckets;
        hcf->ha.conf.nbuckets = hcf->ha.nbuckets;
    }

    if (ngx_http_upstream_ha_add_peers(cf, us, hcf, peers, pc, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    if (peers->next
        && ngx_http_upstream_ha_add_peers(cf, us, hcf, peers->next,
                                          pc + peers->number, HAB_PEER_BACKUP)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_upstream_ha_positions(us, pc, peers->number, n);

    if (ngx_http_upstream_ha_check_routes(cf, us, hcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_upstream_ha_add_zone(cf, &hcf->ha, &ngx_http_upstream_ha_module,
                                 us->file_name, us->line)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    us->peer.init = ngx_http_upstream_init_ha_peer;

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_init_ha_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    void                              *mem;
    size_t                             size;
    hab_result                         rc;
    ngx_pool_cleanup_t                *cln;
    ngx_http_upstream_ha_srv_conf_t   *hcf;
    ngx_http_upstream_ha_peer_data_t  *hp;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "init ha peer");

    hcf = ngx_http_conf_upstream_srv_conf(us, ngx_http_upstream_ha_module);

    if (hcf->ha.zone == NULL) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ha_balance upstream \"%V\" has no zone", hcf->ha.name);
        return NGX_ERROR;
    }

    hp = ngx_palloc(r->pool, sizeof(ngx_http_upstream_ha_peer_data_t));
    if (hp == NULL) {
        return NGX_ERROR;
    }

    r->upstream->peer.data = &hp->rrp;

    if (ngx_http_upstream_init_round_robin_peer(r, us) != NGX_OK) {
        return NGX_ERROR;
    }

    /* servers added through the API are tries too */

    if (hcf->added_max) {
        r->upstream->peer.tries += ngx_http_upstream_ha_added_live(hcf);
    }

    if (!hcf->ha.resolve
        && ngx_http_upstream_ha_index(hcf, hp->rrp.peers, r->connection->log)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    size = hab_attempt_size(hcf->ha.zone);

    mem = ngx_palloc(r->pool, size);
    if (mem == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    /*
     * nginx seeds random() per worker: workers draw independently; the
     * attempt pins the generation serving now until the request ends
     */

    rc = hab_attempt_init(hcf->ha.zone, mem, size, ngx_current_msec,
                          ((uint64_t) ngx_random() << 32) ^ ngx_random(),
                          hcf->ha.slot, &hp->attempt);
    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ha_balance attempt: %s", hab_result_str(rc));
        return NGX_ERROR;
    }

    cln->handler = ngx_http_upstream_ha_end_attempt;
    cln->data = hp;

    hp->conf = hcf;
    hp->request = r;
    hp->peers = hp->rrp.peers;
    hp->ref = 0;
    hp->waiter = NULL;
    hp->tried = 0;

    ngx_http_upstream_ha_sticky_init_peer(hp);

#if (HAB_RESOLVE)
    if (hcf->ha.resolve) {
        ngx_http_upstream_ha_init_resolved_peer(hp, r->connection->log);
    }
#endif

    if (hcf->ha.policy == HAB_POLICY_HASH) {
        if (ngx_http_complex_value(r, &hcf->key, &hp->key) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "ha balance hash key:\"%V\"", &hp->key);

    } else {
        ngx_str_null(&hp->key);
    }

    r->upstream->peer.get = ngx_http_upstream_get_ha_peer;
    r->upstream->peer.free = ngx_http_upstream_free_ha_peer;

#if (HAB_RESOLVE)
    if (hcf->ha.resolve) {
        r->upstream->peer.get = ngx_http_upstream_ha_get_resolved_peer;
    }
#endif

    return NGX_OK;
}


static void
ngx_http_upstream_ha_end_attempt(void *data)
{
    ngx_http_upstream_ha_peer_data_t  *hp = data;

    hab_wake  wake;

#if (HAB_RESOLVE)
    ngx_http_upstream_ha_unref(hp);
#endif

    if (hab_attempt_end_wake(hp->conf->ha.zone, hp->attempt, &wake) == HAB_OK) {
        ngx_upstream_ha_wake(&wake, ngx_cycle->log);
    }
}


static ngx_int_t
ngx_http_upstream_get_ha_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_upstream_ha_peer_data_t  *hp = data;

    hab_pick                       pick;
    hab_wake                       wake;
    ngx_int_t                      rc;
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *peers;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "get ha peer, try: %ui", pc->tries);

    pc->cached = 0;
    pc->connection = NULL;

    /* a pick, or none (502), or a wait in ha_queue */

    rc = ngx_http_upstream_ha_queue_pick(hp, pc, &pick);

    if (rc == NGX_BUSY) {
        pc->name = hp->peers->name;
        return NGX_BUSY;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    if (pick.peer < hp->conf->npeers) {
        peer = hp->conf->peer[pick.peer];
        peers = (pick.flags & HAB_PICK_BACKUP) ? hp->peers->next : hp->peers;

    } else {

        /* a server added through the API: this worker's own peer */

        peer = ngx_http_upstream_ha_added_peer(hp->conf, pick.peer, pc->log);
        peers = hp->conf->added_peers;
    }

    if (peer == NULL) {
        ngx_log_error(NGX_LOG_ALERT, pc->log, 0,
                      "ha_balance get: peer %uD out of range or without "
                      "an address", pick.peer);

        if (hab_attempt_abandon_wake(hp->conf->ha.zone, hp->attempt, &wake)
            == HAB_OK)
        {
            ngx_upstream_ha_wake(&wake, pc->log);
        }

        return NGX_ERROR;
    }

    /* the TLS session hooks of round robin use these */

    hp->rrp.current = peer;
    hp->rrp.peers = peers;

    pc->sockaddr = peer->sockaddr;
    pc->socklen = peer->socklen;
    pc->name = &peer->name;

    ngx_http_upstream_ha_sticky_picked(hp, pc, &pick);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "get ha peer, current: %uD %V%s", pick.peer, &peer->name,
                   (pick.flags & HAB_PICK_BOUND) ? " (bound)" : "");

    return NGX_OK;
}


static void
ngx_http_upstream_free_ha_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_upstream_ha_peer_data_t  *hp = data;

    u_char                        last[32];
    uint32_t                      outcome;
    hab_try                       info;
    hab_report                    report;
    hab_result                    rc;
    ngx_connection_t             *c;
    ngx_http_upstream_t          *u;
    ngx_http_upstream_rr_peer_t  *peer;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "free ha peer %ui %ui", pc->tries, state);

    if (state & NGX_PEER_FAILED) {
        outcome = HAB_OUTCOME_FAILED;

    } else if (state & NGX_PEER_NEXT) {
        outcome = HAB_OUTCOME_NEXT;

    } else {
        outcome = HAB_OUTCOME_OK;
    }

    /*
     * what the try got: nginx sets header_time when the response header
     * was processed; a status set without it (502, 504) is nginx's own
     */

    ngx_memzero(&info, sizeof(hab_try));

    u = hp->request->upstream;

    if (u && u->state) {

        if (u->state->header_time != (ngx_msec_t) -1) {
            info.status = (uint32_t) u->state->status;
            info.flags = HAB_TRY_HEADER_TIME;
            info.header_ms = u->state->header_time;
        }

        info.sent = (uint64_t) u->state->bytes_sent;
        info.received = (uint64_t) u->state->bytes_received;
    }

    /* learn: the server that answered holds the session */

    if (outcome == HAB_OUTCOME_OK
        && hp->conf->sticky.mode == NGX_HTTP_UPSTREAM_HA_STICKY_LEARN
        && !hp->conf->sticky.header)
    {
        ngx_http_upstream_ha_sticky_learn(hp);
    }

    rc = hab_attempt_release(hp->conf->ha.zone, hp->attempt, outcome, &info,
                             ngx_current_msec, &report);

    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_ALERT, pc->log, 0,
                      "ha_balance free: %s", hab_result_str(rc));
#if (HAB_RESOLVE)
        ngx_http_upstream_ha_unref(hp);
#endif
        return;
    }

    /* a waiter may take the server's place */

    ngx_upstream_ha_wake(&report.wake, pc->log);

    /*
     * each transition is reported to one worker only: logged once; the
     * peer is the one get handed out (referenced if resolved)
     */

    peer = hp->rrp.current;

    if (report.flags & (HAB_REPORT_DISABLED|HAB_REPORT_RECOVERED)
        && peer != NULL)
    {

        if (report.flags & HAB_REPORT_DISABLED) {
            c = pc->connection;

            if (info.status) {
                ngx_sprintf(last, "status %uD%Z", info.status);

            } else if (c && (c->read->timedout || c->write->timedout)) {
                ngx_sprintf(last, "timed out%Z");

            } else {
                ngx_sprintf(last, "no response%Z");
            }

            ngx_log_error(NGX_LOG_WARN, pc->log, 0,
                          "upstream server %V of \"%V\" unavailable for "
                          "%T s: max_fails=%ui reached within fail_timeout, "
                          "last try: %s",
                          &peer->name, hp->conf->ha.name, peer->fail_timeout,
                          peer->max_fails, last);
        }

        if (report.flags & HAB_REPORT_RECOVERED) {
            ngx_log_error(NGX_LOG_NOTICE, pc->log, 0,
                          "upstream server %V of \"%V\" is back after "
                          "%uL ms unavailable",
                          &peer->name, hp->conf->ha.name,
                          (uint64_t) report.down_ms);
        }
    }

    if ((report.flags & HAB_REPORT_EJECTED) && peer != NULL) {
        ngx_log_error(NGX_LOG_WARN, pc->log, 0,
                      "upstream server %V of \"%V\" ejected for %uL ms: "
                      "%uD %s in a row", &peer->name, hp->conf->ha.name,
                      (uint64_t) report.eject_ms, report.eject_count,
                      report.eject_reason == HAB_EJECT_5XX
                      ? "5xx responses" : "gateway errors");

        ngx_upstream_ha_log_panic(pc->log, hp->conf->ha.name,
                                       &hp->conf->ha.health, &report.panic);
    }

#if (HAB_RESOLVE)
    ngx_http_upstream_ha_unref(hp);
#endif

    if (report.flags & HAB_REPORT_LAST_TRY) {
        pc->tries = 0;
        return;
    }

    if (pc->tries) {
        pc->tries--;
    }
}


static void *
ngx_http_upstream_ha_create_conf(ngx_conf_t *cf)
{
    ngx_http_upstream_ha_srv_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_ha_srv_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->ha.policy = 0;
     *     conf->ha.zone = NULL;
     *     conf->indexed = NULL;
     */

    ngx_str_set(&conf->ha.subsystem, "http");
    conf->ha.ops = &ngx_http_upstream_ha_ops;
    conf->ha.slot = HAB_NO_SLOT;
    conf->ha.resolve_max = NGX_CONF_UNSET_UINT;
    conf->ha.api_max = NGX_CONF_UNSET_UINT;
    conf->added_gen = (uint64_t) -1;

    return conf;
}


static char *
ngx_http_upstream_ha_balance(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    char                          *rv;
    u_char                        *p, *last, *start;
    ngx_int_t                      n;
    ngx_str_t                     *value, s;
    ngx_uint_t                     i, flags;
    ngx_http_upstream_srv_conf_t  *uscf;

    if (hcf->ha.policy) {
        return "is duplicate";
    }

    value = cf->args->elts;
    i = 2;

    if (ngx_strcmp(value[1].data, "round_robin") == 0) {
        hcf->ha.policy = HAB_POLICY_ROUND_ROBIN;

    } else if (ngx_strcmp(value[1].data, "least_conn") == 0) {
        hcf->ha.policy = HAB_POLICY_LEAST_CONN;

    } else if (ngx_strcmp(value[1].data, "p2c") == 0) {
        hcf->ha.policy = HAB_POLICY_P2C;

    } else if (ngx_strcmp(value[1].data, "random") == 0) {
        hcf->ha.policy = HAB_POLICY_RANDOM;

    } else if (ngx_strcmp(value[1].data, "ewma") == 0) {
        hcf->ha.policy = HAB_POLICY_EWMA;

        if (cf->args->nelts > 2
            && ngx_strncmp(value[2].data, "decay=", 6) == 0)
        {
            s.len = value[2].len - 6;
            s.data = value[2].data + 6;

            n = ngx_parse_time(&s, 0);
            if (n == NGX_ERROR || n == 0 || n > 0x7fffffff) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid decay \"%V\"", &value[2]);
                return NGX_CONF_ERROR;
            }

            hcf->ha.conf.decay_ms = (uint32_t) n;
            i = 3;
        }

    } else if (ngx_strcmp(value[1].data, "hash") == 0) {
        hcf->ha.policy = HAB_POLICY_HASH;

        rv = ngx_http_upstream_ha_hash(cf, hcf);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        i = cf->args->nelts;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown ha_balance policy \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    for ( /* void */ ; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "schedule_room=", 14) == 0
            && (hcf->ha.policy == HAB_POLICY_ROUND_ROBIN
                || hcf->ha.policy == HAB_POLICY_LEAST_CONN))
        {
            rv = ngx_http_upstream_ha_schedule_room(cf, hcf, &value[i]);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    /* the API, metrics and state file name the upstream in UTF-8 */

    p = uscf->host.data;
    last = p + uscf->host.len;

    while (p < last) {
        if (*p < 0x80) {
            p++;
            continue;
        }

        start = p;

        if (ngx_utf8_decode(&p, last - p) > 0x10ffff) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "upstream name \"%*s...\" is not valid "
                               "UTF-8 (byte 0x%02xd at offset %uz): the "
                               "ha_api and ha_state_file could not name it",
                               start - uscf->host.data, uscf->host.data,
                               (int) *start, start - uscf->host.data);
            return NGX_CONF_ERROR;
        }
    }

    if (uscf->peer.init_upstream) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "load balancing method redefined");
    }

    uscf->peer.init_upstream = ngx_http_upstream_init_ha;

    flags = NGX_HTTP_UPSTREAM_CREATE
            |NGX_HTTP_UPSTREAM_WEIGHT
            |NGX_HTTP_UPSTREAM_MAX_CONNS
            |NGX_HTTP_UPSTREAM_MAX_FAILS
            |NGX_HTTP_UPSTREAM_FAIL_TIMEOUT
            |NGX_HTTP_UPSTREAM_DOWN;

    /* as in nginx, backup servers only where the policy can rank them */

    if (hcf->ha.policy == HAB_POLICY_ROUND_ROBIN
        || hcf->ha.policy == HAB_POLICY_LEAST_CONN)
    {
        flags |= NGX_HTTP_UPSTREAM_BACKUP;
    }

#if (HAB_RESOLVE)

    /*
     * every policy follows the peer list when nginx changes it (servers
     * resolved at run time): see ngx_http_upstream_ha_resolve.c
     */

    flags |= NGX_HTTP_UPSTREAM_MODIFY;

#endif

    uscf->flags = flags;

    return NGX_CONF_OK;
}


/* hash <key> [consistent | maglev [table_size=N]] [balance_factor=N] */

static char *
ngx_http_upstream_ha_hash(ngx_conf_t *cf, ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_int_t                          n;
    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (cf->args->nelts < 3) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_balance hash needs a key");
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = &hcf->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    hcf->ha.conf.hash_mode = HAB_HASH_PLAIN;

    for (i = 3; i < cf->args->nelts; i++) {

        if (i == 3 && ngx_strcmp(value[i].data, "consistent") == 0) {
            hcf->ha.conf.hash_mode = HAB_HASH_CONSISTENT;
            continue;
        }

        if (i == 3 && ngx_strcmp(value[i].data, "maglev") == 0) {
            hcf->ha.conf.hash_mode = HAB_HASH_MAGLEV;
            continue;
        }

        if (ngx_strncmp(value[i].data, "table_size=", 11) == 0) {

            if (hcf->ha.conf.hash_mode != HAB_HASH_MAGLEV) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" needs \"maglev\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            n = ngx_upstream_ha_maglev_size(&value[i]);
            if (n == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid maglev table size \"%V\": it "
                                   "must be a prime from %ui to %ui",
                                   &value[i], (ngx_uint_t) HAB_MAGLEV_MIN,
                                   (ngx_uint_t) HAB_MAGLEV_MAX);
                return NGX_CONF_ERROR;
            }

            hcf->ha.conf.maglev_size = (uint32_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "schedule_room=", 14) == 0) {
            if (ngx_http_upstream_ha_schedule_room(cf, hcf, &value[i])
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "balance_factor=", 15) == 0) {

            if (hcf->ha.conf.hash_mode == HAB_HASH_PLAIN) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" needs \"consistent\" or "
                                   "\"maglev\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            n = ngx_atoi(value[i].data + 15, value[i].len - 15);
            if (n == NGX_ERROR || n < 100 || n > 100000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid balance factor \"%V\", "
                                   "it must be a percentage of at least 100",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            hcf->ha.conf.balance_factor = (uint32_t) n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * "schedule_room=N": the smooth round robin schedule entries (total weight
 * / common divisor of a group) that weight changes at run time may always
 * reach; the zone keeps three schedules this long (12 bytes an entry),
 * touched only when used.
 */

static char *
ngx_http_upstream_ha_schedule_room(ngx_conf_t *cf,
    ngx_http_upstream_ha_srv_conf_t *hcf, ngx_str_t *value)
{
    ngx_int_t  n;

    if (hcf->ha.conf.schedule_room != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate \"%V\"", value);
        return NGX_CONF_ERROR;
    }

    n = ngx_atoi(value->data + 14, value->len - 14);
    if (n == NGX_ERROR || n < 1 || n > HAB_SCHEDULE_ROOM_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid schedule room \"%V\": it must be a "
                           "number of entries from 1 to %ui (the default "
                           "is %ui)", value,
                           (ngx_uint_t) HAB_SCHEDULE_ROOM_MAX,
                           (ngx_uint_t) HAB_SCHEDULE_ROOM_DEFAULT);
        return NGX_CONF_ERROR;
    }

    hcf->ha.conf.schedule_room = (uint32_t) n;

    return NGX_CONF_OK;
}


/*
 * ha_latency_buckets time ...: the bounds of the upstream's latency
 * histograms, strictly increasing, whole milliseconds (nginx measures
 * response times in them)
 */

static char *
ngx_http_upstream_ha_latency_buckets(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_int_t    ms;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (hcf->ha.nbuckets) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts - 1 > HAB_BUCKETS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many latency buckets: %ui, at most %d",
                           cf->args->nelts - 1, HAB_BUCKETS_MAX);
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        ms = ngx_parse_time(&value[i], 0);

        if (ms == NGX_ERROR || ms == 0 || ms > 0xffffffff) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid latency bucket \"%V\": a time "
                               "from 1ms to 49d, as \"5ms\", \"2s\" or "
                               "\"2s500ms\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (i > 1 && (uint32_t) ms <= hcf->ha.buckets[i - 2]) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "latency bucket \"%V\" is not above "
                               "\"%V\": the bounds must increase",
                               &value[i], &value[i - 1]);
            return NGX_CONF_ERROR;
        }

        hcf->ha.buckets[i - 1] = (uint32_t) ms;
    }

    hcf->ha.nbuckets = cf->args->nelts - 1;

    return NGX_CONF_OK;
}


/* ha_api_max N: room for N servers added through the API */

static char *
ngx_http_upstream_ha_api_max(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (hcf->ha.api_max != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);

    if (n == NGX_ERROR || n > HAB_API_MAX_LIMIT) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of servers added through the "
                           "API \"%V\": from 0 to %d", &value[1],
                           HAB_API_MAX_LIMIT);
        return NGX_CONF_ERROR;
    }

    hcf->ha.api_max = (ngx_uint_t) n;

    return NGX_CONF_OK;
}


/*
 * init_upstream: an upstream with ha_api_max gets a zone with room for
 * that many servers after its n configured ones and the room of its
 * resolved ones (ha_resolve_max, set before): capacity n + resolve_max
 * + api_max.  The core keeps the two budgets apart (a resolved list
 * fills at most capacity - api_max slots, core/src/write/membership.rs),
 * but the API's servers may take any FREE slot after the configured
 * ones: each worker's own peers (ngx_http_upstream_ha_added_peer) cover
 * all of them
 */

static ngx_int_t
ngx_http_upstream_ha_init_api_max(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_uint_t n)
{
    if (hcf->ha.api_max == NGX_CONF_UNSET_UINT) {
        hcf->ha.api_max = 0;
    }

    if (hcf->ha.api_max == 0) {
        return NGX_OK;
    }

    if (hcf->ha.conf.capacity < n) {
        hcf->ha.conf.capacity = n;
    }

    hcf->ha.conf.capacity += hcf->ha.api_max;
    hcf->ha.conf.api_max = (uint32_t) hcf->ha.api_max;
    hcf->added_max = hcf->ha.conf.capacity - n;

    if (hcf->ha.conf.maglev_size != 0
        && hcf->ha.conf.maglev_size < hcf->ha.conf.capacity)
    {
        if (hcf->added_max == hcf->ha.api_max) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_balance upstream \"%V\": maglev table size "
                          "%uD is smaller than its %ui servers and "
                          "ha_api_max %ui in %s:%ui",
                          &us->host, hcf->ha.conf.maglev_size, n,
                          hcf->ha.api_max, us->file_name, us->line);
            return NGX_ERROR;
        }

        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_balance upstream \"%V\": maglev table size %uD "
                      "is smaller than its %ui servers, "
                      "ha_resolve_max %ui and ha_api_max %ui in %s:%ui",
                      &us->host, hcf->ha.conf.maglev_size, n,
                      hcf->added_max - hcf->ha.api_max, hcf->ha.api_max,
                      us->file_name, us->line);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The zone serves this configuration (ngx_upstream_ha_zone.c): with
 * "server ... resolve", nginx's upstream zone, initialised before this
 * one, holds the list as resolved so far (the old cycle's addresses after
 * a reload).  ha is the first member of the http conf.
 */

static void
ngx_http_upstream_ha_zone_ready(ngx_upstream_ha_conf_t *ha, ngx_log_t *log)
{
#if (HAB_RESOLVE)
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = (ngx_http_upstream_ha_srv_conf_t *) ha;

    if (hcf->ha.resolve) {
        (void) ngx_http_upstream_ha_sync(hcf, log);
    }
#endif
}


/*
 * A changed upstream's zone takes the old one's state: with "ha_server",
 * the old zone's resolved servers, until worker 0 answers.
 */

static void
ngx_http_upstream_ha_zone_carry(ngx_upstream_ha_conf_t *ha,
    ngx_upstream_ha_conf_t *old, ngx_log_t *log)
{
#if !(HAB_RESOLVE)
    ngx_http_upstream_ha_dns_seed((ngx_http_upstream_ha_srv_conf_t *) ha,
                                  (ngx_http_upstream_ha_srv_conf_t *) old,
                                  log);
#endif
}


/* a slot's server address, for the health timer's messages */

static ngx_int_t
ngx_http_upstream_ha_peer_addr(ngx_upstream_ha_conf_t *ha, uint32_t slot,
    ngx_pool_t *pool, ngx_addr_t *addr, ngx_log_t *log)
{
    ngx_str_t                         server;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = (ngx_http_upstream_ha_srv_conf_t *) ha;

    return ngx_http_upstream_ha_copy_peer(hcf, slot, pool, addr, &server, log);
}


static void *
ngx_http_upstream_ha_create_main_conf(ngx_conf_t *cf)
{
    ngx_time_t                        *tp;
    ngx_http_upstream_ha_main_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_ha_main_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->state.file = { 0, NULL };
     *     conf->state.parsed = NULL;
     *     conf->state.read = 0;
     */

    tp = ngx_timeofday();

    conf->wall_offset = (int64_t) tp->sec * 1000 + (int64_t) tp->msec
                        - (int64_t) ngx_current_msec;

    return conf;
}


/* the health directives only mean something with ha_balance */

static char *
ngx_http_upstream_ha_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_uint_t                         i;
    hab_health_conf                   *hc;
    ngx_http_upstream_srv_conf_t     **uscfp;
    ngx_http_upstream_main_conf_t     *umcf;
    ngx_http_upstream_ha_srv_conf_t   *hcf;

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {

        if (uscfp[i]->srv_conf == NULL) {
            continue;
        }

        hcf = ngx_http_conf_upstream_srv_conf(uscfp[i],
                                              ngx_http_upstream_ha_module);
        hc = &hcf->ha.health;

        if (hcf->ha.policy == 0
            && (hc->flags || hc->slow_start_ms || hc->base_ejection_ms
                || hc->panic_percent || hc->queue || hcf->sticky.mode
                || hcf->sticky.routes))
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "upstream \"%V\": ha_check, ha_slow_start, "
                          "ha_outlier, ha_panic, ha_queue, ha_sticky and "
                          "ha_route need \"ha_balance\" in %s:%ui",
                          &uscfp[i]->host,
                          uscfp[i]->file_name, uscfp[i]->line);
            return NGX_CONF_ERROR;
        }

        if (hcf->ha.policy == 0 && hcf->ha.nbuckets) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "upstream \"%V\": ha_latency_buckets needs "
                          "\"ha_balance\" in %s:%ui", &uscfp[i]->host,
                          uscfp[i]->file_name, uscfp[i]->line);
            return NGX_CONF_ERROR;
        }

        if (hcf->ha.policy == 0 && hcf->ha.api_max != NGX_CONF_UNSET_UINT) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "upstream \"%V\": ha_api_max needs "
                          "\"ha_balance\" in %s:%ui", &uscfp[i]->host,
                          uscfp[i]->file_name, uscfp[i]->line);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}
