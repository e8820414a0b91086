
/*
 * Copyright (C) ha-balancer authors
 *
 * Every ngx_stream_* symbol this .so refers to, declared weak
 * (docs/stream-design.md, section 2).  The .so holds both
 * ngx_http_upstream_ha_module and ngx_stream_upstream_ha_module; nginx
 * dlopen()s it with RTLD_NOW, so one plain reference to a stream symbol
 * would make load_module fail in an nginx without stream, or where
 * ngx_stream_module.so is loaded after this module: the http part would
 * go with it.  A weak reference that nothing defines is NULL instead, and
 * stays NULL (it is bound once, at the dlopen()); the stream module's
 * preconfiguration (ngx_stream_upstream_ha_module.c) refuses stream{}
 * then.
 *
 * Include it after <ngx_stream.h>, which declares the symbols, in every
 * file that uses one; add each new stream symbol here.  make check-exports
 * fails on a .so with a non-weak ngx_stream_* reference ("U" in nm -D).
 */


#ifndef _NGX_STREAM_UPSTREAM_HA_WEAK_H_INCLUDED_
#define _NGX_STREAM_UPSTREAM_HA_WEAK_H_INCLUDED_


#include <ngx_stream.h>


/* the stream core, checked by the preconfiguration gate */
#pragma weak ngx_stream_module
#pragma weak ngx_stream_core_module
#pragma weak ngx_stream_upstream_module


#endif /* _NGX_STREAM_UPSTREAM_HA_WEAK_H_INCLUDED_ */
