
/*
 * Copyright (C) ha-balancer authors
 *
 * One active check of one server, made with nginx's own connect, read and
 * timer machinery: connect, optionally TLS, send a request, read the
 * status line and the first bytes of the body (what they must be:
 * ngx_http_upstream_ha_answer.c), then hand the verdict to the core
 * (hab_check_done) and log the transition it reports.  Which server is
 * checked, and when, the health timer asks the core
 * (ngx_http_upstream_ha_check.c).
 *
 * HTTP checks keep their connection for the next check of the same server
 * (keepalive_time=, 60s by default) when the answer passed, was read to
 * its end and the server did not ask to close.  An idle kept connection
 * belongs to the worker that made the check; it is watched (any byte or
 * the server's close ends it), and closed when it grows older than
 * keepalive_time, when its slot changes hands, when this worker has not
 * used it for two intervals (the server set down, or checked elsewhere),
 * on exit, and to make room under the worker's cap of check connections.
 * A request that finds a kept connection closed by the server in between
 * (nothing read back: a reset, a close, a failed send) is sent again once
 * on a new connection instead of failing the check.
 *
 * gRPC checks (type=grpc) send what hab_grpc_request() makes (HTTP/2 from
 * the client preface on, one grpc.health.v1.Health/Check call) and hand
 * all that came back to hab_grpc_answer_read() each time more comes: the
 * core walks the frames and decodes the header blocks.  This file only
 * acknowledges the server's SETTINGS; each gRPC check opens its own
 * connection (HPACK's state would have to live as long as a kept one).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_upstream_ha_module.h"


/* bytes of response a check reads: status line, headers, start of body */
#define NGX_HTTP_UPSTREAM_HA_CHECK_BUF  16384

/* ... in a first buffer of this size, in the check's pool (no malloc) */
#define NGX_HTTP_UPSTREAM_HA_CHECK_BUF0  1536


/* ngx_http_upstream_ha_probe_t.phase */
#define NGX_HTTP_UPSTREAM_HA_CONNECT    0
#define NGX_HTTP_UPSTREAM_HA_HANDSHAKE  1
#define NGX_HTTP_UPSTREAM_HA_SEND       2
#define NGX_HTTP_UPSTREAM_HA_READ       3


/* an HTTP check's connection, kept between checks while idle */

typedef struct {
    ngx_rbtree_node_t                   node;       /* key: the slot */
    ngx_queue_t                         queue;      /* in the idle ones */
    ngx_connection_t                   *connection;
    ngx_pool_t                         *pool;       /* the connection's */
    ngx_http_upstream_ha_srv_conf_t    *hcf;
    ngx_log_t                           log;
    ngx_str_t                           name;
    uint32_t                            peer;       /* slot */
    uint32_t                            epoch;      /* the slot's */
    ngx_msec_t                          opened;
    ngx_msec_t                          used;       /* last check ended */
    unsigned                            kept:1;     /* in hcf->kept */
    unsigned                            idle:1;     /* in the idle queue */
} ngx_http_upstream_ha_keep_t;


typedef struct {
    ngx_peer_connection_t               pc;
    ngx_http_upstream_ha_keep_t        *keep;       /* the connection's */
    ngx_queue_t                         queue;      /* in hcf->probing */
    ngx_http_upstream_ha_srv_conf_t    *hcf;
    ngx_pool_t                         *pool;
    ngx_event_t                         timer;
    ngx_log_t                           log;
    ngx_buf_t                          *out;
    ngx_buf_t                          *in;
    uint32_t                            peer;       /* slot */
    uint32_t                            epoch;      /* the slot's */
    ngx_msec_t                          deadline;
    ngx_str_t                           name;
    ngx_str_t                           server;
    ngx_uint_t                          phase;
    ngx_uint_t                          status;
    ngx_msec_t                          start;
    ngx_err_t                           err;        /* connect()'s */
    unsigned                            reused:1;   /* a kept connection */
    unsigned                            decided:1;  /* passed; body drains */
    unsigned                            keepable:1; /* read to its end */
    unsigned                            acked:1;    /* gRPC: SETTINGS */
    uint32_t                            reason;     /* set with why, or 0 */
    u_char                              why[64];
} ngx_http_upstream_ha_probe_t;


typedef struct {
    ngx_str_t                           why;
    uint32_t                            reason;
} ngx_http_upstream_ha_reason_t;


static void ngx_http_upstream_ha_probe_connect(
    ngx_http_upstream_ha_probe_t *p);
static void ngx_http_upstream_ha_probe_attach(ngx_http_upstream_ha_probe_t *p);
static void ngx_http_upstream_ha_probe_connected(
    ngx_http_upstream_ha_probe_t *p);
#if (NGX_HTTP_SSL)
static void ngx_http_upstream_ha_probe_handshaked(ngx_connection_t *c);
#endif
static void ngx_http_upstream_ha_probe_write(ngx_event_t *wev);
static void ngx_http_upstream_ha_probe_read(ngx_event_t *rev);
static void ngx_http_upstream_ha_probe_send(ngx_http_upstream_ha_probe_t *p);
static ngx_int_t ngx_http_upstream_ha_probe_recv(
    ngx_http_upstream_ha_probe_t *p);
static ngx_int_t ngx_http_upstream_ha_probe_verdict(
    ngx_http_upstream_ha_probe_t *p, ngx_uint_t eof);
static void ngx_http_upstream_ha_probe_grpc(ngx_http_upstream_ha_probe_t *p,
    ngx_str_t *authority);
static ngx_int_t ngx_http_upstream_ha_probe_grpc_verdict(
    ngx_http_upstream_ha_probe_t *p, ngx_uint_t eof);
static ngx_int_t ngx_http_upstream_ha_probe_drained(ngx_uint_t status,
    ngx_uint_t head, off_t length, u_char *body, u_char *end, ngx_uint_t eof);
static void ngx_http_upstream_ha_probe_timeout(ngx_event_t *ev);
static ngx_int_t ngx_http_upstream_ha_test_connect(
    ngx_http_upstream_ha_probe_t *p, ngx_connection_t *c);
static uint32_t ngx_http_upstream_ha_probe_reason(
    ngx_http_upstream_ha_probe_t *p);
static void ngx_http_upstream_ha_probe_error(ngx_http_upstream_ha_probe_t *p,
    const char *why);
static void ngx_http_upstream_ha_probe_fail(ngx_http_upstream_ha_probe_t *p,
    const char *why);
static void ngx_http_upstream_ha_probe_finish(ngx_http_upstream_ha_probe_t *p,
    ngx_int_t passed);
static u_char *ngx_http_upstream_ha_probe_log_error(ngx_log_t *log,
    u_char *buf, size_t len);
static ngx_http_upstream_ha_keep_t *ngx_http_upstream_ha_keep_take(
    ngx_http_upstream_ha_srv_conf_t *hcf, uint32_t peer, uint32_t epoch);
static void ngx_http_upstream_ha_keep_park(ngx_http_upstream_ha_keep_t *k);
static void ngx_http_upstream_ha_keep_idle_handler(ngx_event_t *ev);
static void ngx_http_upstream_ha_keep_dummy_handler(ngx_event_t *ev);
static void ngx_http_upstream_ha_keep_close(ngx_http_upstream_ha_keep_t *k);
static u_char *ngx_http_upstream_ha_keep_log_error(ngx_log_t *log,
    u_char *buf, size_t len);


/*
 * The failed checks' texts (logged) and reasons (kept for the API), in
 * one place; "status N" is HAB_CHECK_REASON_STATUS
 */

static ngx_http_upstream_ha_reason_t  ngx_http_upstream_ha_reasons[] = {
    { ngx_string("connect() failed"), HAB_CHECK_REASON_CONNECT_ERROR },
    { ngx_string("timed out"), HAB_CHECK_REASON_TIMEOUT },
    { ngx_string("send() failed"), HAB_CHECK_REASON_SEND_FAILED },
    { ngx_string("recv() failed"), HAB_CHECK_REASON_RECV_FAILED },
    { ngx_string("no response"), HAB_CHECK_REASON_NO_RESPONSE },
    { ngx_string("incomplete header"), HAB_CHECK_REASON_INCOMPLETE_HEADER },
    { ngx_string("invalid status line"),
      HAB_CHECK_REASON_INVALID_STATUS_LINE },
    { ngx_string("invalid header"), HAB_CHECK_REASON_INVALID_HEADER },
    { ngx_string("invalid Content-Length"),
      HAB_CHECK_REASON_INVALID_CONTENT_LENGTH },
    { ngx_string("invalid chunked body"),
      HAB_CHECK_REASON_INVALID_CHUNKED_BODY },
    { ngx_string("incomplete body"), HAB_CHECK_REASON_INCOMPLETE_BODY },
    { ngx_string("body does not match"), HAB_CHECK_REASON_BODY_MISMATCH },
    { ngx_string("TLS setup failed"), HAB_CHECK_REASON_TLS },
    { ngx_string("TLS SNI failed"), HAB_CHECK_REASON_TLS },
    { ngx_string("TLS handshake failed"), HAB_CHECK_REASON_TLS },
    { ngx_null_string, 0 }
};


/* checks in flight in this worker, all upstreams */
ngx_uint_t  ngx_http_upstream_ha_probes;

/* idle kept connections of this worker, all upstreams, the newest last */
static ngx_queue_t  ngx_http_upstream_ha_idle;
static ngx_uint_t   ngx_http_upstream_ha_nidle;


/*
 * A worker's checks use at most a quarter of its connections at once, in
 * flight and kept idle together: most are left to clients
 */

ngx_uint_t
ngx_http_upstream_ha_probe_limit(void)
{
    return ngx_max(ngx_cycle->connection_n / 4, 8);
}


/* how many more checks this worker may start now, all upstreams */

ngx_uint_t
ngx_http_upstream_ha_probe_room(void)
{
    ngx_uint_t  limit;

    limit = ngx_http_upstream_ha_probe_limit();

    return (ngx_http_upstream_ha_probes < limit)
           ? limit - ngx_http_upstream_ha_probes : 0;
}


/* init_process: no checks in flight, no kept connections */

void
ngx_http_upstream_ha_probe_init(ngx_upstream_ha_conf_t *ha)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = (ngx_http_upstream_ha_srv_conf_t *) ha;

    if (ngx_http_upstream_ha_idle.next == NULL) {
        ngx_queue_init(&ngx_http_upstream_ha_idle);
    }

    hcf->probes = 0;
    ngx_queue_init(&hcf->probing);
    ngx_rbtree_init(&hcf->kept, &hcf->kept_sentinel, ngx_rbtree_insert_value);
}


void
ngx_http_upstream_ha_probe_start(ngx_upstream_ha_conf_t *ha, uint32_t peer,
    ngx_log_t *log)
{
    ngx_addr_t                        addr;
    ngx_pool_t                       *pool;
    hab_slot_info                     slot;
    struct sockaddr                  *sa;
    ngx_http_upstream_ha_probe_t     *p;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = (ngx_http_upstream_ha_srv_conf_t *) ha;

    /* the slot's epoch first: a verdict on its next server is dropped */

    if (hab_zone_slot(hcf->ha.zone, peer, &slot) != HAB_OK) {
        return;
    }

    pool = ngx_create_pool(4096, log);
    if (pool == NULL) {
        return;
    }

    p = ngx_pcalloc(pool, sizeof(ngx_http_upstream_ha_probe_t));

    if (p == NULL
        || ngx_http_upstream_ha_copy_peer(hcf, peer, pool, &addr, &p->server,
                                          log)
           != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return;
    }

    sa = addr.sockaddr;

    p->hcf = hcf;
    p->pool = pool;
    p->peer = peer;
    p->epoch = slot.epoch;
    p->start = ngx_current_msec;
    p->deadline = ngx_current_msec + hcf->ha.health.timeout_ms;

    p->name = addr.name;

    /*
     * the connection's own errors (refused, reset) are verdicts here, not
     * news: this copy of the log keeps them out (nginx logs them at
     * "error"); the failed check is logged at info, the transition it
     * causes at warn
     */

    p->log = *ngx_cycle->log;
    p->log.handler = ngx_http_upstream_ha_probe_log_error;
    p->log.data = p;
    p->log.action = "checking";
    p->log.next = NULL;

    if (p->log.log_level > NGX_LOG_CRIT) {
        p->log.log_level = NGX_LOG_CRIT;
    }

    if (hcf->check.port) {
        ngx_inet_set_port(sa, hcf->check.port);
    }

    p->pc.sockaddr = sa;
    p->pc.socklen = addr.socklen;
    p->pc.name = &p->name;
    p->pc.get = ngx_event_get_peer;
    p->pc.log = &p->log;
    p->pc.log_error = NGX_ERROR_INFO;

    p->timer.handler = ngx_http_upstream_ha_probe_timeout;
    p->timer.data = p;
    p->timer.log = &p->log;
    p->timer.cancelable = 1;

    hcf->probes++;
    ngx_http_upstream_ha_probes++;
    ngx_queue_insert_tail(&hcf->probing, &p->queue);

    ngx_add_timer(&p->timer, hcf->ha.health.timeout_ms);

    if (hcf->check.type == NGX_HTTP_UPSTREAM_HA_CHECK_HTTP
        && hcf->check.keepalive)
    {
        p->keep = ngx_http_upstream_ha_keep_take(hcf, peer, slot.epoch);

        if (p->keep) {
            p->reused = 1;
            ngx_http_upstream_ha_probe_attach(p);
            ngx_http_upstream_ha_probe_connected(p);
            return;
        }
    }

    ngx_http_upstream_ha_probe_connect(p);
}


/* a new connection for the check, with a pool of its own */

static void
ngx_http_upstream_ha_probe_connect(ngx_http_upstream_ha_probe_t *p)
{
    ngx_int_t                     rc;
    ngx_pool_t                   *pool;
    ngx_queue_t                  *q;
    ngx_http_upstream_ha_keep_t  *k;

    /* room under the cap: the idle connection kept last goes first */

    while (ngx_http_upstream_ha_probes + ngx_http_upstream_ha_nidle
           > ngx_http_upstream_ha_probe_limit()
           && !ngx_queue_empty(&ngx_http_upstream_ha_idle))
    {
        q = ngx_queue_last(&ngx_http_upstream_ha_idle);
        ngx_http_upstream_ha_keep_close(
            ngx_queue_data(q, ngx_http_upstream_ha_keep_t, queue));
    }

    pool = ngx_create_pool(512, ngx_cycle->log);
    if (pool == NULL) {
        ngx_http_upstream_ha_probe_fail(p, "no memory");
        return;
    }

    k = ngx_pcalloc(pool, sizeof(ngx_http_upstream_ha_keep_t));

    if (k == NULL) {
        ngx_destroy_pool(pool);
        ngx_http_upstream_ha_probe_fail(p, "no memory");
        return;
    }

    k->pool = pool;
    k->hcf = p->hcf;
    k->peer = p->peer;
    k->epoch = p->epoch;
    k->opened = ngx_current_msec;
    k->name.len = p->name.len;
    k->name.data = ngx_pstrdup(pool, &p->name);

    if (k->name.data == NULL) {
        ngx_destroy_pool(pool);
        ngx_http_upstream_ha_probe_fail(p, "no memory");
        return;
    }

    p->keep = k;
    p->pc.connection = NULL;

    rc = ngx_event_connect_peer(&p->pc);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        p->err = ngx_socket_errno;
        ngx_http_upstream_ha_probe_fail(p, "connect() failed");
        return;
    }

    k->connection = p->pc.connection;
    k->connection->pool = pool;

    ngx_http_upstream_ha_probe_attach(p);

    p->phase = NGX_HTTP_UPSTREAM_HA_CONNECT;

    if (rc == NGX_OK) {
        ngx_http_upstream_ha_probe_connected(p);
    }

    /* NGX_AGAIN: the write event tells */
}


/* the check's connection, new or kept, serves the probe */

static void
ngx_http_upstream_ha_probe_attach(ngx_http_upstream_ha_probe_t *p)
{
    ngx_connection_t  *c;

    c = p->keep->connection;

    p->pc.connection = c;

    c->data = p;
    c->idle = 0;
    c->log = &p->log;
    c->read->log = &p->log;
    c->write->log = &p->log;
    c->read->handler = ngx_http_upstream_ha_probe_read;
    c->write->handler = ngx_http_upstream_ha_probe_write;
}


/* the upstream's checks still in flight end without a verdict */

void
ngx_http_upstream_ha_stop_probes(ngx_upstream_ha_conf_t *ha)
{
    ngx_queue_t                      *q;
    ngx_rbtree_node_t                *node;
    ngx_http_upstream_ha_keep_t      *k;
    ngx_http_upstream_ha_probe_t     *p;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = (ngx_http_upstream_ha_srv_conf_t *) ha;

    if (hcf->probing.next == NULL) {
        return;
    }

    while (!ngx_queue_empty(&hcf->probing)) {
        q = ngx_queue_head(&hcf->probing);
        p = ngx_queue_data(q, ngx_http_upstream_ha_probe_t, queue);
        ngx_http_upstream_ha_probe_finish(p, NGX_DECLINED);
    }

    while (hcf->kept.root != hcf->kept.sentinel) {
        node = ngx_rbtree_min(hcf->kept.root, hcf->kept.sentinel);
        k = (ngx_http_upstream_ha_keep_t *) node;
        ngx_http_upstream_ha_keep_close(k);
    }
}


static void
ngx_http_upstream_ha_probe_connected(ngx_http_upstream_ha_probe_t *p)
{
    u_char                             *last;
    size_t                              len;
    ngx_str_t                          *host, *method, *headers;
    ngx_uint_t                          i, nheaders;
    ngx_http_upstream_ha_check_conf_t  *cc;
#if (NGX_HTTP_SSL)
    ngx_connection_t                   *c;
#endif

    static ngx_str_t  get = ngx_string("GET");

    cc = &p->hcf->check;

#if (NGX_HTTP_SSL)

    c = p->pc.connection;

    if (cc->tls && c->ssl == NULL) {
        p->phase = NGX_HTTP_UPSTREAM_HA_HANDSHAKE;

        if (ngx_ssl_create_connection(cc->ssl, c,
                                      NGX_SSL_BUFFER|NGX_SSL_CLIENT)
            != NGX_OK)
        {
            ngx_http_upstream_ha_probe_fail(p, "TLS setup failed");
            return;
        }

#ifdef SSL_CTRL_SET_TLSEXT_HOSTNAME

        if (cc->host.len) {
            u_char  *name;

            name = ngx_pnalloc(p->pool, cc->host.len + 1);
            if (name == NULL) {
                ngx_http_upstream_ha_probe_fail(p, "no memory");
                return;
            }

            (void) ngx_cpystrn(name, cc->host.data, cc->host.len + 1);

            if (SSL_set_tlsext_host_name(c->ssl->connection, (char *) name)
                == 0)
            {
                ngx_http_upstream_ha_probe_fail(p, "TLS SNI failed");
                return;
            }
        }

#endif

        c->sendfile = 0;

        if (ngx_ssl_handshake(c) == NGX_AGAIN) {
            c->ssl->handler = ngx_http_upstream_ha_probe_handshaked;
            return;
        }

        ngx_http_upstream_ha_probe_handshaked(c);
        return;
    }

#endif

    if (cc->type == NGX_HTTP_UPSTREAM_HA_CHECK_TCP) {
        ngx_http_upstream_ha_probe_finish(p, 1);
        return;
    }

    /* GET uri HTTP/1.1, Host: the server's name unless host= is set */

    if (cc->host.len) {
        host = &cc->host;

    } else {
        host = p->server.len ? &p->server : &p->name;
    }

    if (cc->type == NGX_HTTP_UPSTREAM_HA_CHECK_GRPC) {
        ngx_http_upstream_ha_probe_grpc(p, host);
        return;
    }

    /* a new connection after a kept one failed: the same request again */

    if (p->out) {
        p->out->pos = p->out->start;
        p->in->pos = p->in->start;
        p->in->last = p->in->start;
        p->phase = NGX_HTTP_UPSTREAM_HA_SEND;

        ngx_http_upstream_ha_probe_send(p);
        return;
    }

    /*
     * METHOD uri HTTP/1.1, Host and User-Agent unless ha_check_header
     * gives them, the ha_check_header lines in their order,
     * Content-Length with ha_check_body, "Connection: close" unless
     * kept, the body
     */

    method = cc->method.len ? &cc->method : &get;
    headers = cc->headers ? cc->headers->elts : NULL;
    nheaders = cc->headers ? cc->headers->nelts : 0;

    len = method->len + sizeof(" " " HTTP/1.1" CRLF) - 1 + cc->uri.len
          + sizeof("Connection: close" CRLF CRLF) - 1;

    if (!cc->host_header) {
        len += sizeof("Host: " CRLF) - 1 + host->len;
    }

    if (!cc->agent_header) {
        len += sizeof("User-Agent: ha-balancer health check" CRLF) - 1;
    }

    for (i = 0; i < nheaders; i++) {
        len += headers[i].len + sizeof(CRLF) - 1;
    }

    if (cc->request_body_set) {
        len += sizeof("Content-Length: " CRLF) - 1 + NGX_SIZE_T_LEN
               + cc->request_body.len;
    }

    p->out = ngx_create_temp_buf(p->pool, len);
    p->in = ngx_create_temp_buf(p->pool, NGX_HTTP_UPSTREAM_HA_CHECK_BUF0);

    if (p->out == NULL || p->in == NULL) {
        ngx_http_upstream_ha_probe_fail(p, "no memory");
        return;
    }

    last = ngx_sprintf(p->out->last, "%V %V HTTP/1.1" CRLF,
                       method, &cc->uri);

    if (!cc->host_header) {
        last = ngx_sprintf(last, "Host: %V" CRLF, host);
    }

    if (!cc->agent_header) {
        last = ngx_cpymem(last, "User-Agent: ha-balancer health check" CRLF,
                          sizeof("User-Agent: ha-balancer health check" CRLF)
                          - 1);
    }

    for (i = 0; i < nheaders; i++) {
        last = ngx_sprintf(last, "%V" CRLF, &headers[i]);
    }

    if (cc->request_body_set) {
        last = ngx_sprintf(last, "Content-Length: %uz" CRLF,
                           cc->request_body.len);
    }

    /* kept connections: no "Connection: close", HTTP/1.1 keeps */

    if (cc->keepalive == 0) {
        last = ngx_cpymem(last, "Connection: close" CRLF,
                          sizeof("Connection: close" CRLF) - 1);
    }

    *last++ = CR; *last++ = LF;

    if (cc->request_body_set) {
        last = ngx_cpymem(last, cc->request_body.data,
                          cc->request_body.len);
    }

    p->out->last = last;

    p->phase = NGX_HTTP_UPSTREAM_HA_SEND;

    ngx_http_upstream_ha_probe_send(p);
}


#if (NGX_HTTP_SSL)

static void
ngx_http_upstream_ha_probe_handshaked(ngx_connection_t *c)
{
    ngx_http_upstream_ha_probe_t  *p = c->data;

    if (!c->ssl->handshaked) {
        ngx_http_upstream_ha_probe_fail(p, "TLS handshake failed");
        return;
    }

    c->read->handler = ngx_http_upstream_ha_probe_read;
    c->write->handler = ngx_http_upstream_ha_probe_write;

    ngx_http_upstream_ha_probe_connected(p);
}

#endif


static void
ngx_http_upstream_ha_probe_write(ngx_event_t *wev)
{
    ngx_connection_t              *c;
    ngx_http_upstream_ha_probe_t  *p;

    c = wev->data;
    p = c->data;

    switch (p->phase) {

    case NGX_HTTP_UPSTREAM_HA_CONNECT:

        if (ngx_http_upstream_ha_test_connect(p, c) != NGX_OK) {
            ngx_http_upstream_ha_probe_fail(p, "connect() failed");
            return;
        }

        ngx_http_upstream_ha_probe_connected(p);
        return;

    case NGX_HTTP_UPSTREAM_HA_SEND:
        ngx_http_upstream_ha_probe_send(p);
        return;

    default:
        return;
    }
}


static void
ngx_http_upstream_ha_probe_read(ngx_event_t *rev)
{
    ngx_connection_t              *c;
    ngx_http_upstream_ha_probe_t  *p;

    c = rev->data;
    p = c->data;

    switch (p->phase) {

    case NGX_HTTP_UPSTREAM_HA_CONNECT:

        /* a refused connection can be told by a read event first */

        if (ngx_http_upstream_ha_test_connect(p, c) != NGX_OK) {
            ngx_http_upstream_ha_probe_fail(p, "connect() failed");
        }

        return;

    case NGX_HTTP_UPSTREAM_HA_READ:
        (void) ngx_http_upstream_ha_probe_recv(p);
        return;

    default:
        return;
    }
}


static void
ngx_http_upstream_ha_probe_send(ngx_http_upstream_ha_probe_t *p)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = p->pc.connection;

    while (p->out->pos < p->out->last) {

        n = c->send(c, p->out->pos, p->out->last - p->out->pos);

        if (n == NGX_ERROR) {
            ngx_http_upstream_ha_probe_error(p, "send() failed");
            return;
        }

        if (n == NGX_AGAIN || n == 0) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                ngx_http_upstream_ha_probe_fail(p, "send() failed");
            }

            return;
        }

        p->out->pos += n;
    }

    p->phase = NGX_HTTP_UPSTREAM_HA_READ;

    /*
     * the answer cannot be there yet unless the read event says so: the
     * event, active since the connection opened, tells when it is (TLS
     * may hold bytes already read: it is asked at once)
     */

#if (NGX_HTTP_SSL)
    if (c->ssl) {
        (void) ngx_http_upstream_ha_probe_recv(p);
        return;
    }
#endif

    if (c->read->ready) {
        (void) ngx_http_upstream_ha_probe_recv(p);
    }
}


/* NGX_AGAIN while more is needed; otherwise the probe is finished */

static ngx_int_t
ngx_http_upstream_ha_probe_recv(ngx_http_upstream_ha_probe_t *p)
{
    ssize_t            n;
    ngx_buf_t         *b;
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = p->pc.connection;

    for ( ;; ) {

        if (p->in->last == p->in->end) {

            if (p->in->end - p->in->start >= NGX_HTTP_UPSTREAM_HA_CHECK_BUF) {
                return ngx_http_upstream_ha_probe_verdict(p, 1);
            }

            /* a long answer: the whole buffer (the verdict reparses) */

            b = ngx_create_temp_buf(p->pool, NGX_HTTP_UPSTREAM_HA_CHECK_BUF);
            if (b == NULL) {
                ngx_http_upstream_ha_probe_fail(p, "no memory");
                return NGX_ERROR;
            }

            b->last = ngx_cpymem(b->pos, p->in->pos, p->in->last - p->in->pos);
            p->in = b;
        }

        n = c->recv(c, p->in->last, p->in->end - p->in->last);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
                ngx_http_upstream_ha_probe_fail(p, "recv() failed");
                return NGX_ERROR;
            }

            return NGX_AGAIN;
        }

        if (n == NGX_ERROR) {

            /* a reset after a complete answer still counts */

            if (p->decided) {
                p->keepable = 0;
                ngx_http_upstream_ha_probe_finish(p, 1);
                return NGX_OK;
            }

            if (ngx_http_upstream_ha_probe_verdict(p, 0) != NGX_AGAIN) {
                return NGX_OK;
            }

            ngx_http_upstream_ha_probe_error(p, "recv() failed");
            return NGX_ERROR;
        }

        if (n == 0) {
            return ngx_http_upstream_ha_probe_verdict(p, 1);
        }

        p->in->last += n;

        rc = ngx_http_upstream_ha_probe_verdict(p, 0);

        if (rc != NGX_AGAIN) {
            return rc;
        }
    }
}


/*
 * Decides on what was read.  No verdict before the whole head: a strict
 * status line and every header line up to the empty line.  Without body=
 * the head decides; with body=, the body is read up to its Content-Length
 * or its last chunk (so a server that keeps the connection open is not
 * waited for), or without either up to eof, and in any case up to a full
 * buffer at most; a chunked body is matched as received, framing
 * included.  NGX_AGAIN when more is needed and more can come
 * (not eof, buffer not full); otherwise the probe is finished.
 */

static ngx_int_t
ngx_http_upstream_ha_probe_verdict(ngx_http_upstream_ha_probe_t *p,
    ngx_uint_t eof)
{
    u_char                             *s, *end, *body, *last;
    off_t                               length;
    ngx_int_t                           rc;
    ngx_uint_t                          i, status, ok, full, keep, head;
    const char                         *why;
    ngx_http_upstream_ha_range_t       *r;
    ngx_http_upstream_ha_check_conf_t  *cc;
#if (NGX_PCRE)
    ngx_str_t                           text;
#endif

    if (p->hcf->check.type == NGX_HTTP_UPSTREAM_HA_CHECK_GRPC) {
        return ngx_http_upstream_ha_probe_grpc_verdict(p, eof);
    }

    cc = &p->hcf->check;
    s = p->in->pos;
    end = p->in->last;
    head = (cc->method.len == 4
            && ngx_strncmp(cc->method.data, "HEAD", 4) == 0);
    full = (p->in->last == p->in->end
            && p->in->end - p->in->start >= NGX_HTTP_UPSTREAM_HA_CHECK_BUF);

    rc = ngx_http_upstream_ha_parse_head(s, end, &status, &body, &length,
                                         &keep, &why);

    if (rc == NGX_DECLINED) {
        ngx_http_upstream_ha_probe_fail(p, why);
        return NGX_OK;
    }

    if (rc == NGX_AGAIN) {
        if (eof || full) {
            if (s == end) {
                ngx_http_upstream_ha_probe_error(p, "no response");

            } else {
                ngx_http_upstream_ha_probe_fail(p, "incomplete header");
            }

            return NGX_OK;
        }

        return NGX_AGAIN;
    }

    p->status = status;

    if (cc->status == NULL) {
        ok = (status >= 200 && status <= 399);

    } else {
        ok = 0;
        r = cc->status->elts;

        for (i = 0; i < cc->status->nelts; i++) {
            if (status >= r[i].lo && status <= r[i].hi) {
                ok = 1;
                break;
            }
        }
    }

    if (!ok) {
        ngx_snprintf(p->why, sizeof(p->why) - 1, "status %ui%Z", status);
        ngx_http_upstream_ha_probe_fail(p, (const char *) p->why);
        return NGX_OK;
    }

#if (NGX_PCRE)

    if (cc->body) {

        text.data = body;
        text.len = end - body;

        if (length == NGX_HTTP_UPSTREAM_HA_CHUNKED) {

            rc = ngx_http_upstream_ha_chunked_end(body, end, &last);

            if (rc == NGX_DECLINED) {
                ngx_http_upstream_ha_probe_fail(p, "invalid chunked body");
                return NGX_OK;
            }

            if (rc == NGX_OK) {
                text.len = last - body;

            } else if (eof && !full) {
                ngx_http_upstream_ha_probe_fail(p, "incomplete body");
                return NGX_OK;

            } else if (!full) {
                return NGX_AGAIN;
            }

        } else if (length >= 0 && (off_t) text.len >= length) {
            /* the whole body: what follows it is not looked at */
            text.len = (size_t) length;

        } else if (length >= 0 && !full) {

            if (eof) {
                ngx_http_upstream_ha_probe_fail(p, "incomplete body");
                return NGX_OK;
            }

            return NGX_AGAIN;

        } else if (length < 0 && !eof && !full) {
            /* no Content-Length: the body ends at eof */
            return NGX_AGAIN;
        }

        rc = ngx_regex_exec(cc->body, &text, NULL, 0);

        if (rc == NGX_REGEX_NO_MATCHED) {
            ngx_http_upstream_ha_probe_fail(p, "body does not match");
            return NGX_OK;
        }

        if (rc < 0) {
            ngx_http_upstream_ha_probe_fail(p, "body regex failed");
            return NGX_OK;
        }

        p->keepable = keep && cc->keepalive
                      && ngx_http_upstream_ha_probe_drained(status, head,
                                                            length, body,
                                                            end, 1)
                         == NGX_OK;

        ngx_http_upstream_ha_probe_finish(p, 1);

        return NGX_OK;
    }

#else
    (void) last;
#endif

    /*
     * The head decided; a connection to keep is read to the end of its
     * body first (a body that does not come in time ends the check as
     * passed, and the connection)
     */

    if (keep && cc->keepalive) {
        rc = ngx_http_upstream_ha_probe_drained(status, head, length, body,
                                                end, eof || full);

        if (rc == NGX_AGAIN) {
            p->decided = 1;
            return NGX_AGAIN;
        }

        p->keepable = (rc == NGX_OK);
    }

    ngx_http_upstream_ha_probe_finish(p, 1);

    return NGX_OK;
}


/*
 * Whether a passed answer was read to its end and no further: NGX_OK,
 * the connection can carry the next check; NGX_AGAIN, more is to come;
 * NGX_DECLINED, the connection must be closed (a body that ends with
 * the connection, bytes past the body, or no more can be read).
 */

static ngx_int_t
ngx_http_upstream_ha_probe_drained(ngx_uint_t status, ngx_uint_t head,
    off_t length, u_char *body, u_char *end, ngx_uint_t eof)
{
    u_char     *last;
    ngx_int_t   rc;

    if (head || status == 204 || status == 304) {
        return (body == end) ? NGX_OK : NGX_DECLINED;
    }

    if (status < 200) {
        return NGX_DECLINED;
    }

    if (length == NGX_HTTP_UPSTREAM_HA_CHUNKED) {
        rc = ngx_http_upstream_ha_chunked_end(body, end, &last);

        if (rc == NGX_OK) {
            return (last == end) ? NGX_OK : NGX_DECLINED;
        }

        return (rc == NGX_AGAIN && !eof) ? NGX_AGAIN : NGX_DECLINED;
    }

    if (length < 0) {
        return NGX_DECLINED;
    }

    if (end - body == length) {
        return NGX_OK;
    }

    return (end - body < length && !eof) ? NGX_AGAIN : NGX_DECLINED;
}


/* a gRPC check's request: HTTP/2 from the preface, to one write */

static void
ngx_http_upstream_ha_probe_grpc(ngx_http_upstream_ha_probe_t *p,
    ngx_str_t *authority)
{
    size_t                              len;
    hab_result                          rc;
    ngx_http_upstream_ha_check_conf_t  *cc;

    cc = &p->hcf->check;

    rc = hab_grpc_request(authority->data, authority->len,
                          cc->grpc_service.data, cc->grpc_service.len,
                          cc->tls, NULL, 0, &len);

    if (rc != HAB_NO_SPACE) {
        ngx_http_upstream_ha_probe_fail(p, hab_result_str(rc));
        return;
    }

    p->out = ngx_create_temp_buf(p->pool, len);
    p->in = ngx_create_temp_buf(p->pool, NGX_HTTP_UPSTREAM_HA_CHECK_BUF0);

    if (p->out == NULL || p->in == NULL) {
        ngx_http_upstream_ha_probe_fail(p, "no memory");
        return;
    }

    rc = hab_grpc_request(authority->data, authority->len,
                          cc->grpc_service.data, cc->grpc_service.len,
                          cc->tls, p->out->last, len, &len);

    if (rc != HAB_OK) {
        ngx_http_upstream_ha_probe_fail(p, hab_result_str(rc));
        return;
    }

    p->out->last += len;
    p->phase = NGX_HTTP_UPSTREAM_HA_SEND;

    ngx_http_upstream_ha_probe_send(p);
}


/*
 * The verdict on a gRPC check's answer so far (the core reads it whole
 * each time); the server's SETTINGS acknowledged once, while more is to
 * come.  As ngx_http_upstream_ha_probe_verdict().
 */

static ngx_int_t
ngx_http_upstream_ha_probe_grpc_verdict(ngx_http_upstream_ha_probe_t *p,
    ngx_uint_t eof)
{
    ssize_t            n;
    hab_result         rc;
    hab_grpc_answer    a;
    ngx_connection_t  *c;

    /* a SETTINGS frame with the ACK flag, no payload (RFC 9113 6.5) */
    static u_char  ack[] = { 0, 0, 0, 4, 1, 0, 0, 0, 0 };

    rc = hab_grpc_answer_read(p->in->pos, p->in->last - p->in->pos,
                              eof ? 1 : 0, (uint32_t) p->hcf->check.grpc_status,
                              &a);

    if (rc != HAB_OK) {
        ngx_http_upstream_ha_probe_fail(p, hab_result_str(rc));
        return NGX_ERROR;
    }

    switch (a.verdict) {

    case HAB_GRPC_AGAIN:

        if (a.settings && !p->acked) {
            c = p->pc.connection;

            n = c->send(c, ack, sizeof(ack));

            if (n == (ssize_t) sizeof(ack)) {
                p->acked = 1;

            } else if (n != NGX_AGAIN && n != 0) {

                /* an error, or a part: the stream cannot go on */

                ngx_http_upstream_ha_probe_fail(p, "send() failed");
                return NGX_ERROR;
            }

            /* NGX_AGAIN: again with the next bytes read */
        }

        return NGX_AGAIN;

    case HAB_GRPC_PASSED:
        p->status = 200;
        ngx_http_upstream_ha_probe_finish(p, 1);
        return NGX_OK;

    default:
        p->reason = a.reason;
        p->status = a.status;
        ngx_http_upstream_ha_probe_fail(p, (const char *) a.why);
        return NGX_OK;
    }
}


static void
ngx_http_upstream_ha_probe_timeout(ngx_event_t *ev)
{
    ngx_http_upstream_ha_probe_t  *p = ev->data;

    ngx_msec_int_t  late;

    /*
     * The worker may have been too busy to run the handlers in time: look
     * at the socket once more before calling it a timeout, and drop the
     * check (no verdict) when the timer itself fired a whole timeout late.
     */

    if (p->pc.connection && p->phase == NGX_HTTP_UPSTREAM_HA_READ
        && ngx_http_upstream_ha_probe_recv(p) != NGX_AGAIN)
    {
        return;
    }

    /* passed on its head; the rest of the body did not come */

    if (p->decided) {
        p->keepable = 0;
        ngx_http_upstream_ha_probe_finish(p, 1);
        return;
    }

    late = (ngx_msec_int_t) (ngx_current_msec - p->deadline);

    if (late > (ngx_msec_int_t) p->hcf->ha.health.timeout_ms) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "check of upstream server %V of \"%V\" dropped: the "
                      "worker was %M ms late", &p->name, p->hcf->ha.name, late);
        ngx_http_upstream_ha_probe_finish(p, NGX_DECLINED);
        return;
    }

    ngx_http_upstream_ha_probe_fail(p, "timed out");
}


static ngx_int_t
ngx_http_upstream_ha_test_connect(ngx_http_upstream_ha_probe_t *p,
    ngx_connection_t *c)
{
    int        err;
    socklen_t  len;

#if (NGX_HAVE_KQUEUE)

    if (ngx_event_flags & NGX_USE_KQUEUE_EVENT)  {
        if (c->write->pending_eof || c->read->pending_eof) {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

#endif

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        p->err = err;
        (void) ngx_connection_error(c, err, "connect() failed");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The connection failed before anything was read back: on a kept
 * connection, the server closed it in between (an idle timeout of its
 * own, a restart); the check is made once more on a new connection,
 * within the same timeout, rather than counted as failed
 */

static void
ngx_http_upstream_ha_probe_error(ngx_http_upstream_ha_probe_t *p,
    const char *why)
{
    /* not once the timeout fired: no time is left for another try */

    if (!p->reused || p->in == NULL || p->in->last != p->in->start
        || !p->timer.timer_set)
    {
        ngx_http_upstream_ha_probe_fail(p, why);
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "ha check: kept connection to %V closed (%s), "
                   "new one", &p->name, why);

    ngx_http_upstream_ha_keep_close(p->keep);

    p->keep = NULL;
    p->pc.connection = NULL;
    p->reused = 0;

    ngx_http_upstream_ha_probe_connect(p);
}


static void
ngx_http_upstream_ha_probe_fail(ngx_http_upstream_ha_probe_t *p,
    const char *why)
{
    if ((u_char *) why != p->why) {
        (void) ngx_cpystrn(p->why, (u_char *) why, sizeof(p->why));
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "check of upstream server %V of \"%V\" failed: %s",
                  &p->name, p->hcf->ha.name, p->why);

    ngx_http_upstream_ha_probe_finish(p, 0);
}


/* passed: 1 passed, 0 failed, NGX_DECLINED no verdict */

static void
ngx_http_upstream_ha_probe_finish(ngx_http_upstream_ha_probe_t *p,
    ngx_int_t passed)
{
    hab_result                        rc;
    hab_check_result                  result;
    hab_check_report                  report;
    ngx_http_upstream_ha_keep_t      *k;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = p->hcf;
    k = p->keep;

    if (p->timer.timer_set) {
        ngx_del_timer(&p->timer);
    }

    if (k) {
        if (passed == 1 && p->keepable && k->connection
            && ngx_current_msec - k->opened < hcf->check.keepalive
            && !(ngx_exiting || ngx_quit || ngx_terminate))
        {
            ngx_http_upstream_ha_keep_park(k);

        } else {
            ngx_http_upstream_ha_keep_close(k);
        }

        p->keep = NULL;
        p->pc.connection = NULL;
    }

    hcf->probes--;
    ngx_http_upstream_ha_probes--;
    ngx_queue_remove(&p->queue);

    if (passed != NGX_DECLINED) {
        ngx_memzero(&report, sizeof(hab_check_report));

        result.passed = passed ? 1 : 0;
        result.reason = passed ? HAB_CHECK_REASON_PASSED
                               : ngx_http_upstream_ha_probe_reason(p);
        result.status = (uint32_t) p->status;
        result.duration_ms = (uint32_t) ngx_min(ngx_current_msec - p->start,
                                                0xffffffff);

        rc = hab_check_done(hcf->ha.zone, p->peer, p->epoch, hcf->ha.slot,
                            &result, ngx_current_msec, &report);

        if (rc != HAB_OK) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "ha_balance upstream \"%V\": check result: %s",
                          hcf->ha.name, hab_result_str(rc));

        } else {

            /* each transition is reported to one prober only */

            switch (report.transition) {

            case HAB_CHECK_UNHEALTHY:
                ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                              "upstream server %V of \"%V\" is unhealthy: "
                              "%uD failed check%s in a row, last: %s",
                              &p->name, hcf->ha.name, report.fall,
                              report.fall == 1 ? "" : "s", p->why);
                break;

            case HAB_CHECK_HEALTHY:
                ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                              "upstream server %V of \"%V\" is healthy "
                              "again: %uD passed check%s in a row",
                              &p->name, hcf->ha.name, report.rise,
                              report.rise == 1 ? "" : "s");
                break;

            case HAB_CHECK_UP:
                ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                              "upstream server %V of \"%V\" passed its "
                              "first check", &p->name, hcf->ha.name);
                break;

            default:
                break;
            }

            ngx_upstream_ha_log_panic(ngx_cycle->log, hcf->ha.name,
                                           &hcf->ha.health, &report.panic);

            if (report.transition != HAB_CHECK_NONE) {
                ngx_http_upstream_ha_save_state(hcf);

                /* a server back in service: the queue's head may use it */

                ngx_http_upstream_ha_queue_kick(hcf, ngx_cycle->log);
            }
        }
    }

    ngx_destroy_pool(p->pool);
}


/* the reason of a failed check, from its text */

static uint32_t
ngx_http_upstream_ha_probe_reason(ngx_http_upstream_ha_probe_t *p)
{
    size_t       len;
    ngx_uint_t   i;

    if (p->reason) {
        return p->reason;
    }

    len = ngx_strlen(p->why);

    if (len > 7 && ngx_strncmp(p->why, "status ", 7) == 0) {
        return HAB_CHECK_REASON_STATUS;
    }

    for (i = 0; ngx_http_upstream_ha_reasons[i].why.len; i++) {
        if (len == ngx_http_upstream_ha_reasons[i].why.len
            && ngx_strncmp(p->why, ngx_http_upstream_ha_reasons[i].why.data,
                           len)
               == 0)
        {
            if (ngx_http_upstream_ha_reasons[i].reason
                    == HAB_CHECK_REASON_CONNECT_ERROR
                && p->err == NGX_ECONNREFUSED)
            {
                return HAB_CHECK_REASON_CONNECT_REFUSED;
            }

            return ngx_http_upstream_ha_reasons[i].reason;
        }
    }

    return HAB_CHECK_REASON_INTERNAL;
}


static u_char *
ngx_http_upstream_ha_probe_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    ngx_http_upstream_ha_probe_t  *p = log->data;

    return ngx_snprintf(buf, len, ", %s upstream server %V of \"%V\"",
                        log->action ? log->action : "checking", &p->name,
                        p->hcf->ha.name);
}


/*
 * The idle connection kept to server peer, taken out of the idle ones,
 * if it can carry a check: the slot's server is the same, it is younger
 * than keepalive_time and nothing came on it (a byte or the server's
 * close would have been seen by its read event)
 */

static ngx_http_upstream_ha_keep_t *
ngx_http_upstream_ha_keep_take(ngx_http_upstream_ha_srv_conf_t *hcf,
    uint32_t peer, uint32_t epoch)
{
    ngx_connection_t             *c;
    ngx_rbtree_node_t            *node, *sentinel;
    ngx_http_upstream_ha_keep_t  *k;

    node = hcf->kept.root;
    sentinel = hcf->kept.sentinel;

    while (node != sentinel && node->key != peer) {
        node = (peer < node->key) ? node->left : node->right;
    }

    if (node == sentinel) {
        return NULL;
    }

    k = (ngx_http_upstream_ha_keep_t *) node;
    c = k->connection;

    if (!k->idle) {
        /* in use by a check of the same server still in flight */
        return NULL;
    }

    if (k->epoch != epoch
        || ngx_current_msec - k->opened >= hcf->check.keepalive
        || c->read->ready || c->read->eof || c->read->pending_eof
        || c->error || c->close)
    {
        ngx_http_upstream_ha_keep_close(k);
        return NULL;
    }

    /* it stays in hcf->kept while in use: found again when parked */

    ngx_reusable_connection(c, 0);
    ngx_queue_remove(&k->queue);
    ngx_http_upstream_ha_nidle--;
    k->idle = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "ha check: kept connection to %V reused, %M ms old",
                   &k->name, ngx_current_msec - k->opened);

    return k;
}


/* a check passed and read its answer to the end: its connection waits */

static void
ngx_http_upstream_ha_keep_park(ngx_http_upstream_ha_keep_t *k)
{
    ngx_connection_t                 *c;
    ngx_rbtree_node_t                *node, *sentinel;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = k->hcf;
    c = k->connection;

    /* one kept connection per server and worker */

    if (!k->kept) {
        node = hcf->kept.root;
        sentinel = hcf->kept.sentinel;

        while (node != sentinel && node->key != k->peer) {
            node = (k->peer < node->key) ? node->left : node->right;
        }

        if (node != sentinel) {
            ngx_http_upstream_ha_keep_close(k);
            return;
        }

        /* set each time: ngx_rbtree_delete() zeroes it */
        k->node.key = k->peer;

        ngx_rbtree_insert(&hcf->kept, &k->node);
        k->kept = 1;
    }

    if (k->log.handler == NULL) {
        k->log = *ngx_cycle->log;
        k->log.handler = ngx_http_upstream_ha_keep_log_error;
        k->log.data = k;
        k->log.action = "keeping a check connection to";
        k->log.next = NULL;

        if (k->log.log_level > NGX_LOG_CRIT) {
            k->log.log_level = NGX_LOG_CRIT;
        }
    }

    c->data = k;
    c->log = &k->log;
    c->read->log = &k->log;
    c->write->log = &k->log;
    c->read->handler = ngx_http_upstream_ha_keep_idle_handler;
    c->write->handler = ngx_http_upstream_ha_keep_dummy_handler;

    /*
     * nginx's graceful exit closes it (c->close, then the read handler), and
     * so does a worker short of connections for its clients (reusable)
     */
    c->idle = 1;
    ngx_reusable_connection(c, 1);

    k->used = ngx_current_msec;
    k->idle = 1;

    ngx_queue_insert_tail(&ngx_http_upstream_ha_idle, &k->queue);
    ngx_http_upstream_ha_nidle++;

    if (c->read->ready) {
        ngx_http_upstream_ha_keep_idle_handler(c->read);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_upstream_ha_keep_close(k);
    }
}


/* anything on an idle kept connection (data, the server's close) ends it */

static void
ngx_http_upstream_ha_keep_idle_handler(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    ngx_http_upstream_ha_keep_t  *k;

    int   n;
    char  buf[1];

    c = ev->data;
    k = c->data;

    if (c->close || ev->timedout) {
        goto close;
    }

    n = recv(c->fd, buf, 1, MSG_PEEK);

    if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
        ev->ready = 0;

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            goto close;
        }

        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "ha check: kept connection to %V ended by the server "
                   "(%d)", &k->name, n);

close:

    ngx_http_upstream_ha_keep_close(k);
}


static void
ngx_http_upstream_ha_keep_dummy_handler(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, ev->log, 0,
                   "ha check: kept connection write event");
}


/* closes a check's connection, idle or not, and frees its pool */

static void
ngx_http_upstream_ha_keep_close(ngx_http_upstream_ha_keep_t *k)
{
    ngx_connection_t  *c;

    if (k->kept) {
        ngx_rbtree_delete(&k->hcf->kept, &k->node);
        k->kept = 0;
    }

    if (k->idle) {
        ngx_queue_remove(&k->queue);
        ngx_http_upstream_ha_nidle--;
        k->idle = 0;
    }

    c = k->connection;

    if (c) {
#if (NGX_HTTP_SSL)
        if (c->ssl) {
            c->ssl->no_wait_shutdown = 1;
            c->ssl->no_send_shutdown = 1;
            (void) ngx_ssl_shutdown(c);
        }
#endif
        ngx_close_connection(c);
    }

    ngx_destroy_pool(k->pool);
}


/*
 * Every half interval: idle kept connections whose slot changed hands or
 * left, older than keepalive_time, or not used by this worker for two
 * intervals (their server set down, or checked by another worker now)
 * are closed
 */

void
ngx_http_upstream_ha_keep_sweep(ngx_upstream_ha_conf_t *ha)
{
    ngx_msec_t                        now, unused;
    ngx_queue_t                      *q, *next;
    hab_slot_info                     slot;
    ngx_http_upstream_ha_keep_t      *k;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = (ngx_http_upstream_ha_srv_conf_t *) ha;

    if (hcf->kept.root == hcf->kept.sentinel) {
        return;
    }

    now = ngx_current_msec;
    unused = 2 * (ngx_msec_t) hcf->ha.health.interval_ms
             + hcf->ha.health.timeout_ms;

    for (q = ngx_queue_head(&ngx_http_upstream_ha_idle);
         q != ngx_queue_sentinel(&ngx_http_upstream_ha_idle);
         q = next)
    {
        next = ngx_queue_next(q);
        k = ngx_queue_data(q, ngx_http_upstream_ha_keep_t, queue);

        if (k->hcf != hcf) {
            continue;
        }

        if (hab_zone_slot(hcf->ha.zone, k->peer, &slot) != HAB_OK
            || slot.status != HAB_SLOT_LIVE
            || slot.epoch != k->epoch
            || now - k->opened >= hcf->check.keepalive
            || now - k->used > unused)
        {
            ngx_http_upstream_ha_keep_close(k);
        }
    }
}


static u_char *
ngx_http_upstream_ha_keep_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    ngx_http_upstream_ha_keep_t  *k = log->data;

    return ngx_snprintf(buf, len, ", %s upstream server %V of \"%V\"",
                        log->action, &k->name, k->hcf->ha.name);
}
