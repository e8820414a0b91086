
/*
 * Copyright (C) ha-balancer authors
 *
 * Health of an ha_balance upstream: the ha_check, ha_slow_start,
 * ha_outlier and ha_panic directives.
 *
 * Which worker checks which server, and when, is decided in shared memory
 * by the core (hab_check_claim: one check per server per interval across
 * all workers); what a result means too (hab_check_done).  This file
 * parses the directives; the per-worker timer that asks the core is in
 * ngx_upstream_ha_health.c, the checks themselves are made in
 * ngx_http_upstream_ha_probe.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_upstream_ha_module.h"


static char *ngx_http_upstream_ha_parse_status(ngx_conf_t *cf,
    ngx_http_upstream_ha_check_conf_t *cc, ngx_str_t *value);
static ngx_uint_t ngx_http_upstream_ha_token(u_char *p, size_t len);
static ngx_uint_t ngx_http_upstream_ha_printable(u_char *p, size_t len);


/*
 * ha_check [interval=2s] [jitter=0] [timeout=1s] [fails=3] [passes=2]
 *          [type=http|tcp|grpc] [uri=/] [port=N] [tls] [host=NAME]
 *          [status=200-399] [body=REGEX] [keepalive_time=60s]
 *          [method=GET] [grpc_service=NAME] [grpc_status=CODE]
 *          [mandatory [persistent]] [clear_fails];
 */

char *
ngx_http_upstream_ha_check(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    char                               *rv;
    ngx_int_t                           n;
    ngx_str_t                          *value;
    uint32_t                            ms;
    ngx_uint_t                          i, typed, hosted, grpc;
    hab_health_conf                    *hc;
    ngx_http_upstream_ha_check_conf_t  *cc;
#if (NGX_PCRE)
    u_char                              errstr[NGX_MAX_CONF_ERRSTR];
    ngx_regex_compile_t                 rc;
#endif

    hc = &hcf->ha.health;
    cc = &hcf->check;

    if (cc->set) {
        return "is duplicate";
    }

    cc->set = 1;
    cc->type = NGX_HTTP_UPSTREAM_HA_CHECK_HTTP;
    ngx_str_set(&cc->uri, "/");
    cc->keepalive = NGX_HTTP_UPSTREAM_HA_KEEPALIVE;

    hc->flags |= HAB_HEALTH_CHECK;
    hc->interval_ms = 2000;
    hc->jitter_ms = 0;
    hc->timeout_ms = 1000;
    hc->fails = 3;
    hc->passes = 2;

    typed = 0;      /* parameters of type=http only */
    hosted = 0;     /* host=: http and grpc */
    grpc = 0;       /* parameters of type=grpc only */
    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            if (ngx_upstream_ha_parse_time(&value[i], 9, 0,
                                                &hc->interval_ms)
                != NGX_OK)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "jitter=", 7) == 0) {
            if (ngx_upstream_ha_parse_time(&value[i], 7, 1,
                                                &hc->jitter_ms)
                != NGX_OK)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            if (ngx_upstream_ha_parse_time(&value[i], 8, 0,
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

        if (ngx_strcmp(value[i].data, "type=grpc") == 0) {
            cc->type = NGX_HTTP_UPSTREAM_HA_CHECK_GRPC;
            continue;
        }

        if (ngx_strncmp(value[i].data, "grpc_service=", 13) == 0) {
            cc->grpc_service.len = value[i].len - 13;
            cc->grpc_service.data = value[i].data + 13;

            if (cc->grpc_service.len == 0
                || cc->grpc_service.len > HAB_GRPC_SERVICE_MAX
                || !ngx_http_upstream_ha_printable(cc->grpc_service.data,
                                                   cc->grpc_service.len))
            {
                goto invalid;
            }

            grpc = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "grpc_status=", 12) == 0) {
            n = ngx_atoi(value[i].data + 12, value[i].len - 12);
            if (n == NGX_ERROR || n < 1 || n > 16) {
                goto invalid;
            }

            cc->grpc_status = (ngx_uint_t) n;
            grpc = 1;
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
                || cc->host.len > HAB_GRPC_SERVICE_MAX
                || ngx_strlchr(cc->host.data, cc->host.data + cc->host.len,
                               ' ')
                || ngx_strlchr(cc->host.data, cc->host.data + cc->host.len,
                               CR)
                || ngx_strlchr(cc->host.data, cc->host.data + cc->host.len,
                               LF))
            {
                goto invalid;
            }

            hosted = 1;
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

        if (ngx_strncmp(value[i].data, "keepalive_time=", 15) == 0) {
            if (ngx_upstream_ha_parse_time(&value[i], 15, 1, &ms) != NGX_OK) {
                goto invalid;
            }

            cc->keepalive = ms;
            typed = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "method=", 7) == 0) {
            cc->method.len = value[i].len - 7;
            cc->method.data = value[i].data + 7;

            if (cc->method.len == 0 || cc->method.len > 32
                || !ngx_http_upstream_ha_token(cc->method.data,
                                               cc->method.len))
            {
                goto invalid;
            }

            typed = 1;
            continue;
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

    if (hosted && cc->type == NGX_HTTP_UPSTREAM_HA_CHECK_TCP) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_check \"host=\" needs type=http or type=grpc");
        return NGX_CONF_ERROR;
    }

    if (typed && cc->type != NGX_HTTP_UPSTREAM_HA_CHECK_HTTP) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_check \"uri=\", \"status=\", \"body=\", "
                           "\"keepalive_time=\" and \"method=\" need "
                           "type=http%s",
                           cc->type == NGX_HTTP_UPSTREAM_HA_CHECK_GRPC
                           ? " (a gRPC check's request and verdict are "
                             "fixed, and it opens a connection each time)"
                           : "");
        return NGX_CONF_ERROR;
    }

    if (grpc && cc->type != NGX_HTTP_UPSTREAM_HA_CHECK_GRPC) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_check \"grpc_service=\" and \"grpc_status=\" "
                           "need type=grpc");
        return NGX_CONF_ERROR;
    }

    if (cc->type == NGX_HTTP_UPSTREAM_HA_CHECK_GRPC) {
        cc->keepalive = 0;
    }

    if (cc->body_src.len && cc->method.len == 4
        && ngx_strncmp(cc->method.data, "HEAD", 4) == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ha_check \"body=\" cannot match the answer to "
                           "\"method=HEAD\": it has no body");
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


/* a token (RFC 9110 5.6.2): a method's or a header's name */

static ngx_uint_t
ngx_http_upstream_ha_token(u_char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if ((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z')
            || (p[i] >= '0' && p[i] <= '9')
            || ngx_strlchr((u_char *) "!#$%&'*+-.^_`|~",
                           (u_char *) "!#$%&'*+-.^_`|~" + 15, p[i]))
        {
            continue;
        }

        return 0;
    }

    return 1;
}


/* visible ASCII only: a gRPC service's name */

static ngx_uint_t
ngx_http_upstream_ha_printable(u_char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (p[i] < 0x21 || p[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


/*
 * ha_check_header "Name: value"; a header line of every check request,
 * in the order given; "Host" and "User-Agent" replace the module's own
 */

char *
ngx_http_upstream_ha_check_header(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    u_char                             *colon, *v, *ve, *q, *last;
    ngx_str_t                          *value, *h, name;
    ngx_uint_t                          i;
    ngx_http_upstream_ha_check_conf_t  *cc;

    static ngx_str_t  reserved[] = {
        ngx_string("Content-Length"),
        ngx_string("Transfer-Encoding"),
        ngx_string("Connection"),
        ngx_string("Keep-Alive"),
        ngx_string("TE"),
        ngx_string("Upgrade"),
        ngx_null_string
    };

    cc = &hcf->check;
    value = cf->args->elts;

    last = value[1].data + value[1].len;
    colon = ngx_strlchr(value[1].data, last, ':');

    if (colon == NULL || colon == value[1].data
        || !ngx_http_upstream_ha_token(value[1].data, colon - value[1].data))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid header \"%V\": it must be "
                           "\"Name: value\", the name a token", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = colon - value[1].data;

    for (v = colon + 1; v < last && (*v == ' ' || *v == '\t'); v++) {
        /* void */
    }

    for (ve = last; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--) {
        /* void */
    }

    for (q = v; q < ve; q++) {
        if ((*q < 0x20 && *q != '\t') || *q == 0x7f) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid header \"%V\": a control character "
                               "in its value", &name);
            return NGX_CONF_ERROR;
        }
    }

    for (i = 0; reserved[i].len; i++) {
        if (name.len == reserved[i].len
            && ngx_strncasecmp(name.data, reserved[i].data, name.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "header \"%V\" of a check is set by the "
                               "module (ha_check_body, keepalive_time=)",
                               &name);
            return NGX_CONF_ERROR;
        }
    }

    if (name.len == 4 && ngx_strncasecmp(name.data, (u_char *) "Host", 4) == 0)
    {
        if (cc->host_header) {
            return "has a second \"Host\"";
        }

        cc->host_header = 1;
    }

    if (name.len == 10
        && ngx_strncasecmp(name.data, (u_char *) "User-Agent", 10) == 0)
    {
        cc->agent_header = 1;
    }

    if (cc->headers == NULL) {
        cc->headers = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
        if (cc->headers == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    h = ngx_array_push(cc->headers);
    if (h == NULL) {
        return NGX_CONF_ERROR;
    }

    /* "Name: value", as it is sent */

    h->len = name.len + 2 + (ve - v);
    h->data = ngx_pnalloc(cf->pool, h->len);
    if (h->data == NULL) {
        return NGX_CONF_ERROR;
    }

    q = ngx_cpymem(h->data, name.data, name.len);
    *q++ = ':'; *q++ = ' ';
    ngx_memcpy(q, v, ve - v);

    return NGX_CONF_OK;
}


/* ha_check_body "text"; the body of every check request, Content-Length set */

char *
ngx_http_upstream_ha_check_body(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_str_t  *value;

    if (hcf->check.request_body_set) {
        return "is duplicate";
    }

    value = cf->args->elts;

    hcf->check.request_body = value[1];
    hcf->check.request_body_set = 1;

    return NGX_CONF_OK;
}


/* ha_slow_start time; */

char *
ngx_http_upstream_ha_slow_start(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_str_t  *value;

    if (hcf->ha.health.slow_start_ms) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_upstream_ha_parse_time(&value[1], 0, 0,
                                        &hcf->ha.health.slow_start_ms)
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

    hc = &hcf->ha.health;

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
            if (ngx_upstream_ha_parse_time(&value[i], 14, 0,
                                                &hc->base_ejection_ms)
                != NGX_OK)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_ejection_time=", 18) == 0) {
            if (ngx_upstream_ha_parse_time(&value[i], 18, 0,
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

    if (hcf->ha.health.panic_percent) {
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

    hcf->ha.health.panic_percent = (uint32_t) n;

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

    hc = &hcf->ha.health;
    us = hcf->uscf;

    if ((hcf->check.headers || hcf->check.request_body_set)
        && (!(hc->flags & HAB_HEALTH_CHECK)
            || hcf->check.type != NGX_HTTP_UPSTREAM_HA_CHECK_HTTP))
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_balance upstream \"%V\": ha_check_header and "
                      "ha_check_body need \"ha_check\" with type=http, "
                      "in %s:%ui", &us->host, us->file_name, us->line);
        return NGX_ERROR;
    }

    if (hcf->check.host_header && hcf->check.host.len) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_balance upstream \"%V\": ha_check host= and "
                      "ha_check_header \"Host: ...\" both set the Host "
                      "header, in %s:%ui", &us->host, us->file_name,
                      us->line);
        return NGX_ERROR;
    }

    if (hc->flags == 0 && hc->slow_start_ms == 0 && hc->base_ejection_ms == 0
        && hc->panic_percent == 0 && hc->queue == 0)
    {
        return NGX_OK;
    }

    if (hc->slow_start_ms && hcf->ha.policy == HAB_POLICY_HASH) {
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

    hcf->ha.conf.health = hc;

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

        /* gRPC over TLS: HTTP/2 chosen by ALPN */

        if (hcf->check.type == NGX_HTTP_UPSTREAM_HA_CHECK_GRPC) {
#ifdef TLSEXT_TYPE_application_layer_protocol_negotiation
            static const u_char  h2[] = "\x02h2";

            if (SSL_CTX_set_alpn_protos(hcf->check.ssl->ctx, h2,
                                        sizeof(h2) - 1)
                != 0)
            {
                ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                              "SSL_CTX_set_alpn_protos() failed");
                return NGX_ERROR;
            }
#else
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_balance upstream \"%V\": ha_check type=grpc "
                          "tls needs OpenSSL with ALPN, in %s:%ui",
                          &us->host, us->file_name, us->line);
            return NGX_ERROR;
#endif
        }
    }

#endif

    return NGX_OK;
}
