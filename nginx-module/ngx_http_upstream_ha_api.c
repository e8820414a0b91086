
/*
 * Copyright (C) ha-balancer authors
 *
 * The operator's surfaces of ha_balance: the "ha_api" content handler (the
 * NGINX Plus-style API, Prometheus metrics and the status page, answered by
 * the Rust library: hab_api_handle()) and "ha_state_file" (admin and
 * health state kept across restarts, written by the library after each
 * accepted change, and here after each health transition).  Nothing here
 * touches a request's balancing.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ha_balancer.h>

#include "ngx_http_upstream_ha_module.h"


static ngx_int_t ngx_http_upstream_ha_api_handler(ngx_http_request_t *r);
static void ngx_http_upstream_ha_api_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_upstream_ha_api_respond(ngx_http_request_t *r,
    u_char *body, size_t len);
static void ngx_http_upstream_ha_buf_cleanup(void *data);
static ngx_uint_t ngx_http_upstream_ha_accepts_html(ngx_http_request_t *r);
static void ngx_http_upstream_ha_api_nginx(ngx_http_request_t *r,
    ngx_http_upstream_ha_main_conf_t *hmcf, ngx_str_t *addr,
    hab_api_nginx *nginx);

static void ngx_http_upstream_ha_state_cleanup(void *data);


char *
ngx_http_upstream_ha_state_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_ha_main_conf_t  *hmcf = conf;

    u_char              *p;
    ngx_str_t           *value, dir;
    ngx_file_info_t      fi;
    ngx_pool_cleanup_t  *cln;

    if (hmcf->state.file.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid state file \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    hmcf->state.file = value[1];

    if (ngx_conf_full_name(cf->cycle, &hmcf->state.file, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* the file is written beside itself: its directory must exist */

    p = hmcf->state.file.data + hmcf->state.file.len;

    while (p > hmcf->state.file.data && *(p - 1) != '/') {
        p--;
    }

    if (p == hmcf->state.file.data + hmcf->state.file.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid state file \"%V\": no file name",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    dir.len = (p - hmcf->state.file.data > 1) ? p - hmcf->state.file.data - 1
                                               : 1;
    dir.data = ngx_pnalloc(cf->pool, dir.len + 1);
    if (dir.data == NULL) {
        return NGX_CONF_ERROR;
    }

    (void) ngx_cpystrn(dir.data, hmcf->state.file.data, dir.len + 1);

    if (ngx_file_info(dir.data, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "state file \"%V\": directory \"%V\" "
                           ngx_file_info_n " failed", &hmcf->state.file,
                           &dir);
        return NGX_CONF_ERROR;
    }

    if (!ngx_is_dir(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "state file \"%V\": \"%V\" is not a directory",
                           &hmcf->state.file, &dir);
        return NGX_CONF_ERROR;
    }

    /* the parsed file lives in the master's heap: free it with the cycle */

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_upstream_ha_state_cleanup;
    cln->data = hmcf;

    return NGX_CONF_OK;
}


static void
ngx_http_upstream_ha_state_cleanup(void *data)
{
    ngx_http_upstream_ha_main_conf_t  *hmcf = data;

    hab_state_free(hmcf->state.parsed);
    hmcf->state.parsed = NULL;
}


/*
 * A health transition: with ha_state_file, the file is rewritten so that a
 * restart or a binary upgrade starts from the health known now.
 */

void
ngx_http_upstream_ha_save_state(ngx_http_upstream_ha_srv_conf_t *hcf)
{
    ngx_uint_t                         n;
    hab_buf                           *err;
    hab_api_upstream                  *ups;
    ngx_http_upstream_main_conf_t     *umcf;
    ngx_http_upstream_ha_main_conf_t  *hmcf;

    hmcf = hcf->hmcf;

    if (hmcf == NULL || hmcf->state.file.len == 0) {
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

    if (hab_state_save(ups, n, hmcf->state.file.data, hmcf->state.file.len,
                       &err)
        != HAB_OK)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "ha_check: %*s",
                      hab_buf_len(err), hab_buf_data(err));
        hab_buf_free(err);
    }

    ngx_free(ups);
}


void *
ngx_http_upstream_ha_create_api_conf(ngx_conf_t *cf)
{
    ngx_http_upstream_ha_api_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_ha_api_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enable = NGX_CONF_UNSET;
    conf->write = NGX_CONF_UNSET;
    conf->request_id = NGX_CONF_UNSET;

    return conf;
}


char *
ngx_http_upstream_ha_merge_api_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_upstream_ha_api_conf_t  *prev = parent;
    ngx_http_upstream_ha_api_conf_t  *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /*
     * the API is served where ha_api is written: nothing is inherited,
     * but by the block of limit_except, which is that same location
     * (as proxy_pass sets its handler there)
     */

    if (clcf->lmt_excpt && conf->enable == NGX_CONF_UNSET
        && prev->enable == 1)
    {
        conf->enable = 1;
        conf->write = prev->write;
        conf->prefix = prev->prefix;
        conf->request_id = prev->request_id;

        if (clcf->handler == NULL) {
            clcf->handler = ngx_http_upstream_ha_api_handler;
        }
    }

    ngx_conf_init_value(conf->enable, 0);
    ngx_conf_init_value(conf->write, 0);

    return NGX_CONF_OK;
}


/* ha_api [write=on|off] */

char *
ngx_http_upstream_ha_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_ha_api_conf_t  *hacf = conf;

    char                      *kind;
    ngx_str_t                 *value, name;
    ngx_http_core_loc_conf_t  *clcf;

    if (hacf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;
    hacf->enable = 1;
    hacf->write = 0;

    if (cf->args->nelts == 2) {

        if (ngx_strcmp(value[1].data, "write=on") == 0) {
            hacf->write = 1;

        } else if (ngx_strcmp(value[1].data, "write=off") != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /*
     * requests are routed by the path below the location's prefix:
     * a regular expression or a named location has none
     */

    kind = clcf->named ? "named" : NULL;
#if (NGX_PCRE)
    if (clcf->regex) {
        kind = "regex";
    }
#endif

    if (kind != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ha_api\" cannot be used in a %s location "
                           "\"%V\", use a prefix location such as "
                           "\"location /api/\"", kind, &clcf->name);
        return NGX_CONF_ERROR;
    }

    /* the NGINX Plus API's error bodies carry the request's id */

    ngx_str_set(&name, "request_id");

    hacf->request_id = ngx_http_get_variable_index(cf, &name);
    if (hacf->request_id == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    clcf->handler = ngx_http_upstream_ha_api_handler;
    hacf->prefix = clcf->name;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_upstream_ha_api_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (r->method == NGX_HTTP_PATCH
#ifdef HAB_API_POST
        || r->method == NGX_HTTP_POST
#endif
       )
    {
        r->request_body_in_single_buf = 1;

        rc = ngx_http_read_client_request_body(r,
                                               ngx_http_upstream_ha_api_body);
        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_upstream_ha_api_respond(r, NULL, 0);
}


/* the PATCH (or POST) body, read in memory (small JSON documents only) */

#define NGX_HTTP_UPSTREAM_HA_API_MAX_BODY  65536

static void
ngx_http_upstream_ha_api_body(ngx_http_request_t *r)
{
    u_char       *body, *p;
    size_t        len;
    ngx_chain_t  *cl;

    if (r->request_body == NULL || r->request_body->temp_file) {
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE);
        return;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += cl->buf->last - cl->buf->pos;
    }

    if (len > NGX_HTTP_UPSTREAM_HA_API_MAX_BODY) {
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE);
        return;
    }

    body = NULL;

    if (len) {
        body = ngx_pnalloc(r->pool, len);
        if (body == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        p = body;

        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    ngx_http_finalize_request(r, ngx_http_upstream_ha_api_respond(r, body,
                                                                   len));
}


static ngx_int_t
ngx_http_upstream_ha_api_respond(ngx_http_request_t *r, u_char *body,
    size_t len)
{
    u_char                             text[NGX_SOCKADDR_STRLEN];
    size_t                             n;
    ngx_int_t                          rc;
    ngx_buf_t                         *b;
    ngx_str_t                          path, addr;
    ngx_uint_t                         i, j;
    ngx_chain_t                       *out, *cl, **ll;
    hab_result                         hrc;
    const uint8_t                     *data;
    ngx_pool_cleanup_t                *cln;
    hab_api_request                    req;
    hab_api_response                   res;
    hab_api_upstream                  *ups;
    ngx_http_variable_value_t         *vv;
    ngx_http_upstream_main_conf_t     *umcf;
    ngx_http_upstream_ha_api_conf_t   *hacf;
    ngx_http_upstream_ha_srv_conf_t   *hcf;
    ngx_http_upstream_ha_main_conf_t  *hmcf;

    hacf = ngx_http_get_module_loc_conf(r, ngx_http_upstream_ha_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_upstream_ha_module);
    umcf = ngx_http_get_module_main_conf(r, ngx_http_upstream_module);

    /*
     * the path below the location, as sent (percent-encoded, the API
     * decodes each segment, so "%2F" in a name is not a separator); the
     * decoded r->uri after a rewrite, or when the raw path does not start
     * with the location
     */

    path = r->valid_unparsed_uri ? r->unparsed_uri : r->uri;

    for (i = 0; i < path.len; i++) {
        if (path.data[i] == '?') {
            path.len = i;
            break;
        }
    }

    if (path.len < hacf->prefix.len
        || ngx_strncmp(path.data, hacf->prefix.data, hacf->prefix.len) != 0)
    {
        path = r->uri;
    }

    if (path.len >= hacf->prefix.len
        && ngx_strncmp(path.data, hacf->prefix.data, hacf->prefix.len) == 0)
    {
        path.data += hacf->prefix.len;
        path.len -= hacf->prefix.len;
    }

    ups = ngx_pnalloc(r->pool, (umcf->upstreams.nelts + 1)
                               * sizeof(hab_api_upstream));
    if (ups == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = ngx_http_upstream_ha_upstreams((ngx_cycle_t *) ngx_cycle, ups);

    ngx_memzero(&req, sizeof(hab_api_request));

    switch (r->method) {

    case NGX_HTTP_GET:
        req.method = HAB_API_GET;
        break;

    case NGX_HTTP_HEAD:
        req.method = HAB_API_HEAD;
        break;

    case NGX_HTTP_PATCH:
        req.method = HAB_API_PATCH;
        break;

    case NGX_HTTP_DELETE:
        req.method = HAB_API_DELETE;
        break;

#ifdef HAB_API_POST
    case NGX_HTTP_POST:
        req.method = HAB_API_POST;
        break;
#endif

    default:
        req.method = HAB_API_OTHER;
    }

    req.flags = hacf->write ? HAB_API_WRITE : 0;

    if (ngx_http_upstream_ha_accepts_html(r)) {
        req.flags |= HAB_API_HTML;
    }

    req.path = path.data;
    req.path_len = path.len;
    req.query = r->args.data;
    req.query_len = r->args.len;
    req.wall_ms = (uint64_t) ((int64_t) ngx_current_msec + hmcf->wall_offset);
    req.body = body;
    req.body_len = len;
    req.state_file = hmcf->state.file.data;
    req.state_file_len = hmcf->state.file.len;
    req.now_ms = ngx_current_msec;
    req.owner = (uint64_t) ngx_pid;
    req.alive = ngx_upstream_ha_alive;
    req.alive_data = NULL;

    if (hacf->request_id != NGX_CONF_UNSET) {
        vv = ngx_http_get_indexed_variable(r, hacf->request_id);

        if (vv != NULL && !vv->not_found) {
            req.request_id = vv->data;
            req.request_id_len = vv->len;
        }
    }

    addr.len = NGX_SOCKADDR_STRLEN;
    addr.data = text;

    ngx_http_upstream_ha_api_nginx(r, hmcf, &addr, &req.nginx);

    hrc = hab_api_handle(&req, ups, n, &res);
    if (hrc != HAB_OK) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ha_api: %s", hab_result_str(hrc));
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (res.log) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ha_api: %*s", hab_buf_len(res.log),
                      hab_buf_data(res.log));
        hab_buf_free(res.log);
    }

    /* an admin change: once, with the client (the log's context) */

    if (res.notice) {
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "ha_api: %*s", hab_buf_len(res.notice),
                      hab_buf_data(res.notice));
        hab_buf_free(res.notice);
    }

    /* a change (weight, drain, up): the queues' heads may use it */

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        j = 0;

        while ((hcf = ngx_http_upstream_ha_next_conf((ngx_cycle_t *) ngx_cycle,
                                                     &j))
               != NULL)
        {
            ngx_http_upstream_ha_queue_kick(hcf, r->connection->log);
        }
    }

    /* the body stays Rust's until the request ends: nginx sends its chunks */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        hab_buf_free(res.body);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_upstream_ha_buf_cleanup;
    cln->data = res.body;

    r->headers_out.status = res.status;

    switch (res.content_type) {

    case HAB_API_PROMETHEUS:
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");
        break;

    case HAB_API_HTML_PAGE:
        ngx_str_set(&r->headers_out.content_type, "text/html; charset=utf-8");
        break;

    case HAB_API_NO_BODY:
        r->header_only = 1;
        ngx_str_null(&r->headers_out.content_type);
        break;

    default:
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;

    if (res.content_type == HAB_API_NO_BODY) {
        r->headers_out.content_length_n = -1;
        return ngx_http_send_header(r);
    }

    r->headers_out.content_length_n = hab_buf_len(res.body);

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = NULL;
    out = NULL;
    ll = &out;

    for (i = 0; /* void */; i++) {
        len = hab_buf_chunk(res.body, i, &data);
        if (len == 0) {
            break;
        }

        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->pos = (u_char *) data;
        b->last = (u_char *) data + len;
        b->memory = 1;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        cl->next = NULL;
        *ll = cl;
        ll = &cl->next;
    }

    if (b == NULL) {
        return ngx_http_send_special(r, NGX_HTTP_LAST);
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    return ngx_http_output_filter(r, out);
}


static void
ngx_http_upstream_ha_buf_cleanup(void *data)
{
    hab_buf_free(data);
}


/*
 * nginx's own figures (the NGINX Plus API's "nginx", "processes",
 * "connections", "http/requests"): the local address is printed into
 * addr, without port; the stub_status counters when nginx has them
 */

static void
ngx_http_upstream_ha_api_nginx(ngx_http_request_t *r,
    ngx_http_upstream_ha_main_conf_t *hmcf, ngx_str_t *addr,
    hab_api_nginx *nginx)
{
    nginx->version = (const uint8_t *) NGINX_VERSION;
    nginx->version_len = sizeof(NGINX_VERSION) - 1;

    if (ngx_connection_local_sockaddr(r->connection, addr, 0) == NGX_OK) {
        nginx->address = addr->data;
        nginx->address_len = addr->len;
    }

    nginx->pid = (uint64_t) ngx_pid;
    nginx->ppid = (uint64_t) ngx_getppid();
    nginx->generation = hmcf->generation;
    nginx->load_wall_ms = hmcf->load_wall_ms;

    /* not known: the master does not say which workers replace dead ones */
    nginx->respawned = 0;

#if (NGX_STAT_STUB)

    nginx->stub = 1;
    nginx->accepted = (uint64_t) *ngx_stat_accepted;
    nginx->handled = (uint64_t) *ngx_stat_handled;
    nginx->active = (uint64_t) *ngx_stat_active;
    nginx->requests = (uint64_t) *ngx_stat_requests;
    nginx->reading = (uint64_t) *ngx_stat_reading;
    nginx->writing = (uint64_t) *ngx_stat_writing;
    nginx->waiting = (uint64_t) *ngx_stat_waiting;

#else

    nginx->stub = 0;

#endif
}


/* whether the client named text/html in Accept (a browser) */

static ngx_uint_t
ngx_http_upstream_ha_accepts_html(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Accept") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Accept",
                               sizeof("Accept") - 1) == 0
            && ngx_strlcasestrn(h[i].value.data,
                                h[i].value.data + h[i].value.len,
                                (u_char *) "text/html",
                                sizeof("text/html") - 1 - 1)
               != NULL)
        {
            return 1;
        }
    }
}
