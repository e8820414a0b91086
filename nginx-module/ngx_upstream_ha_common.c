
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


/* panic mode entered or left, as the core reported it */

void
ngx_http_upstream_ha_log_panic(ngx_log_t *log, ngx_str_t *name,
    hab_health_conf *health, hab_panic_report *panic)
{
    if (panic->change == HAB_PANIC_MODE_ENTERED) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "upstream \"%V\" in panic: %uD of %uD servers "
                      "healthy, below %uD%%, balancing over all of them",
                      name, panic->healthy, panic->total,
                      health->panic_percent);

    } else if (panic->change == HAB_PANIC_MODE_LEFT) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "upstream \"%V\" out of panic: %uD of %uD servers "
                      "healthy", name, panic->healthy, panic->total);
    }
}
