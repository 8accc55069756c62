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
  pollgate  pollgate's own scripts (src/store/redis/lua), with the arguments a node sends
         for an echo: send.lua (a send to oneself, no seq) and poll.lua (a sync that begins
         and drains)
  memory the send's one small script also publishes the packet itself and removes what the
         connector's last sync acknowledged; the sync answers from the node's memory and
         sends Redis nothing (a design pollgate does not have: what it would cost Redis)

Each shape runs two ways: `pipelined` sends the round trips of all clients in one write on
one connection (the best batching a node could reach), `conns` gives each client its own
connection with one round trip in flight.

With --instructions, each shape instead runs a fixed number of pipelined echoes in a
redis-server under valgrind's callgrind and prints the instructions redis-server ran per
echo: a count that does not move with what else the machine is doing (within a fraction
of a percent), to compare one version of the scripts with another. It ends with what the
pieces of a script cost, each piece a small script run 3,000 times (instructions a call).

Usage: ./scripts/redis-floor.py [seconds-per-run] [clients] [runs]   (default 4 10 3)
       ./scripts/redis-floor.py --instructions [echoes-per-client] [clients]   (default 300 10)
"""
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

if sys.argv[1:2] in (["-h"], ["--help"]):
    print(__doc__)
    sys.exit(0)
INSTRUCTIONS = sys.argv[1:2] == ["--instructions"]
ARGS = sys.argv[2:] if INSTRUCTIONS else sys.argv[1:]
try:
    SECONDS = float(ARGS[0]) if len(ARGS) > 0 and not INSTRUCTIONS else 4.0
    ECHOES = int(ARGS[0]) if len(ARGS) > 0 and INSTRUCTIONS else 300
    CLIENTS = int(ARGS[1]) if len(ARGS) > 1 else 10
    RUNS = int(ARGS[2]) if len(ARGS) > 2 else 3
except ValueError as e:
    sys.exit(f"redis-floor.py: {e} (--help tells the arguments)")
LUA = pathlib.Path(__file__).resolve().parent.parent / "src" / "store" / "redis" / "lua"
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
MEMORY_LUA = """local c, q = KEYS[1], KEYS[2]
local f = redis.call('HMGET', c, 'closed', 'last', 'acked', 'bytes', 'holder')
if f[1] ~= '' then return 0 end
local bytes, acked = tonumber(f[4]), tonumber(f[3])
for _, p in ipairs(redis.call('LPOP', q, ARGV[2]) or {}) do
  bytes, acked = bytes - #p, acked + 1
end
local last = tonumber(f[2]) + 1
redis.call('RPUSH', q, ARGV[1])
redis.call('HSET', c, 'last', last, 'acked', acked, 'bytes', bytes + #ARGV[1])
redis.call('PUBLISH', 'n:' .. f[5], ARGV[3] .. ':' .. last .. ':' .. ARGV[1])
return last"""


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


def start_redis(port, workdir, wrapper=()):
    """redis-server on CPU 0, run by `wrapper` (a command line before it) if given."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and os.cpu_count() >= 2 else []
    proc = subprocess.Popen(
        pin + list(wrapper) + ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Under valgrind it takes seconds to start.
    for _ in range(600):
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


# What a node sends for an echo on pollgate's scripts: a system `send` to oneself (its
# response queued for the requester), then a sync that begins, drains and answers at once.
SESSION = "318ec10a94968337189d1f7e055e9f62"
WELCOME = '{"ns":"org.jwebsocket.plugins.system","type":"welcome"}'
RESPONSE = '{"type":"response","code":0,"msg":"ok","utid":1,"ns":"org.jwebsocket.plugins.system","reqType":"send"}'
TTL_MS, GRANULARITY_MS = 3600000, 1000


def load_scripts(conn):
    """The context of the runs: the shas of the `lua` shape's scripts and of pollgate's open,
    send and poll, as its store builds them (touch_fn.lua before send.lua and poll.lua).
    setup() adds the session version and the opening time of pollgate's connectors."""
    touch_fn = (LUA / "touch_fn.lua").read_text()
    sources = {"lua_send": SEND_LUA, "lua_poll": POLL_LUA, "memory": MEMORY_LUA,
               "open": (LUA / "open.lua").read_text(), "send": touch_fn + (LUA / "send.lua").read_text(), "poll": touch_fn + (LUA / "poll.lua").read_text()}
    return {name: conn.batch([["SCRIPT", "LOAD", text]])[0].decode() for name, text in sources.items()}


def setup(port, shape, mode, ctx):
    """Fresh connectors for one run; returns their ids."""
    ids = [f"{mode}{i}" for i in range(CLIENTS)]
    conn = Conn(port)
    for cid in ids:
        if shape != "pollgate":
            conn.batch([["DEL", f"c:{cid}", f"q:{cid}"],
                        ["HSET", f"c:{cid}", "closed", "", "last", 0, "acked", 0, "bytes", 0, "holder", "node1"]])
            continue
        now = int(time.time() * 1000)
        conn.batch([["DEL", f"f:c:{cid}", f"f:q:{cid}"]])
        opened = conn.batch([["EVALSHA", ctx["open"], 0, "f:", cid, SESSION, "127.0.0.1", "redis-floor", now, 1,
                              1000000, WELCOME, TTL_MS]])
        assert opened == [b"opened"], opened
        ctx["version"] = conn.batch([["HGET", f"f:sm:{SESSION}", "v"]])[0].decode()
        ctx["now"] = now
        send, sync = round_trips(shape, cid, ctx)
        # The welcome, then one whole echo: each must answer as the node expects.
        conn.batch(sync)
        assert conn.batch(send)[0] == [b"ok"], "send.lua did not queue the echo"
        polled = conn.batch(sync)[0]
        assert polled[2] == b"ok" and polled[6:] == [RESPONSE.encode()], polled
    return ids


def round_trips(shape, cid, ctx):
    """The send's and the sync's commands of one echo for connector `cid`."""
    c, q = f"c:{cid}", f"q:{cid}"
    if shape == "ping":
        return [["PING"]], [["PING"]]
    if shape == "pollgate":
        # `now` stays that of the opening: within the granularity, as a busy connector's.
        now, since = ctx["now"], ctx["now"] - GRANULARITY_MS
        send = ["EVALSHA", ctx["send"], 0, "f:", cid, now, TTL_MS, since, SESSION, ctx["version"], "1", "",
                10000, 64, "-", 1000, 4194304, 2, "$is_authenticated", "$authorities", cid, RESPONSE]
        sync = ["EVALSHA", ctx["poll"], 0, "f:", cid, "", "", now, "", "node1", TTL_MS, since, ""]
        return [send], [sync]
    if shape == "memory":
        # The sync before acknowledged one packet, the echo before this one.
        return [["EVALSHA", ctx["memory"], 2, c, q, TEXT, 1, cid]], []
    send = [["RPUSH", q, TEXT], ["HINCRBY", c, "last", 1], ["PUBLISH", "n:node1", cid]]
    sync = [["LRANGE", q, 0, -1], ["LTRIM", q, 1, -1], ["HSET", c, "holder", "node1"]]
    if shape == "plain":
        return send, sync
    if shape == "multi":
        return [["MULTI"], *send, ["EXEC"]], [["MULTI"], *sync, ["EXEC"]]
    return [["EVALSHA", ctx["lua_send"], 2, c, q, TEXT, cid]], [["EVALSHA", ctx["lua_poll"], 2, c, q, "node1"]]


def pipelined(shape, ids, ctx):
    """The two batches of a pipelined round of echoes, one for each connector of `ids`: every
    send's commands, then every sync's."""
    trips = [round_trips(shape, cid, ctx) for cid in ids]
    return [[c for send, _ in trips for c in send], [c for _, sync in trips for c in sync]]


def run(port, pid, shape, mode, ctx):
    """Echoes for SECONDS; returns redis-server's CPU µs per echo."""
    ids = setup(port, shape, mode, ctx)
    echoes = [0] * CLIENTS
    stop = time.monotonic() + SECONDS

    def one_client(i):
        conn, (send, sync) = Conn(port), round_trips(shape, ids[i], ctx)
        while time.monotonic() < stop:
            conn.batch(send)
            conn.batch(sync)
            echoes[i] += 1

    before = cpu_seconds(pid)
    if mode == "pipelined":
        conn = Conn(port)
        sends, syncs = pipelined(shape, ids, ctx)
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


def counted(prepare, rounds):
    """Instructions redis-server runs for each workload of `prepare(port)`, in one
    redis-server under callgrind. `prepare` runs first, uncounted, and returns the workloads,
    each a list of batches (lists of commands, each batch written at once); a workload's
    count covers `rounds` rounds of its batches."""
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        out = os.path.join(workdir, "callgrind.out")
        redis = start_redis(port, workdir, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
        try:
            workloads = prepare(port)
            conn = Conn(port)
            counts = []
            # Each workload is counted from a --zero to a --dump, which writes the next part.
            for part, work in enumerate(workloads, start=1):
                subprocess.run(["callgrind_control", "--zero", str(redis.pid)], check=True, capture_output=True)
                for _ in range(rounds):
                    for batch in work:
                        conn.batch(batch)
                subprocess.run(["callgrind_control", "--dump", str(redis.pid)], check=True, capture_output=True)
                with open(f"{out}.{part}") as dump:
                    counts.append(next(int(line.split()[1]) for line in dump if line.startswith("summary:")))
            return counts
        finally:
            redis.kill()
            redis.wait()


def instructions(shape):
    """Instructions redis-server runs per echo of `shape`, ECHOES pipelined rounds of CLIENTS
    echoes (the opening of the connectors left out)."""

    def prepare(port):
        ctx = load_scripts(Conn(port))
        return [pipelined(shape, setup(port, shape, "pipelined", ctx), ctx)]

    [total] = counted(prepare, ECHOES)
    return total / (ECHOES * CLIENTS)


# The pieces of a script: (what, script, its arguments). A connector's hash as open.lua
# writes it is at key `h`.
# A piece whose name starts with '+' is counted over the first one's cost.
PIECES = [
    ("a script that returns at once, no arguments", "return 1", []),
    ("the same, 21 arguments", "return 1", ["1814"] * 21),
    ("+ HGET of one field", "redis.call('HGET', 'h', 'closed') return 1", []),
    ("+ HMGET of 8 fields", "redis.call('HMGET', 'h', 'closed', 'active', 'sid', 'ticket', 'holder', 'last', "
     "'acked', 'bytes') return 1", []),
    ("+ HSET of one field", "redis.call('HSET', 'h', 'ticket', '1815') return 1", []),
    ("+ 10 tonumber of a counter's text", "local a for i = 1, 10 do a = tonumber(ARGV[1]) end return 1", ["1814"]),
    ("+ 10 string.format('%d')", "local a for i = 1, 10 do a = string.format('%d', 1814 + i) end return 1", []),
    ("+ 10 comparisons of decimal text", "local a, b, r = ARGV[1], ARGV[2] for i = 1, 10 do r = #a > #b or "
     "(#a == #b and a > b) end return 1", ["1814", "1796606054364"]),
]


def piece_costs():
    """Instructions a call of each of PIECES, 3,000 calls 10 at a time."""
    rounds = 300

    def prepare(port):
        conn = Conn(port)
        conn.batch([["HSET", "h", "closed", "", "active", 1796606054364, "sid", SESSION, "ticket", 1814, "holder", "",
                     "last", 1814, "acked", 1814, "bytes", 0, "addr", "127.0.0.1:45678", "ua", "redis-floor"]])
        shas = [conn.batch([["SCRIPT", "LOAD", script]])[0].decode() for _, script, _ in PIECES]
        return [[[["EVALSHA", sha, 0, *args]] * 10] for sha, (_, _, args) in zip(shas, PIECES)]

    return [(what, total / (rounds * 10)) for (what, _, _), total in zip(PIECES, counted(prepare, rounds))]


def drain(sock):
    """Reads and drops whatever comes, until the connection ends."""
    while sock.recv(1 << 20):
        pass


SHAPES = ("ping", "plain", "multi", "lua", "pollgate", "memory")


def main():
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is missing (./scripts/test.sh installs it)")
    if shutil.which("taskset") and os.cpu_count() >= 2:
        os.sched_setaffinity(0, {1})
    if INSTRUCTIONS:
        if shutil.which("valgrind") is None:
            sys.exit("valgrind is missing (apt-get install valgrind)")
        print(f"redis-server instructions per echo ({CLIENTS} clients, {ECHOES} pipelined echoes each)")
        for shape in SHAPES:
            print(f"{shape:<9} {instructions(shape):>10,.0f}", flush=True)
        print("redis-server instructions per call of a script (10 calls a write)")
        costs = piece_costs()
        for what, cost in costs:
            cost -= costs[0][1] if what.startswith("+") else 0
            print(f"{cost:>10,.0f}  {what}", flush=True)
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        redis = start_redis(port, workdir)
        try:
            conn = Conn(port)
            # Wake-ups go to a subscriber that reads them, as a node's would.
            sub = Conn(port)
            sub.batch([["SUBSCRIBE", "n:node1"]])
            threading.Thread(target=drain, args=(sub.sock,), daemon=True).start()
            ctx = load_scripts(conn)
            print(f"redis-server CPU per echo, µs ({CLIENTS} clients, {SECONDS:g} s a run, {RUNS} runs)")
            print(f"{'shape':<9} {'mode':<10} {'median':>7}   runs")
            for shape in SHAPES:
                for mode in ("pipelined", "conns"):
                    values = [run(port, redis.pid, shape, mode, ctx) for _ in range(RUNS)]
                    runs = " / ".join(f"{v:.1f}" for v in values)
                    print(f"{shape:<9} {mode:<10} {statistics.median(values):7.1f}   {runs}", flush=True)
        finally:
            redis.kill()
            redis.wait()


if __name__ == "__main__":
    main()
