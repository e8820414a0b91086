
/*
 * Copyright (C) ha-balancer authors
 *
 * What does not depend on the protocol balanced (HTTP here, stream
 * later), for the stream module to share.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_upstream_ha_module.h"


/* the core's liveness callback: whether a lease or ledger owner runs */

int
ngx_http_upstream_ha_alive(uint64_t owner, void *data)
{
    if (kill((ngx_pid_t) owner, 0) == 0) {
        return 1;
    }

    return ngx_errno != NGX_ESRCH;
}
