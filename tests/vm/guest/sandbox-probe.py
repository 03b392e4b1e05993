#!/usr/bin/env python3
"""Checks, from inside adaptive-workers.service's sandbox, every permission
the daemon needs, and that the sandbox takes away what it should.

scenarios/20-sandbox.sh runs this as a copy of the installed unit with only
ExecStart= (and Type=) changed, so a line added to or dropped from the unit
shows up here as a failure, whether or not the daemon itself is ready.

Environment: AW_PROBE_MASTER / AW_PROBE_WORKER (pids of the uWSGI sample
app's master and one worker, running as www-data), AW_PROBE_PORT (its TCP
port), AW_PROBE_STATS (its stats socket), AW_PROBE_FIFO (its master FIFO),
AW_PROBE_CGROUP (its service cgroup, relative to /sys/fs/cgroup).
Prints one "ok:" or "FAIL:" line per check; exits 1 if any failed.
"""

import errno
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

FAILED = []

CAP = {"CAP_DAC_OVERRIDE": 1, "CAP_KILL": 5, "CAP_NET_ADMIN": 12, "CAP_SYS_PTRACE": 19, "CAP_SYS_RESOURCE": 24}


def check(name):
    """Decorator: run a check, print ok/FAIL with its detail."""

    def wrap(fn):
        try:
            detail = fn()
            print(f"ok: {name}" + (f": {detail}" if detail else ""), flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            FAILED.append(name)
            print(f"FAIL: {name}: {type(e).__name__}: {e}", flush=True)
        return fn

    return wrap


def expect_errno(fn, *codes):
    try:
        fn()
    except OSError as e:
        if e.errno in codes:
            return errno.errorcode[e.errno]
        raise
    raise AssertionError("succeeded, but the sandbox should have refused it")


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


env = os.environ
master = int(env["AW_PROBE_MASTER"])
worker = int(env["AW_PROBE_WORKER"])
port = int(env["AW_PROBE_PORT"])
stats_sock = env["AW_PROBE_STATS"]
fifo = env["AW_PROBE_FIFO"]
app_cgroup = "/sys/fs/cgroup/" + env["AW_PROBE_CGROUP"].strip("/")


# --- capabilities -----------------------------------------------------------


@check("capabilities are exactly the unit's bounding set")
def _():
    status = read("/proc/self/status")
    eff = int(next(l for l in status.splitlines() if l.startswith("CapEff:")).split()[1], 16)
    want = sum(1 << bit for bit in CAP.values())
    have = [n for n, b in CAP.items() if eff & (1 << b)]
    assert eff == want, f"CapEff={eff:#x}, want {want:#x} ({' '.join(CAP)})"
    return " ".join(have)


# --- host memory --------------------------------------------------------------


@check("read /proc/meminfo and /proc/pressure/memory")
def _():
    assert "MemAvailable:" in read("/proc/meminfo")
    psi = read("/proc/pressure/memory")
    assert psi.startswith("some avg10="), psi
    return psi.splitlines()[0]


@check("arm a PSI trigger with a 500 ms window (CAP_SYS_RESOURCE)")
def _():
    fd = os.open("/proc/pressure/memory", os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, b"some 50000 500000\0")
        p = select.poll()
        p.register(fd, select.POLLPRI)
        events = p.poll(0)
        assert not any(ev & (select.POLLERR | select.POLLNVAL) for _, ev in events), events
    finally:
        os.close(fd)
    return "some 50000 500000"


# --- cgroups: read everything, write nothing -----------------------------------


@check("read the app's cgroup files")
def _():
    cur = int(read(f"{app_cgroup}/memory.current"))
    assert "anon " in read(f"{app_cgroup}/memory.stat")
    assert "oom_kill " in read(f"{app_cgroup}/memory.events")
    assert "populated 1" in read(f"{app_cgroup}/cgroup.events")
    read(f"{app_cgroup}/memory.pressure")
    return f"{app_cgroup}: memory.current={cur}"


@check("cannot write cgroup files (ProtectControlGroups)")
def _():
    return expect_errno(lambda: open(f"{app_cgroup}/memory.high", "w").close(), errno.EROFS)


# --- other users' processes ----------------------------------------------------


@check("list /proc/WORKER/fd of a www-data worker (CAP_SYS_PTRACE)")
def _():
    fds = os.listdir(f"/proc/{worker}/fd")
    assert fds
    return f"{len(fds)} fds"


@check("read /proc/WORKER/smaps_rollup and task/*/syscall (CAP_SYS_PTRACE)")
def _():
    assert "Pss:" in read(f"/proc/{worker}/smaps_rollup")
    tids = os.listdir(f"/proc/{worker}/task")
    lines = [read(f"/proc/{worker}/task/{t}/syscall").strip() for t in tids]
    return f"{len(tids)} threads, first: {lines[0][:40]}"


@check("signal a www-data worker (CAP_KILL, signal 0)")
def _():
    os.kill(worker, 0)


# --- uWSGI's stats socket and master FIFO (owned by www-data, 0750 dir) ---------


def read_stats(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


@check("connect to the stats socket (CAP_DAC_OVERRIDE)")
def _():
    st = read_stats(stats_sock)
    return f"{len(st['workers'])} workers, listen_queue={st.get('listen_queue')}"


@check("connect to the stats socket through /proc/MASTER/root (an app's private /tmp)")
def _():
    st = read_stats(f"/proc/{master}/root{stats_sock}")
    return f"{len(st['workers'])} workers"


@check("write to the master FIFO (CAP_DAC_OVERRIDE; FIFOs work on read-only mounts)")
def _():
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"s")  # "print stats to the log": harmless
    finally:
        os.close(fd)


# --- netlink: sock_diag ---------------------------------------------------------

NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10


def netlink_dump(proto, msg_type, payload):
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto) as s:
        s.settimeout(5)
        s.send(struct.pack("=LHHLL", 16 + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + payload)
        out = []
        while True:
            data = s.recv(1 << 16)
            off = 0
            while off < len(data):
                length, typ, _, _, _ = struct.unpack_from("=LHHLL", data, off)
                if typ == NLMSG_DONE:
                    return out
                if typ == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + 16)
                    raise OSError(-err, os.strerror(-err))
                out.append(data[off + 16 : off + length])
                off += (length + 3) & ~3


@check("sock_diag: TCP listen backlog of the app's socket")
def _():
    req = struct.pack("=BBBBL", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN) + bytes(48)
    for msg in netlink_dump(NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, req):
        (sport,) = struct.unpack_from("!H", msg, 4)
        if sport == port:
            rqueue, wqueue = struct.unpack_from("=LL", msg, 4 + 48 + 4)
            assert wqueue > 0, "no backlog limit reported"
            return f"127.0.0.1:{port} queue {rqueue}/{wqueue}"
    raise AssertionError(f"no LISTEN socket on port {port}")


@check("sock_diag: unix listen sockets with their queue (UNIX_DIAG_RQLEN)")
def _():
    UDIAG_SHOW_NAME, UDIAG_SHOW_RQLEN = 0x1, 0x10
    req = struct.pack("=BBHLLLLL", socket.AF_UNIX, 0, 0, 1 << TCP_LISTEN, 0,
                      UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN, 0xFFFFFFFF, 0xFFFFFFFF)
    for msg in netlink_dump(NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, req):
        off, name, rq = 16, None, None
        while off + 4 <= len(msg):
            alen, atype = struct.unpack_from("=HH", msg, off)
            body = msg[off + 4 : off + alen]
            if atype == 0:  # UNIX_DIAG_NAME
                name = body.rstrip(b"\0").decode(errors="replace")
            elif atype == 4:  # UNIX_DIAG_RQLEN
                rq = struct.unpack("=LL", body[:8])
            off += (alen + 3) & ~3
        if name == stats_sock:
            assert rq is not None, "no queue length"
            return f"{name} queue {rq[0]}/{rq[1]}"
    raise AssertionError(f"{stats_sock} not among the unix listen sockets")


# --- netlink: the proc connector (CAP_NET_ADMIN) --------------------------------

NETLINK_CONNECTOR, CN_IDX_PROC, CN_VAL_PROC = 11, 1, 1
PROC_CN_MCAST_LISTEN, PROC_EVENT_NONE, PROC_EVENT_FORK = 1, 0, 1


@check("proc connector: subscribe and see a fork (CAP_NET_ADMIN)")
def _():
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as s:
        s.settimeout(5)
        s.bind((0, CN_IDX_PROC))
        cn = struct.pack("=LLLLHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, 4, 0) + struct.pack("=L", PROC_CN_MCAST_LISTEN)
        s.send(struct.pack("=LHHLL", 16 + len(cn), NLMSG_DONE, 0, 0, 0) + cn)
        child = os.fork()
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data = s.recv(1 << 16)
            what, _cpu, _ts = struct.unpack_from("=LLQ", data, 16 + 20)
            ev = data[16 + 20 + 16 :]
            if what == PROC_EVENT_NONE:  # the subscription's ack
                (err,) = struct.unpack_from("=L", ev, 0)
                if err:
                    raise OSError(err, "proc connector refused: " + os.strerror(err))
            elif what == PROC_EVENT_FORK:
                _ppid, _ptgid, _cpid, ctgid = struct.unpack_from("=LLLL", ev, 0)
                if ctgid == child:
                    return f"fork of {child} seen"
        raise AssertionError("no fork event within 5 s")


# --- D-Bus: systemd places a process in a scope with a limit ---------------------


@check("D-Bus: StartTransientUnit scope with PIDs, Slice and MemoryMax")
def _():
    sleeper = subprocess.Popen(["sleep", "60"])
    scope = f"aw-probe-{sleeper.pid}.scope"
    try:
        subprocess.run(
            ["busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
             "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))",
             scope, "fail", "3", "PIDs", "au", "1", str(sleeper.pid),
             "Slice", "s", "aw-probe.slice", "MemoryMax", "t", str(100 << 20), "0"],
            check=True, capture_output=True, text=True, timeout=30)
        path = None
        for _ in range(50):
            cg = read(f"/proc/{sleeper.pid}/cgroup").strip().split("::", 1)[1]
            if cg.endswith("/" + scope):
                path = cg
                break
            time.sleep(0.1)
        assert path, f"the process stayed in {cg}"
        limit = read(f"/sys/fs/cgroup{path}/memory.max").strip()
        assert limit == str(100 << 20), f"memory.max={limit}"
        return f"{path} memory.max={limit}"
    except subprocess.CalledProcessError as e:
        raise AssertionError(e.stderr.strip()) from e
    finally:
        subprocess.run(["busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                        "org.freedesktop.systemd1.Manager", "StopUnit", "ss", scope, "fail"],
                       capture_output=True, timeout=30)
        sleeper.kill()
        sleeper.wait()


# --- IP: loopback only -------------------------------------------------------------


@check("TCP on loopback works (metrics endpoint)")
def _():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        addr = srv.getsockname()
        with socket.create_connection(addr, timeout=5):
            conn, _ = srv.accept()
            conn.close()
    return f"127.0.0.1:{addr[1]}"


@check("IP to a non-loopback address is refused (IPAddressDeny=any)")
def _():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return expect_errno(lambda: s.sendto(b"x", ("192.0.2.2", 9)), errno.EPERM)


# --- what the sandbox takes away ----------------------------------------------------


@check("cannot write /etc, /usr or /var (ProtectSystem=strict)")
def _():
    codes = [expect_errno(lambda p=p: open(p, "w").close(), errno.EROFS)
             for p in ("/etc/aw-probe", "/usr/aw-probe", "/var/lib/aw-probe")]
    return " ".join(codes)


@check("home directories are hidden (ProtectHome)")
def _():
    for d in ("/root", "/home"):
        try:
            entries = os.listdir(d)
        except PermissionError:
            continue
        assert entries == [], f"{d} lists {entries}"


@check("no device nodes beyond the pseudo devices (PrivateDevices)")
def _():
    assert not os.path.exists("/dev/vda"), "/dev/vda is visible"
    return " ".join(sorted(os.listdir("/dev"))[:8]) + " ..."


if FAILED:
    print(f"{len(FAILED)} check(s) failed: {', '.join(FAILED)}", flush=True)
    sys.exit(1)
print("all checks passed", flush=True)
