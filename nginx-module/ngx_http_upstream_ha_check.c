
/*
 * Copyright (C) ha-balancer authors
 *
 * Health of an ha_balance upstream: the ha_check, ha_slow_start,
 * ha_outlier and ha_panic directives, the per-worker health timer, and
 * active checks made with nginx's own connect, read and timer machinery.
 *
 * Which worker checks which server, and when, is decided in shared memory
 * by the core (hab_check_claim: one check per server per interval across
 * all workers); what a result means too (hab_check_done).  This file only
 * makes the checks: connect, optionally TLS, send a request, read the
 * status line and the first bytes of the body.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_upstream_ha_module.h"


/* peers taken per claim, and ejections ended per tick */
#define NGX_HTTP_UPSTREAM_HA_BATCH  256

/* claims per tick at most */
#define NGX_HTTP_UPSTREAM_HA_CLAIMS  16

/* bytes of response a check reads: status line, headers, start of body */
#define NGX_HTTP_UPSTREAM_HA_CHECK_BUF  16384

/* longest sleep of the health timer, ms */
#define NGX_HTTP_UPSTREAM_HA_TICK_MAX   1000


/* ngx_http_upstream_ha_probe_t.phase */
#define NGX_HTTP_UPSTREAM_HA_CONNECT    0
#define NGX_HTTP_UPSTREAM_HA_HANDSHAKE  1
#define NGX_HTTP_UPSTREAM_HA_SEND       2
#define NGX_HTTP_UPSTREAM_HA_READ       3


typedef struct {
    ngx_peer_connection_t               pc;
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
    u_char                              why[64];
} ngx_http_upstream_ha_probe_t;


static ngx_int_t ngx_http_upstream_ha_parse_time(ngx_str_t *value,
    size_t skip, ngx_uint_t zero, uint32_t *out);
static char *ngx_http_upstream_ha_parse_status(ngx_conf_t *cf,
    ngx_http_upstream_ha_check_conf_t *cc, ngx_str_t *value);
static void ngx_http_upstream_ha_health_handler(ngx_event_t *ev);
static void ngx_http_upstream_ha_probe_start(
    ngx_http_upstream_ha_srv_conf_t *hcf, uint32_t peer, ngx_log_t *log);
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
static void ngx_http_upstream_ha_probe_timeout(ngx_event_t *ev);
static ngx_int_t ngx_http_upstream_ha_test_connect(ngx_connection_t *c);
static void ngx_http_upstream_ha_probe_fail(ngx_http_upstream_ha_probe_t *p,
    const char *why);
static void ngx_http_upstream_ha_probe_finish(ngx_http_upstream_ha_probe_t *p,
    ngx_int_t passed);
static u_char *ngx_http_upstream_ha_probe_log_error(ngx_log_t *log,
    u_char *buf, size_t len);
static void ngx_http_upstream_ha_save_state(
    ngx_http_upstream_ha_srv_conf_t *hcf);


/* checks in flight in this worker, all upstreams */
static ngx_uint_t  ngx_http_upstream_ha_probes;


/*
 * ha_check [interval=2s] [jitter=0] [timeout=1s] [fails=3] [passes=2]
 *          [type=http|tcp] [uri=/] [port=N] [tls] [host=NAME]
 *          [status=200-399] [body=REGEX] [mandatory [persistent]]
 *          [clear_fails];
 */

char *
ngx_http_upstream_ha_check(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    char                               *rv;
    ngx_int_t                           n;
    ngx_str_t                          *value;
    ngx_uint_t                          i, typed;
    hab_health_conf                    *hc;
    ngx_http_upstream_ha_check_conf_t  *cc;
#if (NGX_PCRE)
    u_char                              errstr[NGX_MAX_CONF_ERRSTR];
    ngx_regex_compile_t                 rc;
#endif

    hc = &hcf->health;
    cc = &hcf->check;

    if (cc->set) {
        return "is duplicate";
    }

    cc->set = 1;
    cc->type = NGX_HTTP_UPSTREAM_HA_CHECK_HTTP;
    ngx_str_set(&cc->uri, "/");

    hc->flags |= HAB_HEALTH_CHECK;
    hc->interval_ms = 2000;
    hc->jitter_ms = 0;
    hc->timeout_ms = 1000;
    hc->fails = 3;
    hc->passes = 2;

    typed = 0;
    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            if (ngx_http_upstream_ha_parse_time(&value[i], 9, 0,
                                                &hc->interval_ms)
                != NGX_OK)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "jitter=", 7) == 0) {
            if (ngx_http_upstream_ha_parse_time(&value[i], 7, 1,
                                                &hc->jitter_ms)
                != NGX_OK)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            if (ngx_http_upstream_ha_parse_time(&value[i], 8, 0,
                                                &hc->timeout_ms)
                != NGX_OK)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "fails=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n == NGX_ERROR || n < 1 || n > 0x7fffffff) {
                goto invalid;
            }

            hc->fails = (uint32_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "passes=", 7) == 0) {
            n = ngx_atoi(value[i].data + 7, value[i].len - 7);
            if (n == NGX_ERROR || n < 1 || n > 0x7fffffff) {
                goto invalid;
            }

            hc->passes = (uint32_t) n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "type=http") == 0) {
            cc->type = NGX_HTTP_UPSTREAM_HA_CHECK_HTTP;
            continue;
        }

        if (ngx_strcmp(value[i].data, "type=tcp") == 0) {
            cc->type = NGX_HTTP_UPSTREAM_HA_CHECK_TCP;
            continue;
        }

        if (ngx_strncmp(value[i].data, "uri=", 4) == 0) {
            cc->uri.len = value[i].len - 4;
            cc->uri.data = value[i].data + 4;

            if (cc->uri.len == 0 || cc->uri.data[0] != '/'
                || ngx_strlchr(cc->uri.data, cc->uri.data + cc->uri.len, ' ')
                || ngx_strlchr(cc->uri.data, cc->uri.data + cc->uri.len, CR)
                || ngx_strlchr(cc->uri.data, cc->uri.data + cc->uri.len, LF))
            {
                goto invalid;
            }

            typed = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "port=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);
            if (n == NGX_ERROR || n < 1 || n > 65535) {
                goto invalid;
            }

            cc->port = (in_port_t) n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "tls") == 0) {
#if (NGX_HTTP_SSL)
            cc->tls = 1;
            continue;
#else
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"tls\" needs nginx built with "
                               "ngx_http_ssl_module");
            return NGX_CONF_ERROR;
#endif
        }

        if (ngx_strncmp(value[i].data, "host=", 5) == 0) {
            cc->host.len = value[i].len - 5;
            cc->host.data = value[i].data + 5;

            if (cc->host.len == 0
                || ngx_strlchr(cc->host.data, cc->host.data + cc->host.len,
                               ' ')
                || ngx_strlchr(cc->host.data, cc->host.data + cc->host.len,
                               CR)
                || ngx_strlchr(cc->host.data, cc->host.data + cc->host.len,
                               LF))
            {
                goto invalid;
            }

            typed = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "status=", 7) == 0) {
            rv = ngx_http_upstream_ha_parse_status(cf, cc, &value[i]);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            typed = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "body=", 5) == 0) {
#if (NGX_PCRE)
            cc->body_src.len = value[i].len - 5;
            cc->body_src.data = value[i].data + 5;

            ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

            rc.pattern = cc->body_src;
            rc.pool = cf->pool;
            rc.err.len = NGX_MAX_CONF_ERRSTR;
            rc.err.data = errstr;

            if (cc->body_src.len == 0 || ngx_regex_compile(&rc) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\": %V",
                                   &value[i], &rc.err);
                return NGX_CONF_ERROR;
            }

            cc->body = rc.regex;
            typed = 1;
            continue;
#else
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"body=\" needs nginx built with PCRE");
            return NGX_CONF_ERROR;
#endif
        }

        if (ngx_strcmp(value[i].data, "mandatory") == 0) {
            hc->flags |= HAB_HEALTH_MANDATORY;
            continue;
        }

        if (ngx_strcmp(value[i].data, "persistent") == 0) {
            hc->flags |= HAB_HEALTH_PERSISTENT;
            continue;
        }

        if (ngx_strcmp(value[i].data, "clear_fails") == 0) {
            hc->flags |= HAB_HEALTH_CLEAR_FAILS;
            continue;
        }

        goto invalid;
    }

    if (hc->timeout_ms > hc->interval_ms) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_check timeout=%uDms is longer than "
                           "interval=%uDms", hc->timeout_ms,
                           hc->interval_ms);
        return NGX_CONF_ERROR;
    }

    if (typed && cc->type == NGX_HTTP_UPSTREAM_HA_CHECK_TCP) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_check \"uri=\", \"host=\", \"status=\" and "
                           "\"body=\" need type=http");
        return NGX_CONF_ERROR;
    }

    if ((hc->flags & HAB_HEALTH_PERSISTENT)
        && !(hc->flags & HAB_HEALTH_MANDATORY))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_check \"persistent\" needs \"mandatory\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/* a time after "name=", in ms, 1 ms to 24 days (0 too if zero is set) */

static ngx_int_t
ngx_http_upstream_ha_parse_time(ngx_str_t *value, size_t skip,
    ngx_uint_t zero, uint32_t *out)
{
    ngx_int_t  n;
    ngx_str_t  s;

    s.len = value->len - skip;
    s.data = value->data + skip;

    n = ngx_parse_time(&s, 0);

    if (n == NGX_ERROR || n > 0x7fffffff || (n == 0 && !zero)) {
        return NGX_ERROR;
    }

    *out = (uint32_t) n;

    return NGX_OK;
}


/* status=200-399 | status=200,204,301-303 */

static char *
ngx_http_upstream_ha_parse_status(ngx_conf_t *cf,
    ngx_http_upstream_ha_check_conf_t *cc, ngx_str_t *value)
{
    u_char                        *p, *last, *comma, *dash;
    ngx_int_t                      lo, hi;
    ngx_http_upstream_ha_range_t  *r;

    cc->status = ngx_array_create(cf->pool, 2,
                                  sizeof(ngx_http_upstream_ha_range_t));
    if (cc->status == NULL) {
        return NGX_CONF_ERROR;
    }

    p = value->data + 7;
    last = value->data + value->len;

    if (p == last) {
        goto invalid;
    }

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        dash = ngx_strlchr(p, comma, '-');

        if (dash) {
            lo = ngx_atoi(p, dash - p);
            hi = ngx_atoi(dash + 1, comma - dash - 1);

        } else {
            lo = ngx_atoi(p, comma - p);
            hi = lo;
        }

        if (lo < 100 || hi > 599 || lo > hi) {
            goto invalid;
        }

        r = ngx_array_push(cc->status);
        if (r == NULL) {
            return NGX_CONF_ERROR;
        }

        r->lo = (ngx_uint_t) lo;
        r->hi = (ngx_uint_t) hi;

        p = comma + 1;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", value);
    return NGX_CONF_ERROR;
}


/* ha_slow_start time; */

char *
ngx_http_upstream_ha_slow_start(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_str_t  *value;

    if (hcf->health.slow_start_ms) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_upstream_ha_parse_time(&value[1], 0, 0,
                                        &hcf->health.slow_start_ms)
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * ha_outlier [consecutive_5xx=5] [consecutive_errors=5] [base_ejection=30s]
 *            [max_ejection=50%] [max_ejection_time=300s];
 */

char *
ngx_http_upstream_ha_outlier(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_int_t         n;
    ngx_str_t        *value;
    ngx_uint_t        i;
    hab_health_conf  *hc;

    hc = &hcf->health;

    if (hc->base_ejection_ms) {
        return "is duplicate";
    }

    hc->consecutive_5xx = 5;
    hc->consecutive_errors = 5;
    hc->base_ejection_ms = 30000;
    hc->max_ejection_percent = 50;
    hc->max_ejection_ms = 300000;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "consecutive_5xx=", 16) == 0) {
            n = ngx_atoi(value[i].data + 16, value[i].len - 16);
            if (n == NGX_ERROR || n > 0x7fffffff) {
                goto invalid;
            }

            hc->consecutive_5xx = (uint32_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "consecutive_errors=", 19) == 0) {
            n = ngx_atoi(value[i].data + 19, value[i].len - 19);
            if (n == NGX_ERROR || n > 0x7fffffff) {
                goto invalid;
            }

            hc->consecutive_errors = (uint32_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "base_ejection=", 14) == 0) {
            if (ngx_http_upstream_ha_parse_time(&value[i], 14, 0,
                                                &hc->base_ejection_ms)
                != NGX_OK)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_ejection_time=", 18) == 0) {
            if (ngx_http_upstream_ha_parse_time(&value[i], 18, 0,
                                                &hc->max_ejection_ms)
                != NGX_OK)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_ejection=", 13) == 0) {
            if (value[i].len < 15 || value[i].data[value[i].len - 1] != '%') {
                goto invalid;
            }

            n = ngx_atoi(value[i].data + 13, value[i].len - 14);
            if (n == NGX_ERROR || n < 1 || n > 100) {
                goto invalid;
            }

            hc->max_ejection_percent = (uint32_t) n;
            continue;
        }

        goto invalid;
    }

    if (hc->consecutive_5xx == 0 && hc->consecutive_errors == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_outlier with consecutive_5xx=0 and "
                           "consecutive_errors=0 ejects nothing");
        return NGX_CONF_ERROR;
    }

    if (hc->max_ejection_ms < hc->base_ejection_ms) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_outlier max_ejection_time=%uDms is shorter "
                           "than base_ejection=%uDms", hc->max_ejection_ms,
                           hc->base_ejection_ms);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/* ha_panic N%; */

char *
ngx_http_upstream_ha_panic(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (hcf->health.panic_percent) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = NGX_ERROR;

    if (value[1].len >= 2 && value[1].data[value[1].len - 1] == '%') {
        n = ngx_atoi(value[1].data, value[1].len - 1);
    }

    if (n == NGX_ERROR || n < 1 || n > 100) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", it must be a percentage "
                           "from 1%% to 100%%", &value[1]);
        return NGX_CONF_ERROR;
    }

    hcf->health.panic_percent = (uint32_t) n;

    return NGX_CONF_OK;
}


/* init_upstream: checks what needs the whole upstream, creates TLS */

ngx_int_t
ngx_http_upstream_ha_init_health(ngx_conf_t *cf,
    ngx_http_upstream_ha_srv_conf_t *hcf)
{
    hab_health_conf                *hc;
    ngx_http_upstream_srv_conf_t   *us;
#if (NGX_HTTP_SSL)
    ngx_pool_cleanup_t             *cln;
#endif

    hc = &hcf->health;
    us = hcf->uscf;

    if (hc->flags == 0 && hc->slow_start_ms == 0 && hc->base_ejection_ms == 0
        && hc->panic_percent == 0)
    {
        return NGX_OK;
    }

    if (hc->slow_start_ms && hcf->policy == HAB_POLICY_HASH) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_balance upstream \"%V\": ha_slow_start cannot be "
                      "used with hash: ramping a server would move its "
                      "keys, in %s:%ui", &us->host, us->file_name, us->line);
        return NGX_ERROR;
    }

    if (hab_health_validate(hc) != HAB_OK) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_balance upstream \"%V\": inconsistent health "
                      "settings in %s:%ui", &us->host, us->file_name,
                      us->line);
        return NGX_ERROR;
    }

    hcf->conf.health = hc;

#if (NGX_HTTP_SSL)

    if (hcf->check.tls) {
        hcf->check.ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
        if (hcf->check.ssl == NULL) {
            return NGX_ERROR;
        }

        hcf->check.ssl->log = cf->log;

        if (ngx_ssl_create(hcf->check.ssl,
                           NGX_SSL_TLSv1|NGX_SSL_TLSv1_1
                           |NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            ngx_ssl_cleanup_ctx(hcf->check.ssl);
            return NGX_ERROR;
        }

        cln->handler = ngx_ssl_cleanup_ctx;
        cln->data = hcf->check.ssl;
    }

#endif

    return NGX_OK;
}


/* init_process: each worker runs a health timer per upstream */

void
ngx_http_upstream_ha_start_health(ngx_cycle_t *cycle,
    ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_event_t  *ev;

    if (hcf->conf.health == NULL) {
        return;
    }

    ev = &hcf->health_ev;

    ev->handler = ngx_http_upstream_ha_health_handler;
    ev->data = hcf;
    ev->log = cycle->log;
    ev->cancelable = 1;

    hcf->health_epoch = 0;
    hcf->health_full = 0;
    hcf->probes = 0;
    ngx_queue_init(&hcf->probing);

    ngx_add_timer(ev, 1 + ngx_random() % 20);
}


static void
ngx_http_upstream_ha_health_handler(ngx_event_t *ev)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = ev->data;

    size_t             i, n, cap, limit;
    uint32_t           peers[NGX_HTTP_UPSTREAM_HA_BATCH];
    uint64_t           now, next, due;
    uint32_t           workers;
    ngx_uint_t         k, full;
    ngx_msec_t         delay, grain;
    hab_result         rc;
    ngx_str_t          server;
    ngx_addr_t         addr;
    ngx_pool_t        *pool;
    ngx_core_conf_t   *ccf;
    hab_panic_report   panic;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    now = ngx_current_msec;
    next = now + NGX_HTTP_UPSTREAM_HA_TICK_MAX;

    /*
     * Ticks come at most every interval / 20 (10 ms to 100 ms): a check is
     * late by less than that, and a tick looks at this worker's share of
     * the servers only, the others (overdue ones to take over) once per
     * half interval.
     */

    grain = ngx_max(ngx_min(hcf->health.interval_ms / 20, 100), 10);

    if (hcf->health.flags & HAB_HEALTH_CHECK) {

        /* a check takes a connection: leave most of them to clients */

        limit = ngx_max(ngx_cycle->connection_n / 4, 8);

        ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                               ngx_core_module);

        /* "master_process off": the one process checks every server */

        workers = (ngx_process == NGX_PROCESS_SINGLE)
                  ? 1 : (uint32_t) ngx_max(ccf->worker_processes, 1);

        full = (now - hcf->health_full >= hcf->health.interval_ms / 2);
        if (full) {
            hcf->health_full = now;
        }

        for (k = 0; k < NGX_HTTP_UPSTREAM_HA_CLAIMS; k++) {

            cap = (ngx_http_upstream_ha_probes < limit)
                  ? ngx_min(limit - ngx_http_upstream_ha_probes,
                            NGX_HTTP_UPSTREAM_HA_BATCH)
                  : 0;

            n = 0;
            due = next;

            rc = hab_check_claim(hcf->zone, (uint32_t) ngx_worker, workers,
                                 now, ((uint64_t) ngx_random() << 32)
                                      ^ ngx_random(),
                                 full ? 1 : 0, peers, cap, &n, &due);

            if (rc != HAB_OK) {
                ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                              "ha_balance upstream \"%V\": check claim: %s",
                              hcf->name, hab_result_str(rc));
                break;
            }

            for (i = 0; i < n; i++) {
                ngx_http_upstream_ha_probe_start(hcf, peers[i], ev->log);
            }

            if (n < cap) {
                next = ngx_min(next, due);
                break;
            }

            /* more are due than were taken: again, or at the next tick */

            next = now;
        }
    }

    n = 0;
    ngx_memzero(&panic, sizeof(hab_panic_report));

    rc = hab_health_tick(hcf->zone, now, hcf->slot, &hcf->health_epoch,
                         peers, NGX_HTTP_UPSTREAM_HA_BATCH, &n, &panic);

    if (rc == HAB_OK) {

        pool = n ? ngx_create_pool(1024, ev->log) : NULL;

        for (i = 0; pool && i < n; i++) {
            if (ngx_http_upstream_ha_copy_peer(hcf, peers[i], pool, &addr,
                                               &server, ev->log)
                != NGX_OK)
            {
                continue;
            }

            ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                          "upstream server %V of \"%V\" returns after "
                          "its ejection", &addr.name, hcf->name);
        }

        if (pool) {
            ngx_destroy_pool(pool);
        }

        ngx_http_upstream_ha_log_panic(ev->log, hcf, &panic);
    }

    if (hcf->health.base_ejection_ms || hcf->health.panic_percent) {
        next = ngx_min(next, now + 100);
    }

    delay = (next > now) ? (ngx_msec_t) (next - now) : 0;
    delay = ngx_max(delay, grain);

    ngx_add_timer(ev, ngx_min(delay, NGX_HTTP_UPSTREAM_HA_TICK_MAX));
}


/* exit_process: the checks still in flight end without a verdict */

void
ngx_http_upstream_ha_stop_health(ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_queue_t                   *q;
    ngx_http_upstream_ha_probe_t  *p;

    if (hcf->conf.health == NULL || hcf->probing.next == NULL) {
        return;
    }

    if (hcf->health_ev.timer_set) {
        ngx_del_timer(&hcf->health_ev);
    }

    while (!ngx_queue_empty(&hcf->probing)) {
        q = ngx_queue_head(&hcf->probing);
        p = ngx_queue_data(q, ngx_http_upstream_ha_probe_t, queue);
        ngx_http_upstream_ha_probe_finish(p, NGX_DECLINED);
    }
}


void
ngx_http_upstream_ha_log_panic(ngx_log_t *log,
    ngx_http_upstream_ha_srv_conf_t *hcf, hab_panic_report *panic)
{
    if (panic->change == HAB_PANIC_MODE_ENTERED) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "upstream \"%V\" in panic: %uD of %uD servers "
                      "healthy, below %uD%%, balancing over all of them",
                      hcf->name, panic->healthy, panic->total,
                      hcf->health.panic_percent);

    } else if (panic->change == HAB_PANIC_MODE_LEFT) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "upstream \"%V\" out of panic: %uD of %uD servers "
                      "healthy", hcf->name, panic->healthy, panic->total);
    }
}


static void
ngx_http_upstream_ha_probe_start(ngx_http_upstream_ha_srv_conf_t *hcf,
    uint32_t peer, ngx_log_t *log)
{
    ngx_int_t                      rc;
    ngx_addr_t                     addr;
    ngx_pool_t                    *pool;
    hab_slot_info                  slot;
    ngx_connection_t              *c;
    struct sockaddr               *sa;
    ngx_http_upstream_ha_probe_t  *p;

    /* the slot's epoch first: a verdict on its next server is dropped */

    if (hab_zone_slot(hcf->zone, peer, &slot) != HAB_OK) {
        return;
    }

    pool = ngx_create_pool(1024, log);
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
    p->deadline = ngx_current_msec + hcf->health.timeout_ms;

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

    ngx_add_timer(&p->timer, hcf->health.timeout_ms);

    rc = ngx_event_connect_peer(&p->pc);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_http_upstream_ha_probe_fail(p, "connect() failed");
        return;
    }

    c = p->pc.connection;
    c->data = p;
    c->pool = pool;
    c->log = &p->log;
    c->read->log = &p->log;
    c->write->log = &p->log;
    c->read->handler = ngx_http_upstream_ha_probe_read;
    c->write->handler = ngx_http_upstream_ha_probe_write;

    p->phase = NGX_HTTP_UPSTREAM_HA_CONNECT;

    if (rc == NGX_OK) {
        ngx_http_upstream_ha_probe_connected(p);
    }

    /* NGX_AGAIN: the write event tells */
}


static void
ngx_http_upstream_ha_probe_connected(ngx_http_upstream_ha_probe_t *p)
{
    u_char                             *last;
    size_t                              len;
    ngx_str_t                          *host;
    ngx_connection_t                   *c;
    ngx_http_upstream_ha_check_conf_t  *cc;

    c = p->pc.connection;
    cc = &p->hcf->check;

#if (NGX_HTTP_SSL)

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

    len = sizeof("GET  HTTP/1.1" CRLF "Host: " CRLF
                 "User-Agent: ha-balancer health check" CRLF
                 "Connection: close" CRLF CRLF) - 1
          + cc->uri.len + host->len;

    p->out = ngx_create_temp_buf(p->pool, len);
    p->in = ngx_create_temp_buf(p->pool, NGX_HTTP_UPSTREAM_HA_CHECK_BUF);

    if (p->out == NULL || p->in == NULL) {
        ngx_http_upstream_ha_probe_fail(p, "no memory");
        return;
    }

    last = ngx_sprintf(p->out->last, "GET %V HTTP/1.1" CRLF "Host: %V" CRLF
                       "User-Agent: ha-balancer health check" CRLF
                       "Connection: close" CRLF CRLF, &cc->uri, host);
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

        if (ngx_http_upstream_ha_test_connect(c) != NGX_OK) {
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

        if (ngx_http_upstream_ha_test_connect(c) != NGX_OK) {
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
            ngx_http_upstream_ha_probe_fail(p, "send() failed");
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

    (void) ngx_http_upstream_ha_probe_recv(p);
}


/* NGX_AGAIN while more is needed; otherwise the probe is finished */

static ngx_int_t
ngx_http_upstream_ha_probe_recv(ngx_http_upstream_ha_probe_t *p)
{
    ssize_t            n;
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = p->pc.connection;

    for ( ;; ) {

        if (p->in->last == p->in->end) {
            return ngx_http_upstream_ha_probe_verdict(p, 1);
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

            if (ngx_http_upstream_ha_probe_verdict(p, 0) != NGX_AGAIN) {
                return NGX_OK;
            }

            ngx_http_upstream_ha_probe_fail(p, "recv() failed");
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
    ngx_uint_t                          i, status, ok, full;
    const char                         *why;
    ngx_http_upstream_ha_range_t       *r;
    ngx_http_upstream_ha_check_conf_t  *cc;
#if (NGX_PCRE)
    ngx_str_t                           text;
#endif

    cc = &p->hcf->check;
    s = p->in->pos;
    end = p->in->last;
    full = (p->in->last == p->in->end);

    rc = ngx_http_upstream_ha_parse_head(s, end, &status, &body, &length,
                                         &why);

    if (rc == NGX_DECLINED) {
        ngx_http_upstream_ha_probe_fail(p, why);
        return NGX_OK;
    }

    if (rc == NGX_AGAIN) {
        if (eof || full) {
            ngx_http_upstream_ha_probe_fail(p, s == end ? "no response"
                                                        : "incomplete header");
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
    }

#else
    (void) body;
    (void) last;
    (void) length;
#endif

    ngx_http_upstream_ha_probe_finish(p, 1);

    return NGX_OK;
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

    late = (ngx_msec_int_t) (ngx_current_msec - p->deadline);

    if (late > (ngx_msec_int_t) p->hcf->health.timeout_ms) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "check of upstream server %V of \"%V\" dropped: the "
                      "worker was %M ms late", &p->name, p->hcf->name, late);
        ngx_http_upstream_ha_probe_finish(p, NGX_DECLINED);
        return;
    }

    ngx_http_upstream_ha_probe_fail(p, "timed out");
}


static ngx_int_t
ngx_http_upstream_ha_test_connect(ngx_connection_t *c)
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
        (void) ngx_connection_error(c, err, "connect() failed");
        return NGX_ERROR;
    }

    return NGX_OK;
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
                  &p->name, p->hcf->name, p->why);

    ngx_http_upstream_ha_probe_finish(p, 0);
}


/* passed: 1 passed, 0 failed, NGX_DECLINED no verdict */

static void
ngx_http_upstream_ha_probe_finish(ngx_http_upstream_ha_probe_t *p,
    ngx_int_t passed)
{
    hab_result                        rc;
    ngx_connection_t                 *c;
    hab_check_report                  report;
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = p->hcf;
    c = p->pc.connection;

    if (p->timer.timer_set) {
        ngx_del_timer(&p->timer);
    }

    if (c) {
#if (NGX_HTTP_SSL)
        if (c->ssl) {
            c->ssl->no_wait_shutdown = 1;
            c->ssl->no_send_shutdown = 1;
            (void) ngx_ssl_shutdown(c);
        }
#endif
        ngx_close_connection(c);
        p->pc.connection = NULL;
    }

    hcf->probes--;
    ngx_http_upstream_ha_probes--;
    ngx_queue_remove(&p->queue);

    if (passed != NGX_DECLINED) {
        ngx_memzero(&report, sizeof(hab_check_report));

        rc = hab_check_done(hcf->zone, p->peer, p->epoch, hcf->slot,
                            passed ? 1 : 0, ngx_current_msec, &report);

        if (rc != HAB_OK) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "ha_balance upstream \"%V\": check result: %s",
                          hcf->name, hab_result_str(rc));

        } else {

            /* each transition is reported to one prober only */

            switch (report.transition) {

            case HAB_CHECK_UNHEALTHY:
                ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                              "upstream server %V of \"%V\" is unhealthy: "
                              "%uD failed check%s in a row, last: %s",
                              &p->name, hcf->name, report.fall,
                              report.fall == 1 ? "" : "s", p->why);
                break;

            case HAB_CHECK_HEALTHY:
                ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                              "upstream server %V of \"%V\" is healthy "
                              "again: %uD passed check%s in a row",
                              &p->name, hcf->name, report.rise,
                              report.rise == 1 ? "" : "s");
                break;

            case HAB_CHECK_UP:
                ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                              "upstream server %V of \"%V\" passed its "
                              "first check", &p->name, hcf->name);
                break;

            default:
                break;
            }

            ngx_http_upstream_ha_log_panic(ngx_cycle->log, hcf,
                                           &report.panic);

            if (report.transition != HAB_CHECK_NONE) {
                ngx_http_upstream_ha_save_state(hcf);
            }
        }
    }

    ngx_destroy_pool(p->pool);
}


/*
 * A health transition: with ha_state_file, the file is rewritten so that a
 * restart or a binary upgrade starts from the health known now.
 */

static void
ngx_http_upstream_ha_save_state(ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_uint_t                         n;
    hab_buf                           *err;
    hab_api_upstream                  *ups;
    ngx_http_upstream_main_conf_t     *umcf;
    ngx_http_upstream_ha_main_conf_t  *hmcf;

    hmcf = hcf->hmcf;

    if (hmcf == NULL || hmcf->state_file.len == 0) {
        return;
    }

    umcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_upstream_module);
    if (umcf == NULL) {
        return;
    }

    ups = ngx_alloc((umcf->upstreams.nelts + 1) * sizeof(hab_api_upstream),
                    ngx_cycle->log);
    if (ups == NULL) {
        return;
    }

    n = ngx_http_upstream_ha_upstreams((ngx_cycle_t *) ngx_cycle, ups);

    err = NULL;

    if (hab_state_save(ups, n, hmcf->state_file.data, hmcf->state_file.len,
                       &err)
        != HAB_OK)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "ha_check: %*s",
                      hab_buf_len(err), hab_buf_data(err));
        hab_buf_free(err);
    }

    ngx_free(ups);
}


static u_char *
ngx_http_upstream_ha_probe_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    ngx_http_upstream_ha_probe_t  *p = log->data;

    return ngx_snprintf(buf, len, ", %s upstream server %V of \"%V\"",
                        log->action ? log->action : "checking", &p->name,
                        p->hcf->name);
}
