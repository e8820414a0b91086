/*
 * Drives the ha_balancer C ABI exactly as nginx-module/ does: a
 * configuration built in C, a table in caller memory, per-request state
 * from a "pool", get/free per try.  Linked into tests/abi.rs, which calls
 * hab_abi_driver_run() and reports the line of the first failed check.
 */

#include <stdlib.h>
#include <string.h>

#include <ha_balancer.h>


int hab_abi_driver_run(void);


#define CHECK(cond)  do { if (!(cond)) { return __LINE__; } } while (0)


static void
peer_init(hab_peer_conf *p, const char *id, uint32_t weight, uint32_t flags)
{
    memset(p, 0, sizeof(*p));
    p->id = (const uint8_t *) id;
    p->id_len = strlen(id);
    p->server = (const uint8_t *) id;
    p->server_len = strlen(id);
    p->weight = weight;
    p->max_fails = 1;
    p->fail_timeout_ms = 10000;
    p->flags = flags;
}


static int
alive_all(uint64_t owner, void *data)
{
    (void) owner;
    (void) data;
    return 1;
}


static int
alive_none(uint64_t owner, void *data)
{
    (void) owner;
    (void) data;
    return 0;
}


static int
api_alive(uint64_t owner, void *data)
{
    (void) owner;
    (void) data;

    return 1;
}


/* one API request; the HTTP status, or -1 */

static int
api(hab_zone *t, uint32_t method, const char *path, const char *body,
    uint32_t flags)
{
    int                status;
    size_t             i, n, total;
    const uint8_t     *data;
    hab_api_request    req;
    hab_api_response   res;
    hab_api_upstream   up;

    memset(&req, 0, sizeof(req));
    req.method = method;
    req.flags = flags;
    req.path = (const uint8_t *) path;
    req.path_len = strlen(path);
    req.body = (const uint8_t *) body;
    req.body_len = strlen(body);
    req.owner = 4242;
    req.alive = api_alive;

    memset(&up, 0, sizeof(up));
    up.name = (const uint8_t *) "app";
    up.name_len = 3;
    up.zone = t;

    if (hab_api_handle(&req, &up, 1, &res) != HAB_OK) {
        return -1;
    }

    status = (int) res.status;

    if (hab_buf_len(res.body) == 0 || hab_buf_data(res.body)[0] != '{'
        || res.content_type != HAB_API_JSON)
    {
        status = -1;
    }

    /* the chunks add up to the body */

    total = 0;

    for (i = 0; (n = hab_buf_chunk(res.body, i, &data)) != 0; i++) {
        if (data == NULL || (i == 0 && data != hab_buf_data(res.body))) {
            status = -1;
        }

        total += n;
    }

    if (total != hab_buf_len(res.body)) {
        status = -1;
    }

    hab_buf_free(res.body);
    hab_buf_free(res.log);

    return status;
}


static int
one_request(hab_zone *t, void *pool, size_t size, uint64_t now,
    uint32_t outcome, uint32_t *peer)
{
    hab_try       info;
    hab_pick      pick;
    hab_report    report;
    hab_attempt  *a;

    memset(&info, 0, sizeof(hab_try));
    info.status = (outcome == HAB_OUTCOME_OK) ? 200 : 0;
    info.flags = HAB_TRY_HEADER_TIME;
    info.sent = 10;
    info.received = 100;

    CHECK(hab_attempt_init(t, pool, size, now, 42, HAB_NO_SLOT, &a) == HAB_OK);
    CHECK(hab_attempt_pick(t, a, NULL, 0, now, &pick) == HAB_OK);
    CHECK(hab_attempt_release(t, a, outcome, &info, now, &report) == HAB_OK);
    CHECK(report.peer == pick.peer);
    CHECK(hab_attempt_end(t, a) == HAB_OK);
    CHECK(hab_attempt_end(t, a) == HAB_OK);
    *peer = pick.peer;

    return 0;
}


/*
 * A resolvable upstream (capacity above its configured peers): a list
 * resolved into slots, a try abandoned, a smaller list, the slots' life
 * cycle and the epoch check of a health verdict.
 */

static int
dynamic_zone(void)
{
    void                *mem, *pool;
    size_t               size, asize;
    uint32_t             i, n, slots[3], first;
    uint64_t             d1, d2;
    hab_pick             pick;
    hab_zone            *t;
    hab_source           src;
    hab_attempt         *a;
    hab_slot_info        info;
    hab_peer_conf        peers[3];
    hab_check_report     check;
    hab_check_result     result;
    hab_upstream_conf    conf, list;
    hab_resolve_report   rep;

    peer_init(&peers[0], "up\0a\0127.0.0.1:1", 1, 0);
    peer_init(&peers[1], "up\0r\0127.0.0.2:80", 1, 0);
    peer_init(&peers[2], "up\0r\0127.0.0.3:80", 1, 0);
    /* identities hold NULs: their lengths by hand */
    peers[0].id_len = sizeof("up\0a\0127.0.0.1:1") - 1;
    peers[1].id_len = sizeof("up\0r\0127.0.0.2:80") - 1;
    peers[2].id_len = sizeof("up\0r\0127.0.0.3:80") - 1;
    peers[1].position = HAB_POSITION_NONE;
    peers[2].position = HAB_POSITION_NONE;

    memset(&conf, 0, sizeof(conf));
    conf.policy = HAB_POLICY_LEAST_CONN;
    conf.peers = peers;
    conf.npeers = 1;

    CHECK(hab_conf_digest(&conf, &d1) == HAB_OK);
    conf.capacity = 1;
    CHECK(hab_conf_digest(&conf, &d2) == HAB_OK && d2 == d1);
    conf.capacity = 4;
    CHECK(hab_conf_digest(&conf, &d2) == HAB_OK && d2 != d1);
    conf.npeers = 5;
    CHECK(hab_zone_size(&conf, &size) == HAB_INVALID_ARGUMENT);
    conf.npeers = 1;

    CHECK(hab_zone_size(&conf, &size) == HAB_OK);
    mem = aligned_alloc(64, size);
    CHECK(mem != NULL);
    CHECK(hab_zone_init(&conf, mem, size, &t) == HAB_OK);
    CHECK(hab_zone_peers(t) == 4);
    CHECK(hab_zone_source(t, HAB_NO_SLOT, &src) == HAB_OK && src.list == 0
          && src.config == 0);
    CHECK(hab_zone_slot(t, 3, &info) == HAB_OK
          && info.status == HAB_SLOT_FREE);
    CHECK(hab_zone_slot(t, 4, &info) == HAB_INVALID_ARGUMENT);

    /* the configured server and two resolved ones */

    list = conf;
    list.npeers = 3;
    CHECK(hab_zone_resolve(t, &list, 1, 3, 0, 100, HAB_NO_SLOT, alive_all,
                           NULL, NULL, &rep) == HAB_NULL_PARAMETER);
    CHECK(hab_zone_resolve(t, &list, 1, 3, 0, 100, HAB_NO_SLOT, alive_all,
                           NULL, slots, &rep) == HAB_OK);
    CHECK(rep.built == 1 && rep.refused == HAB_OK && rep.kept == 1
          && rep.added == 2 && rep.source.list == 1 && rep.source.config == 3);
    CHECK(rep.generation == hab_zone_generation(t));
    CHECK(slots[0] == 0 && slots[1] == 1 && slots[2] == 2);

    /* the same list again: nothing to do; an older list: refused */

    CHECK(hab_zone_resolve(t, &list, 1, 3, 0, 100, HAB_NO_SLOT, alive_all,
                           NULL, slots, &rep) == HAB_OK);
    CHECK(rep.built == 0 && rep.refused == HAB_OK && slots[2] == 2);
    CHECK(hab_zone_resolve(t, &list, 0, 9, 0, 100, HAB_NO_SLOT, alive_all,
                           NULL, slots, &rep) == HAB_OK);
    CHECK(rep.built == 0 && rep.refused == HAB_BUSY);

    /* a try nginx cannot use is abandoned: it leaves flight, stays tried */

    asize = hab_attempt_size(t);
    pool = malloc(asize);
    CHECK(pool != NULL);
    CHECK(hab_attempt_init(t, pool, asize, 0, 1, HAB_NO_SLOT, &a) == HAB_OK);
    CHECK(hab_attempt_abandon(t, a) == HAB_INVALID_ARGUMENT);
    CHECK(hab_attempt_source(t, a, &src) == HAB_OK && src.config == 3);
    CHECK(hab_attempt_pick(t, a, NULL, 0, 0, &pick) == HAB_OK);
    first = pick.peer;
    CHECK(hab_zone_in_flight(t, first, &n) == HAB_OK && n == 1);
    CHECK(hab_attempt_abandon(t, a) == HAB_OK);
    CHECK(hab_zone_in_flight(t, first, &n) == HAB_OK && n == 0);
    for (i = 0; i < 2; i++) {
        CHECK(hab_attempt_pick(t, a, NULL, 0, 0, &pick) == HAB_OK);
        CHECK(pick.peer != first);
        CHECK(hab_attempt_release(t, a, HAB_OUTCOME_NEXT, NULL, 0, NULL)
              == HAB_OK);
    }
    CHECK(hab_attempt_pick(t, a, NULL, 0, 0, &pick) == HAB_BUSY);
    CHECK(hab_attempt_end(t, a) == HAB_OK);

    /* a smaller list: the vanished server drains, then its slot is free
     * for another; a verdict of a check started before is dropped */

    CHECK(hab_zone_slot(t, 1, &info) == HAB_OK
          && info.status == HAB_SLOT_LIVE);
    list.npeers = 2;
    peers[1] = peers[2];
    CHECK(hab_zone_resolve(t, &list, 1, 4, 0, 100, HAB_NO_SLOT, alive_all,
                           NULL, slots, &rep) == HAB_OK);
    CHECK(rep.built == 1 && rep.retired == 1 && rep.kept == 2);
    CHECK(slots[0] == 0 && slots[1] == 2);
    CHECK(hab_zone_slot(t, 1, &info) == HAB_OK
          && info.status == HAB_SLOT_RETIRING);
    CHECK(api(t, HAB_API_GET, "upstreams/app/servers/2", "", 0) == 404);
    CHECK(api(t, HAB_API_GET, "upstreams/app/servers/3", "", 0) == 200);
    result.passed = 1;
    result.reason = HAB_CHECK_REASON_PASSED;
    result.status = 200;
    result.duration_ms = 3;
    CHECK(hab_check_done(t, 1, info.epoch + 1, HAB_NO_SLOT, &result, 0, &check)
          == HAB_OK
          && check.transition == HAB_CHECK_NONE);
    result.reason = 18;
    CHECK(hab_check_done(t, 1, info.epoch, HAB_NO_SLOT, &result, 0, &check)
          == HAB_INVALID_ARGUMENT);
    CHECK(hab_check_done(t, 1, info.epoch, HAB_NO_SLOT, NULL, 0, &check)
          == HAB_NULL_PARAMETER);

    free(pool);
    free(mem);

    return 0;
}


/*
 * The request queue (ha_queue 2), as the module drives it: two workers
 * (ledger slots), one server at max_conns=1.  A request that gets
 * HAB_BUSY enters the queue; the head tries at once, the others when
 * their worker is woken; a release's hab_report names the worker to
 * wake; a waiter that times out leaves; a full queue refuses (502).
 */

static int
queue_zone(void)
{
    void               *mem, *pool[4];
    size_t              size, asize;
    uint32_t            i, wa, wb;
    hab_pick            pick;
    hab_wake            wake;
    hab_zone           *t;
    hab_report          report;
    hab_ticket          k2, k3, k4, head;
    hab_attempt        *a[4];
    hab_peer_conf       peers[1];
    hab_health_conf     health;
    hab_queue_stats     st;
    hab_upstream_conf   conf;

    peer_init(&peers[0], "up\0a\0127.0.0.1:1", 1, 0);
    peers[0].id_len = sizeof("up\0a\0127.0.0.1:1") - 1;
    peers[0].max_conns = 1;

    memset(&health, 0, sizeof(health));
    memset(&conf, 0, sizeof(conf));
    conf.policy = HAB_POLICY_ROUND_ROBIN;
    conf.peers = peers;
    conf.npeers = 1;
    conf.health = &health;

    health.queue = HAB_QUEUE_MAX + 1;
    CHECK(hab_health_validate(&health) == HAB_INVALID_ARGUMENT);
    CHECK(hab_zone_size(&conf, &size) == HAB_INVALID_ARGUMENT);
    health.queue = 2;
    CHECK(hab_health_validate(&health) == HAB_OK);
    CHECK(hab_zone_size(&conf, &size) == HAB_OK);
    mem = aligned_alloc(64, size);
    CHECK(mem != NULL);
    CHECK(hab_zone_init(&conf, mem, size, &t) == HAB_OK);

    /* worker start: a ledger slot each, and a wake channel */

    CHECK(hab_zone_claim_slot(t, 300, alive_all, NULL, &wa) == HAB_OK);
    CHECK(hab_zone_claim_slot(t, 400, alive_all, NULL, &wb) == HAB_OK);
    CHECK(wa != wb);
    CHECK(hab_queue_set_wake(t, wb, 5) == HAB_OK);
    CHECK(hab_queue_kick(t, &wake) == HAB_OK && wake.slot == HAB_NO_SLOT);

    asize = hab_attempt_size(t);
    for (i = 0; i < 4; i++) {
        pool[i] = malloc(asize);
        CHECK(pool[i] != NULL);
        CHECK(hab_attempt_init(t, pool[i], asize, 0, i, i % 2 ? wb : wa,
                               &a[i])
              == HAB_OK);
    }

    /* request 0 (worker a) takes the server */

    CHECK(hab_attempt_pick(t, a[0], NULL, 0, 0, &pick) == HAB_OK);

    /* request 1 (worker b) waits: the head, it tries at once */

    CHECK(hab_queue_waiting(t) == 0);
    CHECK(hab_attempt_pick(t, a[1], NULL, 0, 1, &pick) == HAB_BUSY);
    CHECK(hab_queue_enter(t, wb, 1, &k2) == HAB_OK);
    CHECK(k2.slot == wb && (k2.flags & HAB_TICKET_HEAD));
    CHECK(hab_queue_try(t, a[1], &k2, NULL, 0, 1, &pick, &wake) == HAB_BUSY);

    /* request 2 (worker a) finds a waiter: it does not pick but waits
     * behind it; request 3 finds the queue full */

    CHECK(hab_queue_waiting(t) == 1);
    CHECK(hab_attempt_pick(t, a[2], NULL, 0, 2, &pick) == HAB_BUSY);
    CHECK(hab_queue_enter(t, wa, 2, &k3) == HAB_OK);
    CHECK(k3.ticket > k2.ticket && !(k3.flags & HAB_TICKET_HEAD));
    CHECK(hab_queue_try(t, a[2], &k3, NULL, 0, 2, &pick, &wake) == HAB_BUSY);
    CHECK(hab_attempt_pick(t, a[3], NULL, 0, 3, &pick) == HAB_BUSY);
    CHECK(hab_queue_enter(t, wa, 3, &k4) == HAB_QUEUE_FULL);
    CHECK(hab_queue_enter(NULL, wa, 3, &k4) == HAB_NULL_PARAMETER);
    CHECK(hab_queue_enter(t, HAB_NO_SLOT, 3, &k4) == HAB_INVALID_ARGUMENT);
    CHECK(strcmp(hab_result_str(HAB_QUEUE_FULL), "unknown result code")
          != 0);
    CHECK(hab_attempt_end(t, a[3]) == HAB_OK);

    /* request 0 ends: its release names worker b, on its channel */

    CHECK(hab_attempt_release(t, a[0], HAB_OUTCOME_OK, NULL, 4, &report)
          == HAB_OK);
    CHECK(report.wake.slot == wb && report.wake.channel == 5);
    CHECK(hab_attempt_end_wake(t, a[0], &wake) == HAB_OK);
    CHECK(wake.slot == HAB_NO_SLOT);

    /* worker a is not the head's: it may not overtake */

    CHECK(hab_queue_try(t, a[2], &k3, NULL, 0, 4, &pick, &wake) == HAB_BUSY);

    /* worker b, woken: its waiter heads the queue and gets the server */

    CHECK(hab_queue_woken(t, wb, &head) == HAB_OK);
    CHECK(head.slot == wb && head.ticket == k2.ticket);
    CHECK(hab_queue_try(t, a[1], &k2, NULL, 0, 5, &pick, &wake) == HAB_OK);
    CHECK(pick.peer == 0);
    CHECK(wake.slot == wa && wake.channel == HAB_NO_CHANNEL);

    /* worker a, woken: its waiter is the head, the server is full; its
     * deadline passes */

    CHECK(hab_queue_woken(t, wa, &head) == HAB_OK);
    CHECK(head.slot == wa && head.ticket == k3.ticket);
    CHECK(hab_queue_try(t, a[2], &k3, NULL, 0, 6, &pick, &wake) == HAB_BUSY);
    CHECK(hab_queue_leave(t, &k3, 0, &wake) == HAB_INVALID_ARGUMENT);
    CHECK(hab_queue_leave(t, &k3, HAB_QUEUE_TIMEOUT, &wake) == HAB_OK);
    CHECK(wake.slot == HAB_NO_SLOT);
    CHECK(hab_attempt_end(t, a[2]) == HAB_OK);

    /* request 1 ends: nobody waits */

    CHECK(hab_attempt_end_wake(t, a[1], &wake) == HAB_OK);
    CHECK(wake.slot == HAB_NO_SLOT);
    CHECK(hab_queue_woken(t, wb, &head) == HAB_OK && head.slot == HAB_NO_SLOT);

    CHECK(hab_queue_stats_get(t, &st) == HAB_OK);
    CHECK(st.size == 0 && st.max_size == 2 && st.overflows == 1
          && st.timeouts == 1 && st.abandoned == 0 && st.served == 1);

    CHECK(hab_zone_release_slot(t, wa, 300) == HAB_OK);
    CHECK(hab_zone_release_slot(t, wb, 400) == HAB_OK);
    for (i = 0; i < 4; i++) {
        free(pool[i]);
    }
    free(mem);

    return 0;
}


int
hab_abi_driver_run(void)
{
    int                 rc;
    char                seq[8];
    void               *mem, *pool, *mem2, *pool2;
    size_t              size, size2, asize;
    uint32_t            i, peer, n, slot, slot2;
    uint64_t            d1, d2;
    hab_pick            pick;
    hab_zone          *t, *t2;
    hab_report          report;
    hab_attempt        *a;
    hab_peer_conf       peers[4];
    hab_upstream_conf   conf;

    peer_init(&peers[0], "up\0a\0127.0.0.1:1", 5, 0);
    peer_init(&peers[1], "up\0b\0127.0.0.1:2", 1, 0);
    peer_init(&peers[2], "up\0c\0127.0.0.1:3", 1, 0);
    peer_init(&peers[3], "up\0d\0127.0.0.1:4", 1, HAB_PEER_BACKUP);

    memset(&conf, 0, sizeof(conf));
    conf.policy = HAB_POLICY_ROUND_ROBIN;
    conf.peers = peers;
    conf.npeers = 4;

    /* argument checks */

    CHECK(hab_zone_size(NULL, &size) == HAB_NULL_PARAMETER);
    CHECK(hab_zone_size(&conf, NULL) == HAB_NULL_PARAMETER);
    CHECK(hab_result_str(HAB_PANIC) != NULL);
    CHECK(strcmp(hab_result_str(HAB_OK), "ok") == 0);
    CHECK(strcmp(hab_result_str((hab_result) 1), "unknown result code") == 0);
    CHECK(hab_layout_version() >= 1);

    conf.policy = 99;
    CHECK(hab_zone_size(&conf, &size) == HAB_UNKNOWN_POLICY);
    conf.policy = HAB_POLICY_ROUND_ROBIN;

    peers[1].weight = 0;
    CHECK(hab_zone_size(&conf, &size) == HAB_INVALID_ARGUMENT);
    peers[1].weight = 1;

    CHECK(hab_zone_size(&conf, &size) == HAB_OK);
    CHECK(size > 0 && size % 64 == 0);
    CHECK(hab_conf_digest(&conf, &d1) == HAB_OK);

    mem = aligned_alloc(64, size);
    CHECK(mem != NULL);
    CHECK(hab_zone_init(&conf, mem, size - 64, &t) == HAB_NO_SPACE);
    CHECK(hab_zone_init(&conf, mem, size, &t) == HAB_OK);
    CHECK(hab_zone_peers(t) == 4);
    CHECK(hab_zone_peers(NULL) == 0);

    asize = hab_attempt_size(t);
    CHECK(asize >= 16);
    pool = malloc(asize);
    CHECK(pool != NULL);
    CHECK(hab_attempt_init(t, pool, asize - 8, 0, 42, HAB_NO_SLOT, &a) == HAB_NO_SPACE);

    /* nginx's smooth sequence for weights 5,1,1 */

    for (i = 0; i < 7; i++) {
        rc = one_request(t, pool, asize, 1000, HAB_OUTCOME_OK, &peer);
        if (rc != 0) {
            return rc;
        }
        seq[i] = (char) ('a' + peer);
    }
    seq[7] = '\0';
    CHECK(strcmp(seq, "aabacaa") == 0);

    /* free without a try in progress changes nothing */

    CHECK(hab_attempt_init(t, pool, asize, 1000, 7, HAB_NO_SLOT, &a) == HAB_OK);
    CHECK(hab_attempt_release(t, a, HAB_OUTCOME_OK, NULL, 1000, &report)
          == HAB_INVALID_ARGUMENT);
    CHECK(hab_attempt_pick(t, a, NULL, 0, 1000, &pick) == HAB_OK);
    CHECK(hab_zone_in_flight(t, pick.peer, &n) == HAB_OK && n == 1);
    CHECK(hab_attempt_release(t, a, 77, NULL, 1000, &report) == HAB_INVALID_ARGUMENT);
    CHECK(hab_attempt_release(t, a, HAB_OUTCOME_OK, NULL, 1000, NULL) == HAB_OK);
    CHECK(hab_zone_in_flight(t, pick.peer, &n) == HAB_OK && n == 0);
    CHECK(hab_zone_in_flight(t, 4, &n) == HAB_INVALID_ARGUMENT);

    /* a request retries every primary once, then the backup, then BUSY */

    CHECK(hab_attempt_init(t, pool, asize, 2000, 7, HAB_NO_SLOT, &a) == HAB_OK);
    for (i = 0; i < 3; i++) {
        CHECK(hab_attempt_pick(t, a, NULL, 0, 2000, &pick) == HAB_OK);
        CHECK(pick.peer < 3 && !(pick.flags & HAB_PICK_BACKUP));
        CHECK(hab_attempt_release(t, a, HAB_OUTCOME_FAILED, NULL, 2000, &report) == HAB_OK);
        CHECK(report.flags & HAB_REPORT_DISABLED);
    }
    CHECK(hab_attempt_pick(t, a, NULL, 0, 2000, &pick) == HAB_OK);
    CHECK(pick.peer == 3 && (pick.flags & HAB_PICK_BACKUP));
    CHECK(hab_attempt_release(t, a, HAB_OUTCOME_OK, NULL, 2000, &report) == HAB_OK);
    CHECK(hab_attempt_pick(t, a, NULL, 0, 2000, &pick) == HAB_BUSY);

    /* while the primaries are disabled, new requests go to the backup */

    rc = one_request(t, pool, asize, 3000, HAB_OUTCOME_OK, &peer);
    CHECK(rc == 0 && peer == 3);

    /* after fail_timeout a primary is probed, and recovers */

    rc = one_request(t, pool, asize, 12001, HAB_OUTCOME_OK, &peer);
    CHECK(rc == 0 && peer < 3);

    /* hash consistent: the same key goes to the same peer */

    conf.policy = HAB_POLICY_HASH;
    conf.hash_mode = HAB_HASH_CONSISTENT;
    peers[3].flags = 0;
    CHECK(hab_zone_size(&conf, &size2) == HAB_OK);
    mem2 = aligned_alloc(64, size2);
    CHECK(mem2 != NULL);
    CHECK(hab_zone_init(&conf, mem2, size2, &t2) == HAB_OK);
    pool2 = malloc(hab_attempt_size(t2));
    CHECK(pool2 != NULL);
    for (i = 0; i < 2; i++) {
        CHECK(hab_attempt_init(t2, pool2, hab_attempt_size(t2), 0, i, HAB_NO_SLOT, &a)
              == HAB_OK);
        CHECK(hab_attempt_pick(t2, a, (const uint8_t *) "user-42", 7, 0, &pick)
              == HAB_OK);
        CHECK(hab_attempt_release(t2, a, HAB_OUTCOME_OK, NULL, 0, NULL) == HAB_OK);
        peer = (i == 0) ? pick.peer : peer;
        CHECK(pick.peer == peer);
    }
    CHECK(hab_attempt_pick(t2, a, NULL, 3, 0, &pick) == HAB_NULL_PARAMETER);
    conf.balance_factor = 50;
    CHECK(hab_zone_size(&conf, &size2) == HAB_INVALID_ARGUMENT);
    conf.balance_factor = 0;
    peers[3].flags = HAB_PEER_BACKUP;
    CHECK(hab_zone_size(&conf, &size2) == HAB_INVALID_ARGUMENT);
    conf.policy = HAB_POLICY_ROUND_ROBIN;
    free(pool2);
    free(mem2);

    /* ledger: a dead worker's requests leave flight */

    CHECK(hab_zone_claim_slot(t, 100, alive_all, NULL, &slot) == HAB_OK);
    CHECK(hab_zone_claim_slot(t, 200, NULL, NULL, &slot2)
          == HAB_NULL_PARAMETER);
    CHECK(hab_attempt_init(t, pool, asize, 20000, 1, slot, &a) == HAB_OK);
    CHECK(hab_attempt_pick(t, a, NULL, 0, 20000, &pick) == HAB_OK);
    CHECK(hab_zone_in_flight(t, pick.peer, &n) == HAB_OK && n == 1);
    CHECK(hab_zone_claim_slot(t, 200, alive_none, NULL, &slot2) == HAB_OK);
    CHECK(slot2 == slot);
    CHECK(hab_zone_in_flight(t, pick.peer, &n) == HAB_OK && n == 0);
    CHECK(hab_zone_release_slot(t, slot2, 200) == HAB_OK);
    CHECK(hab_zone_release_slot(t, 1000, 200) == HAB_INVALID_ARGUMENT);

    /* a reload with the same configuration adopts the table */

    CHECK(hab_zone_attach(&conf, mem, size, &t2) == HAB_OK && t2 == t);
    peers[2].weight = 2;
    CHECK(hab_conf_digest(&conf, &d2) == HAB_OK && d2 != d1);
    CHECK(hab_zone_attach(&conf, mem, size, &t2) == HAB_BAD_LAYOUT);

    /* ... a changed one starts fresh but keeps what is known of its peers */

    CHECK(hab_zone_size(&conf, &size2) == HAB_OK);
    mem2 = aligned_alloc(64, size2);
    CHECK(mem2 != NULL);
    CHECK(hab_zone_init(&conf, mem2, size2, &t2) == HAB_OK);
    CHECK(hab_zone_carry(t2, t, 0, &n, NULL) == HAB_OK && n == 4);
    CHECK(hab_zone_carry(t2, NULL, 0, &n, NULL) == HAB_NULL_PARAMETER);
    free(mem2);

    /* the operator API: a read, a write refused, a write accepted */

    CHECK(hab_zone_generation(t) == 1);
    CHECK(api(t, HAB_API_GET, "upstreams/app", "", 0) == 200);
    CHECK(api(t, HAB_API_PATCH, "upstreams/app/servers/0", "{\"weight\":3}", 0)
          == 405);
    CHECK(api(t, HAB_API_PATCH, "upstreams/app/servers/0", "{\"weight\":3}",
              HAB_API_WRITE) == 200);
    CHECK(hab_zone_generation(t) == 2);
    CHECK(api(t, HAB_API_GET, "upstreams/none", "", 0) == 404);

    free(pool);
    free(mem);

    rc = dynamic_zone();
    if (rc != 0) {
        return rc;
    }

    return queue_zone();
}
