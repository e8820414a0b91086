
/*
 * Copyright (C) ha-balancer authors
 *
 * Sessions: "ha_sticky cookie | route | learn" and "ha_route", with the
 * parameters and the cookie values of nginx's "sticky" (1.29.6 and NGINX
 * Plus), on nginx 1.22 and later.  A request names the server it is bound
 * to (a cookie, a route variable, or a session id learnt from responses);
 * the core finds that server in O(1) and sends the request there while
 * it can take it (a draining server still can), else balances it by the
 * upstream's policy.  Learnt sessions live in their own shared memory
 * zone ("zone=NAME:SIZE"), a lock-free table in the core.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


/* nginx's "expires=max": the cookie's date is far in the future */
#define NGX_HTTP_UPSTREAM_HA_EXPIRES_MAX  2145916555


typedef struct {
    ngx_str_t                           server;     /* as in "server" */
    ngx_str_t                           route;
    ngx_uint_t                          used;       /* unsigned:1 */
    ngx_str_t                           file;
    ngx_uint_t                          line;
} ngx_http_upstream_ha_route_t;


static char *ngx_http_upstream_ha_sticky_cookie_conf(ngx_conf_t *cf,
    ngx_http_upstream_ha_sticky_conf_t *scf);
static char *ngx_http_upstream_ha_sticky_learn_conf(ngx_conf_t *cf,
    ngx_http_upstream_ha_sticky_conf_t *scf,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_upstream_ha_sticky_var(ngx_conf_t *cf,
    ngx_array_t *vars, ngx_str_t *name);
static ngx_int_t ngx_http_upstream_ha_sticky_samesite(ngx_str_t *value);
static ngx_int_t ngx_http_upstream_ha_sticky_value(ngx_http_request_t *r,
    ngx_array_t *vars, ngx_str_t *value);
static ngx_int_t ngx_http_upstream_ha_sticky_cookie_insert(
    ngx_http_upstream_ha_peer_data_t *hp, hab_pick *pick);
static ngx_int_t ngx_http_upstream_ha_sticky_header_filter(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_upstream_ha_learn_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static hab_learn *ngx_http_upstream_ha_old_learn(ngx_shm_zone_t *shm_zone);
static void ngx_http_upstream_ha_restore_sessions(ngx_shm_zone_t *shm_zone,
    ngx_http_upstream_ha_sticky_conf_t *scf);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

/* the tag of learn zones: apart from the upstreams' own zones */
static u_char  ngx_http_upstream_ha_learn_tag;

static u_char  ngx_http_upstream_ha_expires_max[] =
    "; expires=Thu, 31-Dec-37 23:55:55 GMT; max-age=315360000";


char *
ngx_http_upstream_ha_sticky(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_str_t                           *value;
    ngx_uint_t                           i;
    ngx_http_upstream_srv_conf_t        *us;
    ngx_http_upstream_ha_sticky_conf_t  *scf;

    scf = &hcf->sticky;

    if (scf->mode != NGX_HTTP_UPSTREAM_HA_STICKY_NONE) {
        return "is duplicate";
    }

    scf->lookup = ngx_array_create(cf->pool, 1, sizeof(ngx_int_t));
    if (scf->lookup == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    us = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (ngx_strcmp(value[1].data, "cookie") == 0) {
        scf->mode = NGX_HTTP_UPSTREAM_HA_STICKY_COOKIE;
        return ngx_http_upstream_ha_sticky_cookie_conf(cf, scf);
    }

    if (ngx_strcmp(value[1].data, "route") == 0) {
        scf->mode = NGX_HTTP_UPSTREAM_HA_STICKY_ROUTE;

        for (i = 2; i < cf->args->nelts; i++) {
            if (value[i].len < 2 || value[i].data[0] != '$') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid variable name \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            value[i].len--;
            value[i].data++;

            if (ngx_http_upstream_ha_sticky_var(cf, scf->lookup, &value[i])
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }
        }

        return NGX_CONF_OK;
    }

    if (ngx_strcmp(value[1].data, "learn") == 0) {
        scf->mode = NGX_HTTP_UPSTREAM_HA_STICKY_LEARN;
        return ngx_http_upstream_ha_sticky_learn_conf(cf, scf, us);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "unknown parameter \"%V\"",
                       &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_upstream_ha_sticky_cookie_conf(ngx_conf_t *cf,
    ngx_http_upstream_ha_sticky_conf_t *scf)
{
    u_char                            *p;
    ngx_str_t                         *value, s, name;
    ngx_uint_t                         i;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (value[2].len == 0) {
        return "empty cookie name";
    }

    for (i = 0; i < value[2].len; i++) {
        if (value[2].data[i] <= ' ' || value[2].data[i] == '='
            || value[2].data[i] == ';' || value[2].data[i] == ','
            || value[2].data[i] >= 0x7f)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid cookie name \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    scf->cookie_name = value[2];
    scf->expires = NGX_CONF_UNSET;

    for (i = 3; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "domain=", 7) == 0) {
            if (scf->domain != NULL) {
                return "parameter \"domain\" is duplicate";
            }

            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            if (s.len == 0) {
                return "no value for \"domain\"";
            }

            scf->domain = ngx_palloc(cf->pool,
                                     sizeof(ngx_http_complex_value_t));
            if (scf->domain == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = scf->domain;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "path=", 5) == 0) {
            if (scf->path.data != NULL) {
                return "parameter \"path\" is duplicate";
            }

            if (value[i].len == 5) {
                return "no value for \"path\"";
            }

            scf->path.len = sizeof("; path=") - 1 + value[i].len - 5;
            scf->path.data = ngx_pnalloc(cf->pool, scf->path.len);
            if (scf->path.data == NULL) {
                return NGX_CONF_ERROR;
            }

            p = ngx_cpymem(scf->path.data, "; path=", sizeof("; path=") - 1);
            ngx_memcpy(p, value[i].data + 5, value[i].len - 5);

            continue;
        }

        if (ngx_strncmp(value[i].data, "expires=", 8) == 0) {
            if (scf->expires != NGX_CONF_UNSET) {
                return "parameter \"expires\" is duplicate";
            }

            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            if (s.len == 3 && ngx_strncmp(s.data, "max", 3) == 0) {
                scf->expires = NGX_HTTP_UPSTREAM_HA_EXPIRES_MAX;

            } else {
                scf->expires = ngx_parse_time(&s, 1);
                if (scf->expires == (time_t) NGX_ERROR) {
                    return "invalid \"expires\" parameter value";
                }
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "httponly") == 0) {
            if (scf->httponly) {
                return "parameter \"httponly\" is duplicate";
            }

            scf->httponly = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "secure") == 0) {
            if (scf->secure) {
                return "parameter \"secure\" is duplicate";
            }

            scf->secure = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "samesite=", 9) == 0) {
            if (scf->samesite != NULL) {
                return "parameter \"samesite\" is duplicate";
            }

            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            scf->samesite = ngx_palloc(cf->pool,
                                       sizeof(ngx_http_complex_value_t));
            if (scf->samesite == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = scf->samesite;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            if (scf->samesite->lengths == NULL
                && ngx_http_upstream_ha_sticky_samesite(&s) != NGX_OK)
            {
                return "invalid \"samesite\" parameter value";
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "unknown parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    /* the request's cookie of that name is the session id */

    name.len = sizeof("cookie_") - 1 + scf->cookie_name.len;
    name.data = ngx_pnalloc(cf->pool, name.len);
    if (name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(name.data, "cookie_%V", &scf->cookie_name);

    if (ngx_http_upstream_ha_sticky_var(cf, scf->lookup, &name) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_upstream_ha_sticky_learn_conf(ngx_conf_t *cf,
    ngx_http_upstream_ha_sticky_conf_t *scf, ngx_http_upstream_srv_conf_t *us)
{
    u_char          *p;
    ssize_t          size;
    ngx_str_t       *value, name, s;
    ngx_uint_t       i;
    ngx_msec_t       timeout;
    ngx_shm_zone_t  *shm_zone;

    size = 0;
    timeout = NGX_CONF_UNSET_MSEC;
    ngx_str_null(&name);

    scf->create = ngx_array_create(cf->pool, 1, sizeof(ngx_int_t));
    if (scf->create == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            if (size != 0) {
                return "duplicate zone";
            }

            name.data = value[i].data + 5;
            p = (u_char *) ngx_strchr(name.data, ':');
            if (p == NULL) {
                return "zone size is not specified";
            }

            name.len = p - name.data;
            if (name.len == 0) {
                return "zone name is not specified";
            }

            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            size = ngx_parse_size(&s);
            if (size == NGX_ERROR) {
                return "invalid zone size";
            }

            if (size < (ssize_t) (8 * ngx_pagesize)
                || hab_learn_capacity((size_t) size) == 0)
            {
                return "zone is too small";
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            if (timeout != NGX_CONF_UNSET_MSEC) {
                return "duplicate timeout";
            }

            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            timeout = ngx_parse_time(&s, 0);
            if (timeout == (ngx_msec_t) NGX_ERROR || timeout == 0
                || timeout > HAB_LEARN_TIMEOUT_MAX)
            {
                return "invalid timeout";
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "create=", 7) == 0
            || ngx_strncmp(value[i].data, "lookup=", 7) == 0)
        {
            if (value[i].len < 9 || value[i].data[7] != '$') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "missing variable in the \"%*s\" "
                                   "parameter", 6, value[i].data);
                return NGX_CONF_ERROR;
            }

            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            if (ngx_http_upstream_ha_sticky_var(cf,
                                                value[i].data[0] == 'c'
                                                ? scf->create : scf->lookup,
                                                &s)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "header") == 0) {
            scf->header = 1;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "unknown parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    if (scf->lookup->nelts == 0) {
        return "\"lookup\" parameter is not specified";
    }

    if (scf->create->nelts == 0) {
        return "\"create\" parameter is not specified";
    }

    if (size == 0) {
        return "\"zone\" parameter is not specified";
    }

    scf->timeout = (timeout == NGX_CONF_UNSET_MSEC) ? 600000 : timeout;

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_upstream_ha_learn_tag);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sticky zone \"%V\" is already used in "
                           "upstream \"%V\"", &name,
                           &((ngx_http_upstream_ha_sticky_conf_t *)
                             shm_zone->data)->host);
        return NGX_CONF_ERROR;
    }

    scf->host = us->host;
    scf->shm_zone = shm_zone;

    shm_zone->init = ngx_http_upstream_ha_learn_zone;
    shm_zone->data = scf;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_upstream_ha_sticky_var(ngx_conf_t *cf, ngx_array_t *vars,
    ngx_str_t *name)
{
    ngx_int_t  index, *indexp;

    index = ngx_http_get_variable_index(cf, name);
    if (index == NGX_ERROR) {
        return NGX_ERROR;
    }

    indexp = ngx_array_push(vars);
    if (indexp == NULL) {
        return NGX_ERROR;
    }

    *indexp = index;

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_ha_sticky_samesite(ngx_str_t *value)
{
    if ((value->len == 6 && ngx_strncasecmp(value->data, (u_char *) "strict", 6)
                            == 0)
        || (value->len == 3 && ngx_strncasecmp(value->data, (u_char *) "lax", 3)
                               == 0)
        || (value->len == 4 && ngx_strncasecmp(value->data, (u_char *) "none",
                                               4)
                               == 0))
    {
        return NGX_OK;
    }

    return NGX_ERROR;
}


/* "ha_route SERVER ROUTE": the session id of the servers of that line */

char *
ngx_http_upstream_ha_route(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf = conf;

    ngx_str_t                     *value;
    ngx_uint_t                     i;
    ngx_http_upstream_ha_route_t  *rt;

    value = cf->args->elts;

    if (value[2].len == 0) {
        return "route is empty";
    }

    if (value[2].len > HAB_SID_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "route \"%V\" is longer than %d", &value[2],
                           HAB_SID_MAX);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < value[2].len; i++) {
        if (value[2].data[i] <= ' ' || value[2].data[i] == ';'
            || value[2].data[i] == ',' || value[2].data[i] >= 0x7f)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid route \"%V\": a cookie value",
                               &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    if (hcf->sticky.routes == NULL) {
        hcf->sticky.routes = ngx_array_create(cf->pool, 4,
                                        sizeof(ngx_http_upstream_ha_route_t));
        if (hcf->sticky.routes == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    rt = hcf->sticky.routes->elts;

    for (i = 0; i < hcf->sticky.routes->nelts; i++) {
        if (rt[i].server.len == value[1].len
            && ngx_strncmp(rt[i].server.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "server \"%V\" has a route already",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    rt = ngx_array_push(hcf->sticky.routes);
    if (rt == NULL) {
        return NGX_CONF_ERROR;
    }

    rt->server = value[1];
    rt->route = value[2];
    rt->used = 0;
    rt->file = cf->conf_file->file.name;
    rt->line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/*
 * The route of peer: "ha_route" for its server line, else (nginx 1.29.6+)
 * its "server ... route=" parameter; none: the core uses nginx's MD5 of
 * the address.
 */

void
ngx_http_upstream_ha_sticky_route(ngx_http_upstream_ha_srv_conf_t *hcf,
    ngx_http_upstream_rr_peer_t *peer, hab_peer_conf *pc)
{
    ngx_uint_t                     i;
    ngx_http_upstream_ha_route_t  *rt;

    pc->sid = NULL;
    pc->sid_len = 0;

    if (hcf->sticky.routes != NULL) {
        rt = hcf->sticky.routes->elts;

        for (i = 0; i < hcf->sticky.routes->nelts; i++) {
            if (rt[i].server.len == peer->server.len
                && ngx_strncmp(rt[i].server.data, peer->server.data,
                               peer->server.len)
                   == 0)
            {
                rt[i].used = 1;
                pc->sid = rt[i].route.data;
                pc->sid_len = rt[i].route.len;
                return;
            }
        }
    }

#if (HAB_STOCK_SID)
    if (peer->route && peer->sid.len && peer->sid.len <= HAB_SID_MAX) {
        pc->sid = peer->sid.data;
        pc->sid_len = peer->sid.len;
    }
#endif
}


/*
 * At the upstream's init: "ha_route" without "ha_sticky" is refused; the
 * zone keeps session ids when sessions are bound
 */

ngx_int_t
ngx_http_upstream_ha_init_sticky(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_http_upstream_ha_route_t  *rt;

    if (hcf->sticky.routes && hcf->sticky.mode == 0) {
        rt = hcf->sticky.routes->elts;
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ha_route\" needs \"ha_sticky\" in upstream \"%V\" "
                      "in %V:%ui", &us->host, &rt[0].file, rt[0].line);
        return NGX_ERROR;
    }

    hcf->sticky.state_file = (hcf->hmcf != NULL && hcf->hmcf->state.file.len)
                             ? &hcf->hmcf->state.file : NULL;

    /* with nginx's own "sticky" about (1.29.6+), every upstream keeps ids */

    hcf->ha.conf.sessions = (hcf->sticky.mode != 0) || HAB_STOCK_SID;

    return NGX_OK;
}


/* once the servers are known: a route that names no server is refused */

ngx_int_t
ngx_http_upstream_ha_check_routes(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_uint_t                     i;
    ngx_http_upstream_ha_route_t  *rt;

    if (hcf->sticky.routes == NULL || hcf->ha.resolve || hcf->hosts) {
        return NGX_OK;
    }

    rt = hcf->sticky.routes->elts;

    for (i = 0; i < hcf->sticky.routes->nelts; i++) {
        if (!rt[i].used) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_route: no server \"%V\" in upstream \"%V\" "
                          "in %V:%ui", &rt[i].server, &us->host,
                          &rt[i].file, rt[i].line);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* per request: the session the request names, before its first try */

void
ngx_http_upstream_ha_sticky_init_peer(ngx_http_upstream_ha_peer_data_t *hp)
{
    ngx_http_upstream_ha_sticky_conf_t  *scf;

    scf = &hp->conf->sticky;

    ngx_str_null(&hp->sid);
    hp->sid_hash = 0;
    hp->picked_sid = 0;
    hp->cookie = NULL;
    hp->learnt = 0;

    if (scf->mode == NGX_HTTP_UPSTREAM_HA_STICKY_NONE) {
        return;
    }

    if (scf->header) {
        ngx_http_set_ctx(hp->request, hp, ngx_http_upstream_ha_module);
    }

    if (ngx_http_upstream_ha_sticky_value(hp->request, scf->lookup, &hp->sid)
        != NGX_OK)
    {
        return;
    }

    if (scf->mode == NGX_HTTP_UPSTREAM_HA_STICKY_LEARN) {
        if (scf->learn != NULL) {
            hp->sid_hash = hab_learn_lookup(scf->learn, hp->sid.data,
                                            hp->sid.len, ngx_current_msec);
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, hp->request->connection->log, 0,
                       "ha sticky: session \"%V\" %s", &hp->sid,
                       hp->sid_hash ? "found" : "not found");
    }
}


/* the first non-empty variable of vars */

static ngx_int_t
ngx_http_upstream_ha_sticky_value(ngx_http_request_t *r, ngx_array_t *vars,
    ngx_str_t *value)
{
    ngx_int_t                  *index;
    ngx_uint_t                  i;
    ngx_http_variable_value_t  *v;

    index = vars->elts;

    for (i = 0; i < vars->nelts; i++) {

        v = ngx_http_get_flushed_variable(r, index[i]);

        if (v == NULL || v->not_found || v->len == 0) {
            continue;
        }

        value->data = v->data;
        value->len = v->len;

        return NGX_OK;
    }

    ngx_str_null(value);

    return NGX_DECLINED;
}


/* a try's pick: the server the request is bound to while it can take it */

hab_result
ngx_http_upstream_ha_sticky_pick(ngx_http_upstream_ha_peer_data_t *hp,
    ngx_peer_connection_t *pc, hab_pick *pick)
{
    ngx_http_upstream_ha_srv_conf_t  *hcf;

    hcf = hp->conf;

#if (HAB_STOCK_SID)

    /* nginx's own "sticky" names the server it wants */

    if (pc->hint != NULL && pc->hint->len) {
        return hab_attempt_pick_bound(hcf->ha.zone, hp->attempt, hp->key.data,
                                      hp->key.len, pc->hint->data,
                                      pc->hint->len, 0, ngx_current_msec,
                                      pick);
    }

#endif

    if (hcf->sticky.mode == NGX_HTTP_UPSTREAM_HA_STICKY_NONE) {
        return hab_attempt_pick(hcf->ha.zone, hp->attempt, hp->key.data,
                                hp->key.len, ngx_current_msec, pick);
    }

    if (hcf->sticky.mode == NGX_HTTP_UPSTREAM_HA_STICKY_LEARN) {
        return hab_attempt_pick_bound(hcf->ha.zone, hp->attempt, hp->key.data,
                                      hp->key.len, NULL, 0, hp->sid_hash,
                                      ngx_current_msec, pick);
    }

    return hab_attempt_pick_bound(hcf->ha.zone, hp->attempt, hp->key.data,
                                  hp->key.len, hp->sid.len ? hp->sid.data
                                                           : NULL,
                                  hp->sid.len, 0, ngx_current_msec, pick);
}


/*
 * After a pick: cookie mode tells the client where it is bound (a failure
 * to build the header is logged; the request goes on unbound)
 */

void
ngx_http_upstream_ha_sticky_picked(ngx_http_upstream_ha_peer_data_t *hp,
    ngx_peer_connection_t *pc, hab_pick *pick)
{
#if (HAB_STOCK_SID)
    hab_sid   sid;
    u_char   *p;

    /* nginx's own "sticky" reads the chosen server's id back */

    pc->sid = NULL;

    if (hab_attempt_sid(hp->conf->ha.zone, hp->attempt, pick->peer, &sid)
        == HAB_OK
        && sid.len)
    {
        p = ngx_pnalloc(hp->request->pool, sid.len);
        if (p != NULL) {
            ngx_memcpy(p, sid.data, sid.len);
            hp->stock_sid.data = p;
            hp->stock_sid.len = sid.len;
            pc->sid = &hp->stock_sid;
        }
    }
#endif

    if (hp->conf->sticky.mode == NGX_HTTP_UPSTREAM_HA_STICKY_NONE) {
        return;
    }

    if (ngx_http_upstream_ha_sticky_cookie_insert(hp, pick) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, hp->request->connection->log, 0,
                      "ha sticky: no cookie set for upstream \"%V\"",
                      hp->conf->ha.name);
    }
}


static ngx_int_t
ngx_http_upstream_ha_sticky_cookie_insert(
    ngx_http_upstream_ha_peer_data_t *hp, hab_pick *pick)
{
    size_t                               len;
    u_char                              *data, *p;
    hab_sid                              sid;
    ngx_str_t                            domain, samesite;
    ngx_table_elt_t                     *h;
    ngx_http_request_t                  *r;
    ngx_http_upstream_ha_sticky_conf_t  *scf;

    scf = &hp->conf->sticky;
    r = hp->request;

    if (hab_attempt_sid(hp->conf->ha.zone, hp->attempt, pick->peer, &sid)
        != HAB_OK)
    {
        hp->picked_sid = 0;
        return NGX_ERROR;
    }

    hp->picked_sid = sid.hash;

    if (scf->mode != NGX_HTTP_UPSTREAM_HA_STICKY_COOKIE || sid.len == 0) {
        return NGX_OK;
    }

    len = scf->cookie_name.len + 1 + sid.len + scf->path.len;

    ngx_str_null(&domain);

    if (scf->domain != NULL) {
        if (ngx_http_complex_value(r, scf->domain, &domain) != NGX_OK) {
            return NGX_ERROR;
        }

        if (domain.len) {
            len += sizeof("; domain=") - 1 + domain.len;
        }
    }

    if (scf->expires != NGX_CONF_UNSET) {
        len += sizeof(ngx_http_upstream_ha_expires_max) - 1 + NGX_TIME_T_LEN;
    }

    if (scf->httponly) {
        len += sizeof("; httponly") - 1;
    }

    if (scf->secure) {
        len += sizeof("; secure") - 1;
    }

    ngx_str_null(&samesite);

    if (scf->samesite != NULL) {
        if (ngx_http_complex_value(r, scf->samesite, &samesite) != NGX_OK) {
            return NGX_ERROR;
        }

        /* a variable's value that is none of the three: nginx's "strict" */

        if (samesite.len
            && ngx_http_upstream_ha_sticky_samesite(&samesite) != NGX_OK)
        {
            ngx_str_set(&samesite, "strict");
        }

        if (samesite.len) {
            len += sizeof("; samesite=") - 1 + samesite.len;
        }
    }

    data = ngx_pnalloc(r->pool, len);
    if (data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_copy(data, scf->cookie_name.data, scf->cookie_name.len);
    *p++ = '=';
    p = ngx_copy(p, sid.data, sid.len);

    if (scf->expires == NGX_HTTP_UPSTREAM_HA_EXPIRES_MAX) {
        p = ngx_cpymem(p, ngx_http_upstream_ha_expires_max,
                       sizeof(ngx_http_upstream_ha_expires_max) - 1);

    } else if (scf->expires != NGX_CONF_UNSET) {
        p = ngx_cpymem(p, "; expires=", sizeof("; expires=") - 1);
        p = ngx_http_cookie_time(p, ngx_time() + scf->expires);
        p = ngx_sprintf(p, "; max-age=%T", scf->expires);
    }

    if (domain.len) {
        p = ngx_cpymem(p, "; domain=", sizeof("; domain=") - 1);
        p = ngx_copy(p, domain.data, domain.len);
    }

    if (scf->httponly) {
        p = ngx_cpymem(p, "; httponly", sizeof("; httponly") - 1);
    }

    if (scf->secure) {
        p = ngx_cpymem(p, "; secure", sizeof("; secure") - 1);
    }

    if (samesite.len) {
        p = ngx_cpymem(p, "; samesite=", sizeof("; samesite=") - 1);
        p = ngx_copy(p, samesite.data, samesite.len);
    }

    p = ngx_copy(p, scf->path.data, scf->path.len);

    /* one Set-Cookie per request: a retry's pick replaces the first's */

    h = hp->cookie;

    if (h == NULL) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        ngx_str_set(&h->key, "Set-Cookie");

        hp->cookie = h;
    }

    h->value.len = p - data;
    h->value.data = data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ha sticky: set cookie \"%V\"", &h->value);

    return NGX_OK;
}


/*
 * learn: a response names a session (the create variables, e.g. a cookie
 * the server set) or refreshes the one the request named; the table maps
 * it to the server that answered
 */

void
ngx_http_upstream_ha_sticky_learn(ngx_http_upstream_ha_peer_data_t *hp)
{
    ngx_str_t                            id;
    ngx_uint_t                           create;
    ngx_http_upstream_ha_sticky_conf_t  *scf;

    scf = &hp->conf->sticky;

    if (scf->learn == NULL || hp->picked_sid == 0 || hp->learnt) {
        return;
    }

    if (ngx_http_upstream_ha_sticky_value(hp->request, scf->create, &id)
        == NGX_OK)
    {
        create = 1;

    } else if (hp->sid.len) {
        id = hp->sid;
        create = 0;

    } else {
        return;
    }

    hp->learnt = 1;

    (void) hab_learn_learn(scf->learn, id.data, id.len, hp->picked_sid,
                           ngx_current_msec, (uint32_t) create);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, hp->request->connection->log, 0,
                   "ha sticky: %s session \"%V\"",
                   create ? "learnt" : "refreshed", &id);
}


/*
 * "learn ... header": the session is learnt when the response header is
 * on its way to the client, not when the upstream request ends (nginx
 * 1.22-1.28 have no header notification for balancers; a header filter
 * sees the same moment)
 */

ngx_int_t
ngx_http_upstream_ha_sticky_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_upstream_ha_sticky_header_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_ha_sticky_header_filter(ngx_http_request_t *r)
{
    ngx_http_upstream_ha_peer_data_t  *hp;

    /* set by the request's init_peer only for "learn ... header" */

    hp = ngx_http_get_module_ctx(r, ngx_http_upstream_ha_module);

    /* a header the server sent (not one nginx made after a failure) */

    if (hp != NULL && r->upstream != NULL && r->upstream->state != NULL
        && r->upstream->state->header_time != (ngx_msec_t) -1)
    {
        ngx_http_upstream_ha_sticky_learn(hp);
    }

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_upstream_ha_learn_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_upstream_ha_sticky_conf_t  *oscf = data;

    size_t                               len;
    u_char                              *mem;
    uint64_t                             carried;
    hab_learn                           *old;
    hab_result                           rc;
    ngx_slab_pool_t                     *shpool;
    ngx_http_upstream_ha_sticky_conf_t  *scf;

    scf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (oscf) {
        if (oscf->host.len != scf->host.len
            || ngx_strncmp(oscf->host.data, scf->host.data, scf->host.len)
               != 0)
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "sticky zone \"%V\" is used in upstream \"%V\" "
                          "while previously it was used in upstream \"%V\"",
                          &shm_zone->shm.name, &scf->host, &oscf->host);
            return NGX_ERROR;
        }

        /* a reload with the same zone: its sessions stay */

        rc = hab_learn_attach(oscf->learn_mem, oscf->learn_len, scf->timeout,
                              &scf->learn);
        if (rc != HAB_OK) {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "sticky zone \"%V\": cannot reuse: %s",
                          &shm_zone->shm.name, hab_result_str(rc));
            return NGX_ERROR;
        }

        scf->learn_mem = oscf->learn_mem;
        scf->learn_len = oscf->learn_len;

        return NGX_OK;
    }

    /* the slab pool's own pages first: what is left holds the table */

    len = shm_zone->shm.size - (shpool->start - shm_zone->shm.addr);
    len = hab_learn_size(hab_learn_capacity(len - ngx_pagesize));

    mem = ngx_slab_alloc(shpool, len);
    if (mem == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "sticky zone \"%V\": cannot allocate %uz bytes",
                      &shm_zone->shm.name, len);
        return NGX_ERROR;
    }

    rc = hab_learn_init(mem, len, scf->timeout, &scf->learn);
    if (rc != HAB_OK) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "sticky zone \"%V\": %s", &shm_zone->shm.name,
                      hab_result_str(rc));
        return NGX_ERROR;
    }

    scf->learn_mem = mem;
    scf->learn_len = len;

    /* a reload that resized the zone: the old one's sessions move over */

    old = ngx_http_upstream_ha_old_learn(shm_zone);

    if (old != NULL) {
        if (hab_learn_carry(scf->learn, old, ngx_current_msec, &carried)
            == HAB_OK)
        {
            ngx_log_error(NGX_LOG_INFO, shm_zone->shm.log, 0,
                          "sticky zone \"%V\": %uL sessions kept",
                          &shm_zone->shm.name, carried);
        }

        return NGX_OK;
    }

    /* a fresh start: the sessions the last master saved */

    ngx_http_upstream_ha_restore_sessions(shm_zone, scf);

    return NGX_OK;
}


static void
ngx_http_upstream_ha_restore_sessions(ngx_shm_zone_t *shm_zone,
    ngx_http_upstream_ha_sticky_conf_t *scf)
{
    uint64_t     restored;
    hab_buf     *err;
    hab_result   rc;

    if (scf->state_file == NULL) {
        return;
    }

    err = NULL;
    restored = 0;

    rc = hab_sessions_restore(scf->state_file->data, scf->state_file->len,
                              shm_zone->shm.name.data, shm_zone->shm.name.len,
                              scf->learn, ngx_current_msec, &restored, &err);

    if (rc != HAB_OK) {
        if (err != NULL) {
            ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                          "sticky zone \"%V\": sessions file %*s",
                          &shm_zone->shm.name, hab_buf_len(err),
                          hab_buf_data(err));
            hab_buf_free(err);
        }

        return;
    }

    if (restored) {
        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "sticky zone \"%V\": %uL sessions restored",
                      &shm_zone->shm.name, restored);
    }
}


static hab_learn *
ngx_http_upstream_ha_old_learn(ngx_shm_zone_t *shm_zone)
{
    ngx_shm_zone_t                      *zone;
    ngx_http_upstream_ha_sticky_conf_t  *oscf;

    zone = ngx_upstream_ha_old_shm_zone(shm_zone, shm_zone->shm.name.len);
    if (zone == NULL) {
        return NULL;
    }

    oscf = zone->data;

    return oscf->learn;
}
