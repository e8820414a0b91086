
/*
 * Copyright (C) ha-balancer authors
 *
 * ngx_stream_upstream_ha_module: ha_balance in stream{} (TCP and UDP),
 * docs/stream-design.md.  Built into the same .so as
 * ngx_http_upstream_ha_module (nginx-module/config); no directives yet.
 *
 * The .so refers to the stream core only weakly
 * (ngx_stream_upstream_ha_weak.h), so that it loads, and its http part
 * works, in an nginx without stream.  If nginx has a stream{} block but
 * this .so was loaded before a dynamic ngx_stream_module.so, the stream
 * symbols are NULL here (weak references are bound once, when nginx
 * dlopen()s this .so): ngx_stream_block() of the stream module loaded
 * later still calls this module's preconfiguration, which then marks the
 * module unusable and warns, naming the fix; a stream{} block that does
 * not use this module keeps working as before (the stream directives,
 * when they come, refuse to run without ngx_stream_upstream_ha_usable).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_stream_upstream_ha_weak.h"


static ngx_int_t ngx_stream_upstream_ha_preconfiguration(ngx_conf_t *cf);


/* the stream core's symbols were bound: this module may be used */
ngx_uint_t  ngx_stream_upstream_ha_usable;


static ngx_stream_module_t  ngx_stream_upstream_ha_module_ctx = {
    ngx_stream_upstream_ha_preconfiguration, /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL                                   /* merge server configuration */
};


ngx_module_t  ngx_stream_upstream_ha_module = {
    NGX_MODULE_V1,
    &ngx_stream_upstream_ha_module_ctx,    /* module context */
    NULL,                                  /* module directives */
    NGX_STREAM_MODULE,                     /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * The gate: the first of this module's code that ngx_stream_block() runs
 * (after create_*_conf, which only allocate), before any directive of
 * stream{} is parsed.  Without the stream core's symbols the module stays
 * unusable, with a warning: a configuration that does not use it in
 * stream{} must not fail for the order of its load_module lines.
 */

static ngx_int_t
ngx_stream_upstream_ha_preconfiguration(ngx_conf_t *cf)
{
    if (&ngx_stream_module == NULL
        || &ngx_stream_core_module == NULL
        || &ngx_stream_upstream_module == NULL)
    {
        ngx_stream_upstream_ha_usable = 0;

        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "ha_balance is not available in stream{}: "
                           "ngx_stream_module must be loaded before "
                           "ngx_http_upstream_ha_module.so (put its "
                           "load_module line first)");
        return NGX_OK;
    }

    ngx_stream_upstream_ha_usable = 1;

    return NGX_OK;
}
