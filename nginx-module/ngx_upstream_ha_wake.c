
/*
 * Copyright (C) ha-balancer authors
 *
 * Wake channels: how one worker wakes another whose request waits in an
 * ha_queue (docs/queue-design.md, section 3).  The master creates
 * NGX_UPSTREAM_HA_WAKE_CHANNELS eventfds (pipes where there is no
 * eventfd) once, in init_module, before it forks any worker; they live in
 * this file's statics, which survive reloads (nginx dlopen()s the module
 * of the new cycle before it dlclose()s the old one), so that every
 * worker of every cycle has the same descriptors.  CLOEXEC keeps them out
 * of the binary a USR2 upgrade starts.
 *
 * A worker's channel is its slot in nginx's process table
 * (ngx_process_slot): the master gives each live process its own, old
 * and new cycles alike, and reuses one only once its process is reaped.
 * A worker whose slot has no channel (more than
 * NGX_UPSTREAM_HA_WAKE_CHANNELS processes at once) cannot be woken: its
 * waiters are found by its watchdog tick instead.
 *
 * Waiting costs no system call; a wake is one write() to the waiter's
 * channel, or a posted event when the waiter is in the waking worker.
 * Protocol independent: HTTP now, stream later.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_channel.h>

#if (NGX_HAVE_EVENTFD)
#include <sys/eventfd.h>
#endif

#include "ngx_upstream_ha_common.h"


static void ngx_upstream_ha_wake_read(ngx_event_t *ev);
static void ngx_upstream_ha_wake_posted(ngx_event_t *ev);


typedef struct {
    ngx_fd_t                  read;
    ngx_fd_t                  write;     /* the same descriptor for eventfd */
} ngx_upstream_ha_wake_fds_t;


static ngx_upstream_ha_wake_fds_t  ngx_upstream_ha_wake_fds[
                                        NGX_UPSTREAM_HA_WAKE_CHANNELS];
static ngx_uint_t                  ngx_upstream_ha_wake_n;

/* in a worker */
static uint32_t                    ngx_upstream_ha_wake_mine = HAB_NO_CHANNEL;
static ngx_upstream_ha_wake_pt     ngx_upstream_ha_wake_handler;
static ngx_event_t                 ngx_upstream_ha_wake_self;


/*
 * In the master (init_module), once per master: every channel, before
 * any worker is forked.  An error is fatal: queues could not wake.
 */

ngx_int_t
ngx_upstream_ha_wake_init_master(ngx_cycle_t *cycle)
{
    ngx_uint_t  i;
#if !(NGX_HAVE_EVENTFD)
    int         fds[2];
#endif

    if (ngx_upstream_ha_wake_n) {
        return NGX_OK;
    }

    for (i = 0; i < NGX_UPSTREAM_HA_WAKE_CHANNELS; i++) {

#if (NGX_HAVE_EVENTFD)
        ngx_upstream_ha_wake_fds[i].read = eventfd(0, EFD_NONBLOCK
                                                      |EFD_CLOEXEC);
        if (ngx_upstream_ha_wake_fds[i].read == -1) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "eventfd() for the ha_queue wake channels failed");
            goto failed;
        }

        ngx_upstream_ha_wake_fds[i].write = ngx_upstream_ha_wake_fds[i].read;
#else
        if (pipe(fds) == -1) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "pipe() for the ha_queue wake channels failed");
            goto failed;
        }

        if (ngx_nonblocking(fds[0]) == -1
            || ngx_nonblocking(fds[1]) == -1
            || fcntl(fds[0], F_SETFD, FD_CLOEXEC) == -1
            || fcntl(fds[1], F_SETFD, FD_CLOEXEC) == -1)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "setting the ha_queue wake channels failed");
            (void) close(fds[0]);
            (void) close(fds[1]);
            goto failed;
        }

        ngx_upstream_ha_wake_fds[i].read = fds[0];
        ngx_upstream_ha_wake_fds[i].write = fds[1];
#endif
    }

    ngx_upstream_ha_wake_n = NGX_UPSTREAM_HA_WAKE_CHANNELS;

    return NGX_OK;

failed:

    while (i--) {
        (void) close(ngx_upstream_ha_wake_fds[i].read);

        if (ngx_upstream_ha_wake_fds[i].write
            != ngx_upstream_ha_wake_fds[i].read)
        {
            (void) close(ngx_upstream_ha_wake_fds[i].write);
        }
    }

    return NGX_ERROR;
}


/*
 * In a worker (init_process): listens on its own channel; handler runs
 * for every wake, from the channel or posted by the worker itself.  The
 * channel (HAB_NO_CHANNEL: none) is what hab_queue_set_wake() records.
 */

uint32_t
ngx_upstream_ha_wake_init_worker(ngx_cycle_t *cycle,
    ngx_upstream_ha_wake_pt handler)
{
    ngx_uint_t  s;

    ngx_upstream_ha_wake_handler = handler;

    ngx_upstream_ha_wake_self.handler = ngx_upstream_ha_wake_posted;
    ngx_upstream_ha_wake_self.log = cycle->log;
    ngx_upstream_ha_wake_self.data = NULL;

    if (ngx_upstream_ha_wake_mine != HAB_NO_CHANNEL) {
        return ngx_upstream_ha_wake_mine;
    }

    s = (ngx_process == NGX_PROCESS_SINGLE) ? 0 : (ngx_uint_t) ngx_process_slot;

    if (s >= ngx_upstream_ha_wake_n) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "no ha_queue wake channel for process slot %ui "
                      "(%ui channels): its waiters are looked at every "
                      "%ui ms", s, ngx_upstream_ha_wake_n,
                      (ngx_uint_t) NGX_UPSTREAM_HA_WAKE_POLL);
        return HAB_NO_CHANNEL;
    }

    if (ngx_add_channel_event(cycle, ngx_upstream_ha_wake_fds[s].read,
                              NGX_READ_EVENT, ngx_upstream_ha_wake_read)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "cannot listen on the ha_queue wake channel %ui", s);
        return HAB_NO_CHANNEL;
    }

    ngx_upstream_ha_wake_mine = (uint32_t) s;

    return ngx_upstream_ha_wake_mine;
}


/* the worker's channel, HAB_NO_CHANNEL if it has none */

uint32_t
ngx_upstream_ha_wake_channel(void)
{
    return ngx_upstream_ha_wake_mine;
}


/*
 * A descriptor for placeholder connections (ngx_get_connection() with
 * shared set: never closed, never registered), valid in every process.
 */

ngx_fd_t
ngx_upstream_ha_wake_placeholder(void)
{
    if (ngx_upstream_ha_wake_n == 0) {
        return NGX_INVALID_FILE;
    }

    if (ngx_upstream_ha_wake_mine != HAB_NO_CHANNEL) {
        return ngx_upstream_ha_wake_fds[ngx_upstream_ha_wake_mine].read;
    }

    return ngx_upstream_ha_wake_fds[0].write;
}


/* delivers a wake the core gave: to this worker, or to another's channel */

void
ngx_upstream_ha_wake(hab_wake *wake, ngx_log_t *log)
{
    uint64_t  one;
    ssize_t   n;

    if (wake->slot == HAB_NO_SLOT || wake->channel == HAB_NO_CHANNEL
        || wake->channel >= ngx_upstream_ha_wake_n)
    {
        /* nobody, or a worker without a channel: its tick finds it */
        return;
    }

    if (wake->channel == ngx_upstream_ha_wake_mine) {
        if (!ngx_upstream_ha_wake_self.posted) {
            ngx_post_event(&ngx_upstream_ha_wake_self, &ngx_posted_events);
        }

        return;
    }

    one = 1;

    n = write(ngx_upstream_ha_wake_fds[wake->channel].write, &one,
              sizeof(uint64_t));

    if (n == -1 && ngx_errno != NGX_EAGAIN) {

        /* EAGAIN: the counter (or the pipe) is full, a wake is pending */

        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "write() to ha_queue wake channel %uD failed",
                      wake->channel);
    }
}


static void
ngx_upstream_ha_wake_read(ngx_event_t *ev)
{
    u_char             buf[64];
    ssize_t            n;
    ngx_connection_t  *c;

    c = ev->data;

    /* eventfd: 8 bytes reset the counter; a pipe: drain what is there */

    do {
        n = read(c->fd, buf, sizeof(buf));
    } while (n == sizeof(buf));

    if (ngx_upstream_ha_wake_handler) {
        ngx_upstream_ha_wake_handler(ev->log);
    }
}


static void
ngx_upstream_ha_wake_posted(ngx_event_t *ev)
{
    if (ngx_upstream_ha_wake_handler) {
        ngx_upstream_ha_wake_handler(ev->log);
    }
}
