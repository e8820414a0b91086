
/*
 * Copyright (C) ha-balancer authors
 *
 * What does not depend on the protocol balanced (HTTP here, stream
 * later), for the stream module to share.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_upstream_ha_common.h"


/* the core's liveness callback: whether a lease or ledger owner runs */

int
ngx_upstream_ha_alive(uint64_t owner, void *data)
{
    if (kill((ngx_pid_t) owner, 0) == 0) {
        return 1;
    }

    return ngx_errno != NGX_ESRCH;
}


/* panic mode entered or left, as the core reported it */

void
ngx_upstream_ha_log_panic(ngx_log_t *log, ngx_str_t *name,
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


/* a time after "name=", in ms, 1 ms to 24 days (0 too if zero is set) */

ngx_int_t
ngx_upstream_ha_parse_time(ngx_str_t *value, size_t skip,
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


/*
 * "table_size=N": N prime, HAB_MAGLEV_MIN <= N <= HAB_MAGLEV_MAX (the
 * core's maglev::MIN_TABLE_SIZE and MAX_TABLE_SIZE, which check it again).
 * Trial division: at most 4,048 odd divisors below sqrt(65537011).
 */

ngx_int_t
ngx_upstream_ha_maglev_size(ngx_str_t *value)
{
    ngx_int_t  n, d;

    n = ngx_atoi(value->data + 11, value->len - 11);
    if (n == NGX_ERROR || n < HAB_MAGLEV_MIN || n > HAB_MAGLEV_MAX
        || n % 2 == 0)
    {
        return NGX_ERROR;
    }

    for (d = 3; d * d <= n; d += 2) {
        if (n % d == 0) {
            return NGX_ERROR;
        }
    }

    return n;
}


/*
 * The running cycle's zone (the one a reload replaces) of shm_zone's tag
 * whose name has shm_zone's length and first prefix bytes, with data of
 * its own: what a zone whose size or configuration changed carries its
 * state over from.  NULL at the first start.
 */

ngx_shm_zone_t *
ngx_upstream_ha_old_shm_zone(ngx_shm_zone_t *shm_zone, size_t prefix)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_shm_zone_t   *zone;

    if (ngx_cycle == NULL || ngx_cycle->shared_memory.part.elts == NULL) {
        return NULL;
    }

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }
            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].tag != shm_zone->tag
            || zone[i].data == NULL
            || zone[i].data == shm_zone->data
            || zone[i].shm.name.len != shm_zone->shm.name.len
            || ngx_strncmp(zone[i].shm.name.data, shm_zone->shm.name.data,
                           prefix)
               != 0)
        {
            continue;
        }

        return &zone[i];
    }

    return NULL;
}


/* CLOCK_MONOTONIC in nanoseconds: list ids, build times */

uint64_t
ngx_upstream_ha_monotonic_ns(void)
{
    struct timespec  ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return (uint64_t) ngx_time() * 1000000000;
    }

    return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}
