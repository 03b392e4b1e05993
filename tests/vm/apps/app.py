"""A tiny WSGI app for the VM tests (stdlib only), served by uWSGI
(uwsgi-shop.service) and gunicorn (gunicorn-blog.service, and with
gthread workers gunicorn-gthread.service); and `asgi`, the same app's
ASGI side for gunicorn's uvicorn workers (gunicorn-uvicorn.service).

  /               fast "ok"
  /pid            the pid of the worker that served the request
  /leak?mb=N      keep N more MiB in a module-level list: a leaking worker
                  (the pages are written, so they count as private memory)
  /free           drop what /leak kept
  /sleep?ms=N     hold the worker for N ms (a busy worker, a growing backlog)
  /mem            this worker's pid, leaked MiB and VmRSS/RssAnon in kB
  /work?ms=N&leak_kb=K
                  a request of a real app, compressed in time: keep K more
                  KiB for good (a cache that never evicts), then wait N ms
                  (a database, another service); the benchmark's request

The ASGI side answers / and /pid as above, and

  /pool?ms=N      wait N ms holding one of the worker's AW_APP_POOL (2)
                  backend connections (an asyncio semaphore): an async
                  worker takes every connection at once and serves only
                  that many at a time, the rest wait inside it

With AW_APP_PRELOAD_MB=N in the environment (uWSGI: env = ...), the module
writes N MiB at import: data the master loads before it forks, which every
worker maps (it counts in each worker's RSS) and none writes (it stays
charged to the master, not to the workers' scopes).
"""

import asyncio
import json
import os
import time
from urllib.parse import parse_qs

LEAKED = []
PRELOADED = bytearray(b"\x5a") * (int(os.environ.get("AW_APP_PRELOAD_MB", "0") or 0) << 20)


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _int_arg(environ, name, default):
    values = parse_qs(environ.get("QUERY_STRING", "")).get(name)
    try:
        return int(values[0]) if values else default
    except ValueError:
        return default


def _json(obj):
    return "200 OK", "application/json", (json.dumps(obj) + "\n").encode()


def _route(environ):
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        return "200 OK", "text/plain", b"ok\n"
    if path == "/pid":
        return "200 OK", "text/plain", f"{os.getpid()}\n".encode()
    if path == "/leak":
        mb = _int_arg(environ, "mb", 1)
        # bytearray(n) would be calloc'ed zero pages that are never
        # touched; repeating a non-zero byte writes every page.
        LEAKED.append(bytearray(b"\xa5") * (mb * 1024 * 1024))
        return _json({"pid": os.getpid(), "leaked_mb": sum(len(b) for b in LEAKED) >> 20})
    if path == "/free":
        LEAKED.clear()
        return _json({"pid": os.getpid(), "leaked_mb": 0})
    if path == "/sleep":
        time.sleep(_int_arg(environ, "ms", 100) / 1000)
        return "200 OK", "text/plain", b"slept\n"
    if path == "/work":
        kb = _int_arg(environ, "leak_kb", 0)
        if kb > 0:
            LEAKED.append(bytearray(b"\xa5") * (kb * 1024))
        time.sleep(_int_arg(environ, "ms", 0) / 1000)
        return "200 OK", "text/plain", b"done\n"
    if path == "/mem":
        return _json(
            {
                "pid": os.getpid(),
                "leaked_mb": sum(len(b) for b in LEAKED) >> 20,
                "vm_rss_kb": _status_kb("VmRSS"),
                "rss_anon_kb": _status_kb("RssAnon"),
            }
        )
    return "404 Not Found", "text/plain", b"not found\n"


def application(environ, start_response):
    status, ctype, body = _route(environ)
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


POOL = int(os.environ.get("AW_APP_POOL", "2") or 2)
_pool = None


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def asgi(scope, receive, send):
    global _pool
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope.get("path", "/")
    query = parse_qs(scope.get("query_string", b"").decode())
    status, body = 200, b"ok\n"
    if path == "/pid":
        body = f"{os.getpid()}\n".encode()
    elif path == "/pool":
        try:
            ms = int(query.get("ms", ["100"])[0])
        except ValueError:
            ms = 100
        if _pool is None:
            _pool = asyncio.Semaphore(POOL)
        async with _pool:
            await asyncio.sleep(ms / 1000)
        body = b"pooled\n"
    elif path != "/":
        status, body = 404, b"not found\n"
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
