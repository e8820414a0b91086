
/*
 * Copyright (C) ha-balancer authors
 *
 * What a check's answer must be: its head (status line and header lines,
 * strictly) and the end of a chunked body.  Pure functions over the bytes
 * read; the probe (ngx_http_upstream_ha_check.c) decides with them.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_upstream_ha_module.h"


static void ngx_http_upstream_ha_connection_tokens(u_char *v, u_char *end,
    ngx_uint_t *close, ngx_uint_t *alive);


/*
 * The head of a check's answer: "HTTP/1.0" or "HTTP/1.1", SP, a three
 * digit status from 100 to 599, then SP and a reason phrase (SP, HTAB,
 * visible and non-ASCII bytes) or nothing, CRLF; header lines "name:"
 * (a name of visible characters, no ':' at its start) and a value
 * without control bytes but HTAB, CRLF; an empty line.  A bare LF ends a
 * line as it does for nginx; a CR elsewhere, a NUL or any other control
 * byte makes the answer invalid.  Content-Length is read (differing
 * values are invalid); Transfer-Encoding makes the body chunked;
 * Connection tells whether the server keeps the connection (HTTP/1.1
 * unless "close" is among its tokens, HTTP/1.0 only with "keep-alive").
 *
 * NGX_OK with the status, the body's start and its length (-1 unknown,
 * NGX_HTTP_UPSTREAM_HA_CHUNKED), and *keep;
 * NGX_AGAIN while what was read is a valid start of a head; NGX_DECLINED
 * with the reason when it cannot be one.
 */

ngx_int_t
ngx_http_upstream_ha_parse_head(u_char *s, u_char *end, ngx_uint_t *status,
    u_char **body, off_t *length, ngx_uint_t *keep, const char **why)
{
    u_char      *q, *line, *colon, *v, *ve;
    off_t        n;
    size_t       i, len;
    ngx_uint_t   chunked, close, alive;

    static u_char  version[] = "HTTP/1.";

    *length = -1;
    chunked = 0;
    close = 0;
    alive = 0;
    len = end - s;

    /* "HTTP/1.x NNN", checked as far as it was read */

    for (i = 0; i < 7 && i < len; i++) {
        if (s[i] != version[i]) {
            goto invalid_status;
        }
    }

    if ((len > 7 && s[7] != '0' && s[7] != '1')
        || (len > 8 && s[8] != ' ')
        || (len > 9 && (s[9] < '1' || s[9] > '5')))
    {
        goto invalid_status;
    }

    for (i = 10; i < 12 && i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            goto invalid_status;
        }
    }

    if (len > 12 && s[12] != ' ' && s[12] != CR && s[12] != LF) {
        goto invalid_status;
    }

    /* the reason phrase, up to the end of the line */

    for (q = s + ngx_min(len, 12); q < end; q++) {

        if (*q == LF) {
            break;
        }

        if (*q == CR) {
            if (q + 1 < end && q[1] != LF) {
                goto invalid_status;
            }

            continue;
        }

        if ((*q < 0x20 && *q != '\t') || *q == 0x7f) {
            goto invalid_status;
        }
    }

    if (q == end) {
        return NGX_AGAIN;
    }

    *status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');

    /* header lines, up to the empty one */

    for ( ;; ) {
        line = ++q;

        for ( /* void */ ; q < end; q++) {

            if (*q == LF) {
                break;
            }

            if (*q == CR) {
                if (q + 1 < end && q[1] != LF) {
                    goto invalid_header;
                }

                continue;
            }

            if ((*q < 0x20 && *q != '\t') || *q == 0x7f) {
                goto invalid_header;
            }
        }

        if (q == end) {
            return NGX_AGAIN;
        }

        ve = (q > line && q[-1] == CR) ? q - 1 : q;

        if (ve == line) {
            break;
        }

        colon = ngx_strlchr(line, ve, ':');

        if (colon == NULL || colon == line) {
            goto invalid_header;
        }

        for (v = line; v < colon; v++) {
            if (*v <= ' ' || *v == 0x7f) {
                goto invalid_header;
            }
        }

        for (v = colon + 1; v < ve && (*v == ' ' || *v == '\t'); v++) {
            /* void */
        }

        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
            ve--;
        }

        if (colon - line == sizeof("Content-Length") - 1
            && ngx_strncasecmp(line, (u_char *) "Content-Length",
                               sizeof("Content-Length") - 1) == 0)
        {
            n = ngx_atoof(v, ve - v);

            if (n == NGX_ERROR || (*length != -1 && *length != n)) {
                *why = "invalid Content-Length";
                return NGX_DECLINED;
            }

            *length = n;

        } else if (colon - line == sizeof("Transfer-Encoding") - 1
                   && ngx_strncasecmp(line, (u_char *) "Transfer-Encoding",
                                      sizeof("Transfer-Encoding") - 1) == 0)
        {
            chunked = 1;

        } else if (colon - line == sizeof("Connection") - 1
                   && ngx_strncasecmp(line, (u_char *) "Connection",
                                      sizeof("Connection") - 1) == 0)
        {
            ngx_http_upstream_ha_connection_tokens(v, ve, &close, &alive);
        }
    }

    if (chunked) {
        *length = NGX_HTTP_UPSTREAM_HA_CHUNKED;
    }

    *keep = !close && (s[7] == '1' || alive);

    *body = q + 1;

    return NGX_OK;

invalid_status:

    *why = "invalid status line";
    return NGX_DECLINED;

invalid_header:

    *why = "invalid header";
    return NGX_DECLINED;
}


/* the "close" and "keep-alive" tokens of a Connection header's value */

static void
ngx_http_upstream_ha_connection_tokens(u_char *v, u_char *end,
    ngx_uint_t *close, ngx_uint_t *alive)
{
    u_char  *t;

    while (v < end) {

        while (v < end && (*v == ',' || *v == ' ' || *v == '\t')) {
            v++;
        }

        t = v;

        while (v < end && *v != ',' && *v != ' ' && *v != '\t') {
            v++;
        }

        if (v - t == sizeof("close") - 1
            && ngx_strncasecmp(t, (u_char *) "close", v - t) == 0)
        {
            *close = 1;

        } else if (v - t == sizeof("keep-alive") - 1
                   && ngx_strncasecmp(t, (u_char *) "keep-alive", v - t) == 0)
        {
            *alive = 1;
        }
    }
}


/*
 * Where a chunked body that starts at s ends: chunks of hex size (with
 * extensions), each followed by CRLF, the last of size 0, trailer lines
 * and an empty line.  NGX_OK with *last after it; NGX_AGAIN while what
 * was read is a valid start; NGX_DECLINED when it cannot be one.
 */

ngx_int_t
ngx_http_upstream_ha_chunked_end(u_char *s, u_char *end, u_char **last)
{
    u_char      *q, *line, ch;
    off_t        size;
    ngx_uint_t   digits;

    q = s;

    for ( ;; ) {

        size = 0;
        digits = 0;

        for ( /* void */ ; q < end; q++) {
            ch = ngx_tolower(*q);

            if (ch >= '0' && ch <= '9') {
                ch -= '0';

            } else if (ch >= 'a' && ch <= 'f') {
                ch = ch - 'a' + 10;

            } else {
                break;
            }

            if (size > (NGX_MAX_OFF_T_VALUE - 15) / 16) {
                return NGX_DECLINED;
            }

            size = size * 16 + ch;
            digits++;
        }

        if (q == end) {
            return NGX_AGAIN;
        }

        if (digits == 0) {
            return NGX_DECLINED;
        }

        /* chunk extensions, up to the end of the line */

        for ( /* void */ ; q < end && *q != LF; q++) {
            if ((*q < 0x20 && *q != '\t' && *q != CR) || *q == 0x7f) {
                return NGX_DECLINED;
            }
        }

        if (q == end) {
            return NGX_AGAIN;
        }

        q++;

        if (size == 0) {

            /* trailer lines, up to an empty one */

            for ( ;; ) {
                line = q;

                while (q < end && *q != LF) {
                    q++;
                }

                if (q == end) {
                    return NGX_AGAIN;
                }

                if (q == line || (q == line + 1 && *line == CR)) {
                    *last = q + 1;
                    return NGX_OK;
                }

                q++;
            }
        }

        if (end - q <= size) {
            return NGX_AGAIN;
        }

        q += size;

        if (*q == CR) {
            q++;

            if (q == end) {
                return NGX_AGAIN;
            }
        }

        if (*q != LF) {
            return NGX_DECLINED;
        }

        q++;
    }
}
