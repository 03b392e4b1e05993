#!/usr/bin/env python3
"""A local user's connection flood against the metrics endpoint (issue 11).

  flood.py --port 9464 --connections 5000 --hold 20 [--reopen-rate 200]

Opens CONNECTIONS TCP connections to 127.0.0.1:PORT and, once every one
has been asked for, holds them for HOLD seconds, then closes them all and
exits (the hold counts from then, so that a slow machine that takes long
to open them still gets the whole hold). Each one sends the start of
a request and then, while the server keeps it, one more header byte a
second: a slowloris that never finishes its headers. With --reopen-rate,
a connection the server closed is replaced, at most that many a second in
all, so that the server faces CONNECTIONS all along.

Loopback only, python3's standard library only, and bounded in time: it
stops opening after OPEN_WITHIN seconds (default 60) and exits by
OPEN_WITHIN + HOLD + 10 s whatever happens. Prints JSON lines on stdout: one
when every connection has been asked for ({"event": "started"}), one at
the end with what the server did ({"event": "end"}):

  busy          closed by the server with its 503 "busy" at once
  silent        closed by the server without an answer (served, and
                dropped when its read time was up); silent_max_s is how
                long the longest of them was held
  answered      given some other answer (none expected)
  reset, failed closed with an error, or could not connect
  open_at_end   still open when the hold was over
"""

import argparse
import errno
import ipaddress
import json
import os
import resource
import selectors
import socket
import sys
import time

PARTIAL = b"GET /metrics HTTP/1.1\r\nHost: flood\r\nX-Flood: "
BUSY = b"HTTP/1.0 503"


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"flood.py: RLIMIT_NOFILE hard limit {hard} < {need}: raise it first (prlimit)")
    if soft == resource.RLIM_INFINITY or soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


class Conn:
    __slots__ = ("sock", "opened", "connected", "got", "sent")

    def __init__(self, sock, now):
        self.sock = sock
        self.opened = now
        self.connected = False
        self.got = b""
        self.sent = 0


class Flood:
    def __init__(self, host, port):
        self.addr = (host, port)
        self.sel = selectors.DefaultSelector()
        self.conns = set()
        self.counts = {k: 0 for k in ("opened", "busy", "silent", "answered", "reset", "failed")}
        self.silent_max = 0.0

    def open_one(self, now):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self.counts["failed"] += 1
            return
        c = Conn(s, now)
        self.conns.add(c)
        self.counts["opened"] += 1
        self.sel.register(s, selectors.EVENT_WRITE, c)

    def close(self, c, outcome, now):
        self.sel.unregister(c.sock)
        c.sock.close()
        self.conns.discard(c)
        self.counts[outcome] += 1
        if outcome == "silent":
            self.silent_max = max(self.silent_max, now - c.opened)

    def on_event(self, c, mask, now):
        if not c.connected:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.close(c, "failed", now)
                return
            c.connected = True
            try:
                c.sock.send(PARTIAL)
            except OSError:
                self.close(c, "reset", now)
                return
            self.sel.modify(c.sock, selectors.EVENT_READ, c)
            return
        try:
            data = c.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            self.close(c, "reset", now)
            return
        if data:
            c.got += data[:64]
            return
        if c.got.startswith(BUSY):
            self.close(c, "busy", now)
        elif c.got:
            self.close(c, "answered", now)
        else:
            self.close(c, "silent", now)

    def trickle(self):
        """One more header byte on each connection the server still keeps."""
        for c in list(self.conns):
            if c.connected and not c.got:
                try:
                    c.sock.send(b"a")
                    c.sent += 1
                except OSError:
                    pass


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9464)
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--hold", type=float, default=20.0)
    p.add_argument("--reopen-rate", type=float, default=0.0)
    p.add_argument("--open-within", type=float, default=60.0)
    a = p.parse_args()
    if not ipaddress.ip_address(a.host).is_loopback:
        sys.exit("flood.py: loopback addresses only")
    raise_nofile(a.connections + 64)

    start = time.monotonic()
    open_by = start + a.open_within
    f = Flood(a.host, a.port)
    for _ in range(a.connections):
        if time.monotonic() >= open_by:
            break
        f.open_one(time.monotonic())
        # Take in what the server already said, so as not to hold what it
        # closed (and never more than --connections at once).
        for key, mask in f.sel.select(0):
            f.on_event(key.data, mask, time.monotonic())
    print(json.dumps({"event": "started", "uid": os.geteuid(), "connections": len(f.conns),
                      "after_s": round(time.monotonic() - start, 2), **f.counts}), flush=True)

    deadline = time.monotonic() + a.hold
    hard_stop = deadline + 10
    next_trickle = time.monotonic() + 1
    budget, budget_at = 0.0, time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline or now >= hard_stop:
            break
        for key, mask in f.sel.select(min(0.1, deadline - now)):
            f.on_event(key.data, mask, time.monotonic())
        now = time.monotonic()
        if now >= next_trickle:
            f.trickle()
            next_trickle = now + 1
        if a.reopen_rate > 0:
            budget = min(a.reopen_rate, budget + (now - budget_at) * a.reopen_rate)
            budget_at = now
            while budget >= 1 and len(f.conns) < a.connections and time.monotonic() < hard_stop:
                f.open_one(time.monotonic())
                budget -= 1

    open_at_end = len(f.conns)
    for c in list(f.conns):
        f.sel.unregister(c.sock)
        c.sock.close()
    print(json.dumps({"event": "end", "uid": os.geteuid(), "held_s": round(time.monotonic() - (deadline - a.hold), 2),
                      "open_at_end": open_at_end, "silent_max_s": round(f.silent_max, 2), **f.counts}),
          flush=True)


if __name__ == "__main__":
    main()
