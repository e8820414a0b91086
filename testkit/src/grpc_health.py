#!/usr/bin/python3
"""A gRPC health server (grpc.health.v1.Health/Check) for the end-to-end tests

Run by testkit/src/grpc.rs with Debian's /usr/bin/python3 and python3-grpcio
only: no protobuf, no grpcio-health-checking. The service is a generic
handler with raw-bytes (de)serialization; the two messages are coded by hand:

    HealthCheckRequest  { string service = 1; }   tag 0x0a, varint length, bytes
    HealthCheckResponse { ServingStatus status = 1; }   tag 0x08, varint
    ServingStatus: UNKNOWN = 0, SERVING = 1, NOT_SERVING = 2, SERVICE_UNKNOWN = 3

Usage:
    grpc_health.py --port N [--cert PEM --key PEM] [--no-health]

Listens on 127.0.0.1:N only (TLS with --cert/--key, cleartext HTTP/2
otherwise); prints "ready N" once listening, or "error TEXT" and exits 1.
With --no-health no service is registered: every call is answered
UNIMPLEMENTED (grpc-status 12) by the grpc library itself.

Commands, one JSON object a line on stdin, each answered by one JSON line
on stdout:
    {"cmd": "set", "service": S, "status": "SERVING"}  -> {"ok": true}
        status: SERVING, NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN, "absent"
        (the call fails with NOT_FOUND, as the standard servicer does for
        an unknown service), "abort N" (fails with grpc-status N), or
        "hang MS" (answers SERVING after MS milliseconds).
    {"cmd": "health", "on": false}  -> {"ok": true}  (as --no-health)
    {"cmd": "calls"}  -> {"ok": true, "calls": [...]}
        every call received, in order: {"method", "service" (null when the
        request was not read), "request" (hex), "authority", "peer",
        "metadata": [[k, v], ...], "time"}
    {"cmd": "clear"}  -> {"ok": true}  (forgets the calls)

The service "" is SERVING at start (the server's overall health), every
other one absent. Exits when stdin closes (so never outlives the test) or
on SIGTERM.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

METHOD = "/grpc.health.v1.Health/Check"
STATUSES = {"UNKNOWN": 0, "SERVING": 1, "NOT_SERVING": 2, "SERVICE_UNKNOWN": 3}

lock = threading.Lock()
state = {"": "SERVING"}
health = [True]
calls = []


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, i):
    n = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def decode_request(buf):
    """The service of a HealthCheckRequest (unknown fields skipped)."""
    service = b""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = read_varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = read_varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            if field == 1:
                service = buf[i:i + n]
            i += n
        else:
            raise ValueError("wire type %d" % wire)
    if i != len(buf):
        raise ValueError("truncated message")
    return service.decode("utf-8")


def encode_response(status):
    # proto3: a field at its default (UNKNOWN = 0) is not on the wire.
    return b"" if status == 0 else b"\x08" + varint(status)


def authority(context):
    # :authority is not in invocation_metadata(); grpc core keeps it as the
    # call's host (a private attribute of this grpc version, hence the care).
    try:
        host = context._rpc_event.call_details.host
        return host.decode("utf-8", "replace") if isinstance(host, bytes) else host
    except Exception:  # pylint: disable=broad-except
        return None


def record(method, context, request, service, metadata=()):
    entry = {
        "method": method,
        "service": service,
        "request": None if request is None else request.hex(),
        "authority": authority(context) if context is not None else None,
        "peer": context.peer() if context is not None else None,
        "metadata": [],
        "time": time.time(),
    }
    if context is not None:
        metadata = context.invocation_metadata() or ()
    for k, v in metadata:
        entry["metadata"].append([k, v if isinstance(v, str) else v.hex()])
    with lock:
        calls.append(entry)


def check(request, context):
    try:
        service = decode_request(request)
    except (ValueError, UnicodeDecodeError) as e:
        record(METHOD, context, request, None)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request: %s" % e)
    record(METHOD, context, request, service)
    with lock:
        status = state.get(service, "absent")
    if status == "absent":
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
    if status.startswith("abort "):
        code = int(status.split()[1])
        match = [c for c in grpc.StatusCode if c.value[0] == code]
        context.abort(match[0], "abort %d" % code)
    if status.startswith("hang "):
        time.sleep(int(status.split()[1]) / 1000.0)
        status = "SERVING"
    return encode_response(STATUSES[status])


class Handler(grpc.GenericRpcHandler):
    def __init__(self):
        self.check = grpc.unary_unary_rpc_method_handler(check)

    def service(self, handler_call_details):
        if handler_call_details.method == METHOD and health[0]:
            return self.check
        # Unknown method or no health service: the library answers
        # UNIMPLEMENTED; the call is still recorded (its request unread).
        record(handler_call_details.method, None, None, None,
               handler_call_details.invocation_metadata or ())
        return None


def command(line):
    try:
        c = json.loads(line)
        cmd = c["cmd"]
        if cmd == "set":
            status = c["status"]
            ok = (
                status in STATUSES
                or status == "absent"
                or (status.startswith("abort ") and 1 <= int(status.split()[1]) <= 16)
                or (status.startswith("hang ") and int(status.split()[1]) >= 0)
            )
            if not ok:
                return {"ok": False, "error": "bad status %r" % status}
            with lock:
                state[c["service"]] = status
            return {"ok": True}
        if cmd == "health":
            health[0] = bool(c["on"])
            return {"ok": True}
        if cmd == "calls":
            with lock:
                return {"ok": True, "calls": list(calls)}
        if cmd == "clear":
            with lock:
                del calls[:]
            return {"ok": True}
        return {"ok": False, "error": "unknown command %r" % cmd}
    except (ValueError, KeyError, TypeError, IndexError) as e:
        return {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--no-health", action="store_true")
    a = p.parse_args()
    health[0] = not a.no_health
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    # No SO_REUSEPORT (grpc's default): a second server on a busy port
    # must fail, not share it.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        handlers=[Handler()],
        options=[("grpc.so_reuseport", 0)],
    )
    addr = "127.0.0.1:%d" % a.port
    try:
        if a.cert:
            with open(a.key, "rb") as f:
                key = f.read()
            with open(a.cert, "rb") as f:
                cert = f.read()
            bound = server.add_secure_port(addr, grpc.ssl_server_credentials([(key, cert)]))
        else:
            bound = server.add_insecure_port(addr)
        if bound != a.port:
            raise RuntimeError("bound %r" % bound)
        server.start()
    except Exception as e:  # pylint: disable=broad-except
        print("error cannot listen on %s: %s" % (addr, e), flush=True)
        os._exit(1)
    print("ready %d" % a.port, flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(command(line)), flush=True)
    # stdin closed: the test is gone.
    os._exit(0)


if __name__ == "__main__":
    main()
