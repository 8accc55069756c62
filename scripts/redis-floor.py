#!/usr/bin/env python3
"""The least Redis CPU a long-poll echo can cost, whatever the node does.

Starts its own redis-server (on CPU 0 where taskset exists, this client on CPU 1) and, for
each shape of an echo's commands, replays echoes for a while and divides the CPU redis-server
spent (utime + stime from /proc) by the echoes:

  ping   two PINGs: one round trip for the send, one for the sync, nothing done
  plain  the commands an echo cannot do without, sent bare: RPUSH, HINCRBY, PUBLISH for the
         send; LRANGE, LTRIM, HSET for the sync (no check of any kind)
  multi  the same six inside MULTI/EXEC, one transaction per round trip
  lua    the same six in two small scripts that also read the connector's state (HMGET)
         before they write, as a store must

Each shape runs two ways: `pipelined` sends the round trips of all clients in one write on
one connection (the best batching a node could reach), `conns` gives each client its own
connection with one round trip in flight.

Usage: ./scripts/redis-floor.py [seconds-per-run] [clients] [runs]   (default 4 10 3)
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
TEXT = '{"ns":"org.jwebsocket.plugins.system","type":"send","data":"hello world 0123456789"}'

SEND_LUA = """local c, q = KEYS[1], KEYS[2]
local f = redis.call('HMGET', c, 'closed', 'last', 'bytes', 'holder')
if f[1] ~= '' then return 0 end
redis.call('RPUSH', q, ARGV[1])
redis.call('HSET', c, 'last', tonumber(f[2]) + 1, 'bytes', tonumber(f[3]) + #ARGV[1])
if f[4] ~= '' then redis.call('PUBLISH', 'n:' .. f[4], ARGV[2]) end
return 1"""
POLL_LUA = """local c, q = KEYS[1], KEYS[2]
local f = redis.call('HMGET', c, 'closed', 'last', 'acked')
if f[1] ~= '' then return 0 end
local p = {}
if tonumber(f[2]) > tonumber(f[3]) then
  p = redis.call('LRANGE', q, 0, -1)
  redis.call('DEL', q)
  redis.call('HSET', c, 'acked', f[2], 'bytes', 0, 'holder', '')
else
  redis.call('HSET', c, 'holder', ARGV[1])
end
return p"""


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    """A RESP connection that writes a batch of commands at once and reads their replies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("redis-server closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind in b"+:":
            return rest
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            value, self.buf = self.buf[:n], self.buf[n + 2 :]
            return value
        if kind == b"*":
            return [self.read() for _ in range(max(int(rest), 0))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def batch(self, commands):
        self.sock.sendall(b"".join(encode(*c) for c in commands))
        return [self.read() for _ in commands]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port, workdir):
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and os.cpu_count() >= 2 else []
    proc = subprocess.Popen(
        pin + ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            Conn(port).batch([["PING"]])
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_trips(shape, cid, shas):
    """The send's and the sync's commands of one echo for connector `cid`."""
    c, q = f"c:{cid}", f"q:{cid}"
    if shape == "ping":
        return [["PING"]], [["PING"]]
    send = [["RPUSH", q, TEXT], ["HINCRBY", c, "last", 1], ["PUBLISH", "n:node1", cid]]
    sync = [["LRANGE", q, 0, -1], ["LTRIM", q, 1, -1], ["HSET", c, "holder", "node1"]]
    if shape == "plain":
        return send, sync
    if shape == "multi":
        return [["MULTI"], *send, ["EXEC"]], [["MULTI"], *sync, ["EXEC"]]
    return [["EVALSHA", shas[0], 2, c, q, TEXT, cid]], [["EVALSHA", shas[1], 2, c, q, "node1"]]


def run(port, pid, shape, mode, shas):
    """Echoes for SECONDS; returns redis-server's CPU µs per echo."""
    ids = [f"{mode}{i}" for i in range(CLIENTS)]
    setup = Conn(port)
    for cid in ids:
        setup.batch([["DEL", f"c:{cid}", f"q:{cid}"],
                     ["HSET", f"c:{cid}", "closed", "", "last", 0, "acked", 0, "bytes", 0, "holder", "node1"]])
    echoes = [0] * CLIENTS
    stop = time.monotonic() + SECONDS

    def one_client(i):
        conn, (send, sync) = Conn(port), round_trips(shape, ids[i], shas)
        while time.monotonic() < stop:
            conn.batch(send)
            conn.batch(sync)
            echoes[i] += 1

    before = cpu_seconds(pid)
    if mode == "pipelined":
        conn = Conn(port)
        trips = [round_trips(shape, cid, shas) for cid in ids]
        sends = [c for send, _ in trips for c in send]
        syncs = [c for _, sync in trips for c in sync]
        while time.monotonic() < stop:
            conn.batch(sends)
            conn.batch(syncs)
            echoes[0] += CLIENTS
    else:
        threads = [threading.Thread(target=one_client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return (cpu_seconds(pid) - before) / sum(echoes) * 1e6


def drain(sock):
    """Reads and drops whatever comes, until the connection ends."""
    while sock.recv(1 << 20):
        pass


def main():
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is missing (./scripts/test.sh installs it)")
    if shutil.which("taskset") and os.cpu_count() >= 2:
        os.sched_setaffinity(0, {1})
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        redis = start_redis(port, workdir)
        try:
            conn = Conn(port)
            # Wake-ups go to a subscriber that reads them, as a node's would.
            sub = Conn(port)
            sub.batch([["SUBSCRIBE", "n:node1"]])
            threading.Thread(target=drain, args=(sub.sock,), daemon=True).start()
            shas = [conn.batch([["SCRIPT", "LOAD", s]])[0].decode() for s in (SEND_LUA, POLL_LUA)]
            print(f"redis-server CPU per echo, µs ({CLIENTS} clients, {SECONDS:g} s a run, {RUNS} runs)")
            print(f"{'shape':<6} {'mode':<10} {'median':>7}   runs")
            for shape in ("ping", "plain", "multi", "lua"):
                for mode in ("pipelined", "conns"):
                    values = [run(port, redis.pid, shape, mode, shas) for _ in range(RUNS)]
                    runs = " / ".join(f"{v:.1f}" for v in values)
                    print(f"{shape:<6} {mode:<10} {statistics.median(values):7.1f}   {runs}", flush=True)
        finally:
            redis.kill()
            redis.wait()


if __name__ == "__main__":
    main()
