
/*
 * Copyright (C) ha-balancer authors
 *
 * "ha_queue number [timeout=time]": a request that finds no server waits
 * in one FIFO shared by all workers (the core's queue in the upstream's
 * zone) instead of failing; docs/queue-design.md tells why it is built
 * this way.
 *
 * Waiting happens inside nginx's own connect, with no nginx patch: get
 * answers NGX_AGAIN with a placeholder connection (a "shared" one, whose
 * descriptor nginx never closes nor watches), which nginx treats as a
 * connect in progress.  A posted event then takes the upstream's event
 * handlers over and sets the queue's deadline on the placeholder.  The
 * placeholder's pool has a cleanup, so that whatever tears the request
 * down (the client going away, a timeout, a worker's shutdown) takes it
 * out of the queue.  A wake (ngx_upstream_ha_wake.c) posts the
 * placeholder's write event; the head then tries, and on a pick the
 * request leaves the queue and connects: the tail of nginx's
 * ngx_http_upstream_connect() is replayed here with public functions
 * only (the server is already counted in flight: max_conns stays exact).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


#define NGX_HTTP_UPSTREAM_HA_QUEUE_TIMEOUT   60000
#define NGX_HTTP_UPSTREAM_HA_QUEUE_TICK      1000


struct ngx_http_upstream_ha_waiter_s {
    ngx_queue_t                         link;       /* hcf->waiters */
    hab_ticket                          ticket;
    ngx_http_upstream_ha_peer_data_t   *hp;
    ngx_connection_t                   *fake;
    ngx_pool_cleanup_t                 *gone;
    ngx_event_t                         arm;
    ngx_msec_t                          enq;

    /* what nginx's connect set, restored when the wait ends */
    ngx_http_upstream_handler_pt        write_handler;
    ngx_http_upstream_handler_pt        read_handler;
    ngx_event_handler_pt                upstream_handler;

    hab_pick                            pick;
    unsigned                            full:1;
    unsigned                            queued:1;
    unsigned                            armed:1;
    unsigned                            granted:1;
};


static ngx_int_t ngx_http_upstream_ha_queue_enter(
    ngx_http_upstream_ha_peer_data_t *hp, ngx_peer_connection_t *pc,
    hab_pick *pick);
static ngx_int_t ngx_http_upstream_ha_queue_wait(
    ngx_http_upstream_ha_peer_data_t *hp, ngx_peer_connection_t *pc,
    hab_ticket *ticket, ngx_uint_t full);
static void ngx_http_upstream_ha_queue_arm(ngx_event_t *ev);
static void ngx_http_upstream_ha_queue_handler(ngx_http_request_t *r,
    ngx_http_upstream_t *u);
static void ngx_http_upstream_ha_queue_resume(ngx_http_request_t *r,
    ngx_http_upstream_t *u, ngx_http_upstream_ha_waiter_t *w);
static void ngx_http_upstream_ha_queue_connect(ngx_http_request_t *r,
    ngx_http_upstream_t *u, ngx_http_upstream_handler_pt write_handler,
    ngx_http_upstream_handler_pt read_handler,
    ngx_event_handler_pt upstream_handler);
static void ngx_http_upstream_ha_queue_finalize(ngx_http_request_t *r,
    ngx_http_upstream_t *u, ngx_int_t rc);
static void ngx_http_upstream_ha_queue_leave(
    ngx_http_upstream_ha_waiter_t *w, uint32_t why, ngx_log_t *log);
static void ngx_http_upstream_ha_queue_gone(void *data);
static void ngx_http_upstream_ha_queue_woken(ngx_log_t *log);
static void ngx_http_upstream_ha_queue_look(
    ngx_http_upstream_ha_srv_conf_t *hcf, hab_ticket *head);
static void ngx_http_upstream_ha_queue_tick(ngx_event_t *ev);


/* per worker: the upstreams whose queue it may wait in */
static ngx_array_t  *ngx_http_upstream_ha_queues;


/* ha_queue number [timeout=time] */

char *
ngx_http_upstream_ha_queue(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value, s;

    if (hcf->ha.health.queue) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR || n < 1 || n > HAB_QUEUE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid ha_queue number \"%V\": it must be "
                           "from 1 to %ui", &value[1],
                           (ngx_uint_t) HAB_QUEUE_MAX);
        return NGX_CONF_ERROR;
    }

    hcf->ha.health.queue = (uint32_t) n;
    hcf->queue_timeout = NGX_HTTP_UPSTREAM_HA_QUEUE_TIMEOUT;

    if (cf->args->nelts == 3) {

        if (ngx_strncmp(value[2].data, "timeout=", 8) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        s.len = value[2].len - 8;
        s.data = value[2].data + 8;

        n = ngx_parse_time(&s, 0);
        if (n == NGX_ERROR || n < 1 || n > 0x7fffffff) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid ha_queue timeout \"%V\": it must "
                               "be a time from 1ms to 24d", &value[2]);
            return NGX_CONF_ERROR;
        }

        hcf->queue_timeout = (ngx_msec_t) n;
    }

    return NGX_CONF_OK;
}


/*
 * get's choice: a pick (NGX_OK), no server and no queue (NGX_BUSY, 502 as
 * before), a wait (NGX_AGAIN, pc->connection is the placeholder) or
 * NGX_ERROR.  A request that is not a retry picks only while nobody
 * waits: newcomers never overtake.
 */

ngx_int_t
ngx_http_upstream_ha_queue_pick(ngx_http_upstream_ha_peer_data_t *hp,
    ngx_peer_connection_t *pc, hab_pick *pick)
{
    ngx_uint_t                        retry;
    hab_result                        rc;
    ngx_http_upstream_ha_waiter_t    *w;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = hp->conf;
    w = hp->waiter;

    /* the connect after a wait: the pick the head got */

    if (w != NULL && w->granted) {
        w->granted = 0;
        *pick = w->pick;
        return NGX_OK;
    }

    retry = hp->tried;
    hp->tried = 1;

    if (hcf->ha.health.queue == 0
        || hcf->ha.slot == HAB_NO_SLOT
        || retry
        || hab_queue_waiting(hcf->ha.zone) == 0)
    {
        rc = ngx_http_upstream_ha_sticky_pick(hp, pc, pick);

        if (rc == HAB_OK) {
            return NGX_OK;
        }

        if (rc != HAB_BUSY) {
            ngx_log_error(NGX_LOG_ALERT, pc->log, 0,
                          "ha_balance get: %s", hab_result_str(rc));
            return NGX_ERROR;
        }

        if (hcf->ha.health.queue == 0 || hcf->ha.slot == HAB_NO_SLOT) {
            return NGX_BUSY;
        }
    }

    return ngx_http_upstream_ha_queue_enter(hp, pc, pick);
}


static ngx_int_t
ngx_http_upstream_ha_queue_enter(ngx_http_upstream_ha_peer_data_t *hp,
    ngx_peer_connection_t *pc, hab_pick *pick)
{
    hab_wake                          wake;
    hab_ticket                        ticket;
    hab_result                        rc;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = hp->conf;

    rc = hab_queue_enter(hcf->ha.zone, hcf->ha.slot, ngx_current_msec, &ticket);

    if (rc == HAB_QUEUE_FULL) {
        return ngx_http_upstream_ha_queue_wait(hp, pc, NULL, 1);
    }

    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_ALERT, pc->log, 0,
                      "ha_queue enter: %s", hab_result_str(rc));
        return NGX_BUSY;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "ha queue enter, ticket: %uL", ticket.ticket);

    if (ticket.flags & HAB_TICKET_HEAD) {

        /* the head tries at once: a server may have freed meanwhile */

        rc = hab_queue_try(hcf->ha.zone, hp->attempt, &ticket, hp->key.data,
                           hp->key.len, ngx_current_msec, pick, &wake);

        if (rc == HAB_OK) {

            /* out of the queue: the next head may go too */

            ngx_upstream_ha_wake(&wake, pc->log);
            return NGX_OK;
        }

        if (rc != HAB_BUSY) {
            ngx_log_error(NGX_LOG_ALERT, pc->log, 0,
                          "ha_queue try: %s", hab_result_str(rc));

            if (hab_queue_leave(hcf->ha.zone, &ticket, HAB_QUEUE_ABANDONED,
                                &wake)
                == HAB_OK)
            {
                ngx_upstream_ha_wake(&wake, pc->log);
            }

            return NGX_ERROR;
        }
    }

    return ngx_http_upstream_ha_queue_wait(hp, pc, &ticket, 0);
}


/*
 * The placeholder: its pool's cleanup leaves the queue whenever nginx
 * drops the request; a full queue takes the same road so that its 502
 * is logged once, with its reason (not as "no live upstreams").
 */

static ngx_int_t
ngx_http_upstream_ha_queue_wait(ngx_http_upstream_ha_peer_data_t *hp,
    ngx_peer_connection_t *pc, hab_ticket *ticket, ngx_uint_t full)
{
    ngx_fd_t                          fd;
    hab_wake                          wake;
    ngx_connection_t                 *fake;
    ngx_http_upstream_ha_waiter_t    *w;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = hp->conf;

    w = ngx_pcalloc(hp->request->pool, sizeof(ngx_http_upstream_ha_waiter_t));
    if (w == NULL) {
        goto failed;
    }

    fd = ngx_upstream_ha_wake_placeholder();
    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ALERT, pc->log, 0,
                      "ha_queue has no wake channels");
        goto failed;
    }

    fake = ngx_get_connection(fd, pc->log);
    if (fake == NULL) {
        goto failed;
    }

    fake->shared = 1;

    fake->pool = ngx_create_pool(128, pc->log);
    if (fake->pool == NULL) {
        ngx_close_connection(fake);
        goto failed;
    }

    w->gone = ngx_pool_cleanup_add(fake->pool, 0);
    if (w->gone == NULL) {
        ngx_destroy_pool(fake->pool);
        ngx_close_connection(fake);
        goto failed;
    }

    w->gone->handler = ngx_http_upstream_ha_queue_gone;
    w->gone->data = w;

    w->hp = hp;
    w->fake = fake;
    w->enq = ngx_current_msec;
    w->full = full;

    if (ticket) {
        w->ticket = *ticket;
        w->queued = 1;

        /* tickets grow: the worker's list stays in ticket order */

        ngx_queue_insert_tail(&hcf->waiters, &w->link);

        if (hcf->nwaiters++ == 0 && !hcf->queue_ev.timer_set) {
            ngx_add_timer(&hcf->queue_ev, NGX_HTTP_UPSTREAM_HA_QUEUE_TICK);
        }
    }

    w->arm.handler = ngx_http_upstream_ha_queue_arm;
    w->arm.data = w;
    w->arm.log = pc->log;

    ngx_post_event(&w->arm, &ngx_posted_events);

    hp->waiter = w;

    pc->connection = fake;
    pc->sockaddr = NULL;
    pc->name = hp->peers->name;

    return NGX_AGAIN;

failed:

    if (ticket
        && hab_queue_leave(hcf->ha.zone, ticket, HAB_QUEUE_ABANDONED, &wake)
           == HAB_OK)
    {
        ngx_upstream_ha_wake(&wake, pc->log);
    }

    return NGX_ERROR;
}


/*
 * After nginx's connect returned: the placeholder's events are the
 * queue's, and its connect timer becomes the queue's deadline (deleted
 * first: ngx_add_timer() ignores changes under NGX_TIMER_LAZY_DELAY).
 */

static void
ngx_http_upstream_ha_queue_arm(ngx_event_t *ev)
{
    ngx_http_upstream_ha_waiter_t *w = ev->data;

    ngx_connection_t                  *fake;
    ngx_http_upstream_t               *u;
    ngx_http_upstream_ha_peer_data_t  *hp;

    hp = w->hp;
    u = hp->request->upstream;
    fake = w->fake;

    if (u == NULL || u->peer.connection != fake) {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "ha_queue: the waiting request has another "
                      "connection");
        return;
    }

    w->write_handler = u->write_event_handler;
    w->read_handler = u->read_event_handler;
    w->upstream_handler = fake->write->handler;
    w->armed = 1;

    u->write_event_handler = ngx_http_upstream_ha_queue_handler;
    u->read_event_handler = ngx_http_upstream_ha_queue_handler;

    if (fake->write->timer_set) {
        ngx_del_timer(fake->write);
    }

    if (w->full) {
        ngx_post_event(fake->write, &ngx_posted_events);
        return;
    }

    ngx_add_timer(fake->write, hp->conf->queue_timeout);
}


/*
 * The placeholder's events, through nginx's upstream handler (the request's
 * log context, posted requests run after): the deadline, a full queue, or
 * a wake.
 */

static void
ngx_http_upstream_ha_queue_handler(ngx_http_request_t *r,
    ngx_http_upstream_t *u)
{
    hab_wake                           wake;
    hab_result                         rc;
    ngx_connection_t                  *fake;
    ngx_pool_cleanup_t                *cln;
    ngx_http_upstream_ha_waiter_t     *w;
    ngx_http_upstream_ha_peer_data_t  *hp;
    ngx_http_upstream_ha_srv_conf_t   *hcf;

    /*
     * the waiter, from the placeholder's pool (u->peer.data is not ours
     * when keepalive or another balancer wraps this one)
     */

    fake = u->peer.connection;
    w = NULL;

    for (cln = (fake && fake->pool) ? fake->pool->cleanup : NULL;
         cln;
         cln = cln->next)
    {
        if (cln->handler == ngx_http_upstream_ha_queue_gone) {
            w = cln->data;
            break;
        }
    }

    if (w == NULL || fake != w->fake) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ha_queue: an event for no waiter");
        return;
    }

    hp = w->hp;
    hcf = hp->conf;

    if (w->full) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "upstream \"%V\": ha_queue is full (%uD waiting)",
                      hcf->ha.name, (uint32_t) hcf->ha.health.queue);

        u->state->status = NGX_HTTP_BAD_GATEWAY;
        ngx_http_upstream_ha_queue_finalize(r, u, NGX_HTTP_BAD_GATEWAY);
        return;
    }

    if (fake->write->timedout) {
        fake->write->timedout = 0;

        ngx_http_upstream_ha_queue_leave(w, HAB_QUEUE_TIMEOUT,
                                         r->connection->log);

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "upstream \"%V\": no server within the ha_queue "
                      "timeout of %M ms", hcf->ha.name, hcf->queue_timeout);

        u->state->status = NGX_HTTP_BAD_GATEWAY;
        ngx_http_upstream_ha_queue_finalize(r, u, NGX_HTTP_BAD_GATEWAY);
        return;
    }

    if (!w->queued) {
        return;
    }

    rc = hab_queue_try(hcf->ha.zone, hp->attempt, &w->ticket, hp->key.data,
                       hp->key.len, ngx_current_msec, &w->pick, &wake);

    if (rc == HAB_OK) {

        /* out of the queue: the next head may go too */

        ngx_upstream_ha_wake(&wake, r->connection->log);
    }

    if (rc == HAB_BUSY) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "ha queue wait, ticket: %uL", w->ticket.ticket);
        return;
    }

    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ha_queue try: %s", hab_result_str(rc));

        ngx_http_upstream_ha_queue_leave(w, HAB_QUEUE_ABANDONED,
                                         r->connection->log);
        ngx_http_upstream_ha_queue_finalize(r, u,
                                            NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* out of the queue, counted in flight at w->pick.peer */

    w->queued = 0;
    ngx_queue_remove(&w->link);
    hcf->nwaiters--;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ha queue served, ticket: %uL, waited: %M ms",
                   w->ticket.ticket, ngx_current_msec - w->enq);

    ngx_http_upstream_ha_queue_resume(r, u, w);
}


static void
ngx_http_upstream_ha_queue_resume(ngx_http_request_t *r,
    ngx_http_upstream_t *u, ngx_http_upstream_ha_waiter_t *w)
{
    ngx_msec_t                     wait;
    ngx_connection_t              *fake;
    ngx_event_handler_pt           upstream_handler;
    ngx_http_upstream_handler_pt   write_handler, read_handler;

    fake = w->fake;
    wait = ngx_current_msec - w->enq;

    write_handler = w->write_handler;
    read_handler = w->read_handler;
    upstream_handler = w->upstream_handler;

    u->write_event_handler = write_handler;
    u->read_event_handler = read_handler;

    /* the placeholder goes: nothing to leave any more */

    w->gone->handler = NULL;
    u->peer.connection = NULL;

    ngx_destroy_pool(fake->pool);
    fake->pool = NULL;
    ngx_close_connection(fake);

    /*
     * the queued try's state entry is the connect's: its times start now,
     * and the wait does not count against proxy_next_upstream_timeout
     */

    u->start_time = ngx_current_msec;
    u->peer.start_time += wait;

    w->granted = 1;

    ngx_http_upstream_ha_queue_connect(r, u, write_handler, read_handler,
                                       upstream_handler);
}


/*
 * What ngx_http_upstream_connect() does after it asked the balancer, from
 * ngx_event_connect_peer() on; a connect refused at once goes through what
 * ngx_http_upstream_next(NGX_HTTP_UPSTREAM_FT_ERROR) does (without its
 * proxy_cache_use_stale, a static function: such a request gets the 502).
 */

static void
ngx_http_upstream_ha_queue_connect(ngx_http_request_t *r,
    ngx_http_upstream_t *u, ngx_http_upstream_handler_pt write_handler,
    ngx_http_upstream_handler_pt read_handler,
    ngx_event_handler_pt upstream_handler)
{
    ngx_int_t                  rc;
    ngx_msec_t                 timeout;
    ngx_connection_t          *c;
    ngx_http_core_loc_conf_t  *clcf;

    for ( ;; ) {

        r->connection->log->action = "connecting to upstream";

        rc = ngx_event_connect_peer(&u->peer);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "ha queue upstream connect: %i", rc);

        if (rc == NGX_ERROR) {
            ngx_http_upstream_ha_queue_finalize(r, u,
                                               NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        u->state->peer = u->peer.name;

#if (HAB_RESOLVE)
        if (u->upstream && u->upstream->shm_zone
            && (u->upstream->flags & NGX_HTTP_UPSTREAM_MODIFY))
        {
            u->state->peer = ngx_palloc(r->pool,
                                        sizeof(ngx_str_t) + u->peer.name->len);
            if (u->state->peer == NULL) {
                ngx_http_upstream_ha_queue_finalize(r, u,
                                               NGX_HTTP_INTERNAL_SERVER_ERROR);
                return;
            }

            u->state->peer->len = u->peer.name->len;
            u->state->peer->data = (u_char *) (u->state->peer + 1);
            ngx_memcpy(u->state->peer->data, u->peer.name->data,
                       u->peer.name->len);

            u->peer.name = u->state->peer;
        }
#endif

        if (rc == NGX_BUSY) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "no live upstreams");
            u->state->status = NGX_HTTP_BAD_GATEWAY;
            ngx_http_upstream_ha_queue_finalize(r, u, NGX_HTTP_BAD_GATEWAY);
            return;
        }

        if (rc != NGX_DECLINED) {
            break;
        }

        /* ngx_http_upstream_next(r, u, NGX_HTTP_UPSTREAM_FT_ERROR) */

        if (u->peer.sockaddr) {
            u->peer.free(&u->peer, u->peer.data, NGX_PEER_FAILED);
            u->peer.sockaddr = NULL;
        }

        if (r->connection->error) {
            ngx_http_upstream_ha_queue_finalize(r, u,
                                              NGX_HTTP_CLIENT_CLOSED_REQUEST);
            return;
        }

        u->state->status = NGX_HTTP_BAD_GATEWAY;

        timeout = u->conf->next_upstream_timeout;

        if (u->peer.tries == 0
            || !(u->conf->next_upstream & NGX_HTTP_UPSTREAM_FT_ERROR)
            || (timeout && ngx_current_msec - u->peer.start_time >= timeout))
        {
            ngx_http_upstream_ha_queue_finalize(r, u, NGX_HTTP_BAD_GATEWAY);
            return;
        }

        /* a new try: its state entry, as ngx_http_upstream_connect() */

        if (u->state->response_time == (ngx_msec_t) -1) {
            u->state->response_time = ngx_current_msec - u->start_time;
        }

        u->state = ngx_array_push(r->upstream_states);
        if (u->state == NULL) {
            ngx_http_upstream_ha_queue_finalize(r, u,
                                               NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_memzero(u->state, sizeof(ngx_http_upstream_state_t));

        u->start_time = ngx_current_msec;

        u->state->response_time = (ngx_msec_t) -1;
        u->state->connect_time = (ngx_msec_t) -1;
        u->state->header_time = (ngx_msec_t) -1;
    }

    /* rc == NGX_OK || rc == NGX_AGAIN || rc == NGX_DONE */

    c = u->peer.connection;

    c->requests++;

    c->data = r;

    c->write->handler = upstream_handler;
    c->read->handler = upstream_handler;

    u->write_event_handler = write_handler;
    u->read_event_handler = read_handler;

    c->sendfile &= r->connection->sendfile;
    u->output.sendfile = c->sendfile;

    if (r->connection->tcp_nopush == NGX_TCP_NOPUSH_DISABLED) {
        c->tcp_nopush = NGX_TCP_NOPUSH_DISABLED;
    }

    if (c->pool == NULL) {
        c->pool = ngx_create_pool(128, r->connection->log);
        if (c->pool == NULL) {
            ngx_http_upstream_ha_queue_finalize(r, u,
                                               NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    c->log = r->connection->log;
    c->pool->log = c->log;
    c->read->log = c->log;
    c->write->log = c->log;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    u->writer.out = NULL;
    u->writer.last = &u->writer.out;
    u->writer.connection = c;
    u->writer.limit = clcf->sendfile_max_chunk;

    /*
     * the connect that queued reinitialised the request for a retry and
     * set up the request body; nothing was sent since
     */

    u->request_sent = 0;
    u->request_body_sent = 0;
    u->request_body_blocked = 0;

    if (rc == NGX_AGAIN) {

        /* a connect in progress, or the request waits again */

        ngx_add_timer(c->write, u->conf->connect_timeout);
        return;
    }

    /* send, or start TLS first: ngx_http_upstream_send_request_handler() */

    u->write_event_handler(r, u);
}


/*
 * What ngx_http_upstream_finalize_request(r, u, rc) does, a static
 * function: the upstream's own cleanup (it finalizes the upstream with
 * NGX_DONE, closes the placeholder, frees the peer), the reference it
 * drops taken first, then the response.
 */

static void
ngx_http_upstream_ha_queue_finalize(ngx_http_request_t *r,
    ngx_http_upstream_t *u, ngx_int_t rc)
{
    ngx_http_cleanup_pt  handler;

    if (u->cleanup == NULL || *u->cleanup == NULL) {
        /* the request was already finalized (as nginx answers it) */
        ngx_http_finalize_request(r, NGX_DONE);
        return;
    }

    handler = *u->cleanup;

    r->main->count++;
    handler(r);

    ngx_http_finalize_request(r, rc);
}


static void
ngx_http_upstream_ha_queue_leave(ngx_http_upstream_ha_waiter_t *w,
    uint32_t why, ngx_log_t *log)
{
    hab_wake                          wake;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    if (!w->queued) {
        return;
    }

    hcf = w->hp->conf;

    w->queued = 0;
    ngx_queue_remove(&w->link);
    hcf->nwaiters--;

    if (hab_queue_leave(hcf->ha.zone, &w->ticket, why, &wake) == HAB_OK) {
        ngx_upstream_ha_wake(&wake, log);
    }
}


/* the placeholder's pool is destroyed: nginx dropped the request */

static void
ngx_http_upstream_ha_queue_gone(void *data)
{
    ngx_http_upstream_ha_waiter_t *w = data;

    if (w->arm.posted) {
        ngx_delete_posted_event(&w->arm);
    }

    ngx_http_upstream_ha_queue_leave(w, HAB_QUEUE_ABANDONED,
                                     w->fake->log);

    if (w->hp->waiter == w) {
        w->hp->waiter = NULL;
    }
}


/*
 * init_process, for each upstream with a queue that has a ledger slot:
 * the worker's channel (once), recorded in the zone; the worker's list of
 * waiters and its watchdog.  Then the head is kicked: claiming the ledger
 * slot returned dead workers' waiters, the head among them maybe.
 */

void
ngx_http_upstream_ha_queue_start(ngx_cycle_t *cycle,
    ngx_http_upstream_ha_srv_conf_t *hcf)
{
    uint32_t                           channel;
    ngx_http_upstream_ha_srv_conf_t  **qp;

    if (hcf->ha.health.queue == 0 || hcf->ha.slot == HAB_NO_SLOT) {
        return;
    }

    if (ngx_http_upstream_ha_queues == NULL) {
        ngx_http_upstream_ha_queues = ngx_array_create(cycle->pool, 4,
                                    sizeof(ngx_http_upstream_ha_srv_conf_t *));
        if (ngx_http_upstream_ha_queues == NULL) {
            return;
        }
    }

    qp = ngx_array_push(ngx_http_upstream_ha_queues);
    if (qp == NULL) {
        return;
    }

    *qp = hcf;

    channel = ngx_upstream_ha_wake_init_worker(cycle,
                                             ngx_http_upstream_ha_queue_woken);

    (void) hab_queue_set_wake(hcf->ha.zone, hcf->ha.slot, channel);

    ngx_queue_init(&hcf->waiters);
    hcf->nwaiters = 0;

    hcf->queue_ev.handler = ngx_http_upstream_ha_queue_tick;
    hcf->queue_ev.data = hcf;
    hcf->queue_ev.log = cycle->log;
    hcf->queue_ev.cancelable = 1;

    ngx_http_upstream_ha_queue_kick(hcf, cycle->log);
}


/* wakes the head whatever happened (a reconciliation, health, the API) */

void
ngx_http_upstream_ha_queue_kick(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_log_t *log)
{
    hab_wake  wake;

    if (hcf->ha.health.queue == 0 || hcf->ha.zone == NULL) {
        return;
    }

    if (hab_queue_kick(hcf->ha.zone, &wake) == HAB_OK) {
        ngx_upstream_ha_wake(&wake, log);
    }
}


/* this worker was woken: the head of any queue may be one of its waiters */

static void
ngx_http_upstream_ha_queue_woken(ngx_log_t *log)
{
    ngx_uint_t                         i;
    hab_ticket                         head;
    ngx_http_upstream_ha_srv_conf_t  **qp;

    if (ngx_http_upstream_ha_queues == NULL) {
        return;
    }

    qp = ngx_http_upstream_ha_queues->elts;

    for (i = 0; i < ngx_http_upstream_ha_queues->nelts; i++) {
        ngx_http_upstream_ha_queue_look(qp[i], &head);
    }
}


/*
 * Allows this worker's next wake, then posts its waiter that heads the
 * queue, if one does; *head: the head (slot HAB_NO_SLOT: nobody waits).
 */

static void
ngx_http_upstream_ha_queue_look(ngx_http_upstream_ha_srv_conf_t *hcf,
    hab_ticket *head)
{
    ngx_queue_t                    *q;
    ngx_http_upstream_ha_waiter_t  *w;

    if (hab_queue_woken(hcf->ha.zone, hcf->ha.slot, head) != HAB_OK) {
        head->slot = HAB_NO_SLOT;
        return;
    }


    if (head->slot != hcf->ha.slot) {
        return;
    }

    /* the head is this worker's oldest waiter, unless it is leaving */

    for (q = ngx_queue_head(&hcf->waiters);
         q != ngx_queue_sentinel(&hcf->waiters);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_http_upstream_ha_waiter_t, link);

        if (w->ticket.ticket == head->ticket) {
            if (!w->fake->write->posted) {
                ngx_post_event(w->fake->write, &ngx_posted_events);
            }

            return;
        }

        if (w->ticket.ticket > head->ticket) {
            return;
        }
    }
}


/*
 * The watchdog, while this worker has waiters: no event announces a
 * server whose fail_timeout ends, and nginx replaces no dead worker of an
 * old cycle, whose waiters (the head maybe) would stay.  Once a second:
 * this worker looks at the head; a head of another worker that did not
 * move since the last tick has its owner checked, and dead owners are
 * reconciled.  A worker without a wake channel looks more often.
 */

static void
ngx_http_upstream_ha_queue_tick(ngx_event_t *ev)
{
    ngx_http_upstream_ha_srv_conf_t *hcf = ev->data;

    uint32_t    reaped;
    hab_ticket  head;

    if (hcf->nwaiters == 0) {
        return;
    }

    ngx_http_upstream_ha_queue_look(hcf, &head);

    if (head.slot != HAB_NO_SLOT && head.slot != hcf->ha.slot
        && head.ticket == hcf->queue_head)
    {
        if (++hcf->queue_stuck >= 2) {
            hcf->queue_stuck = 0;

            if (hab_zone_reap(hcf->ha.zone, (uint64_t) ngx_pid,
                              ngx_upstream_ha_alive, NULL, &reaped)
                == HAB_OK
                && reaped)
            {
                ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                              "upstream \"%V\": %uD dead workers' waiters "
                              "returned", hcf->ha.name, reaped);

                ngx_http_upstream_ha_queue_kick(hcf, ev->log);
            }
        }

    } else {
        hcf->queue_stuck = 0;
    }

    hcf->queue_head = head.ticket;

    ngx_add_timer(ev, ngx_upstream_ha_wake_channel() == HAB_NO_CHANNEL
                      ? NGX_UPSTREAM_HA_WAKE_POLL
                      : NGX_HTTP_UPSTREAM_HA_QUEUE_TICK);
}
