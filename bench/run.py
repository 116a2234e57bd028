#!/usr/bin/env python3
"""HTTP benchmark: fnhost vs `wasmtime serve` vs a native hyper server, same component, one run.

Usage: python3 bench/run.py [--duration 5] [--rounds 3] [--conns 1,16,64] [--out BENCHMARKS.md]
       python3 bench/run.py --languages   # JS and Python examples vs the Rust hello
       python3 bench/run.py --p3 [--skip-build]  # WASI 0.3: fresh vs reused instances
       python3 bench/run.py --p3-wait [--skip-build]  # WASI 0.3 handlers that wait: instances, memory
       python3 bench/run.py --traces [--baseline BIN]  # tracing off / sampled out / exported
       python3 bench/run.py --wakes [--rounds 10] [--skip-build]  # durable steps: sleep and event wake times
       python3 bench/run.py --background [--duration 5] [--rounds 2] [--backlog 5000]
                            [--queues sqlite,pg1,pg2]   # background functions vs sync

Steps, all on this machine, loopback only, every load bounded by --duration:
  1. builds fnhost (release), examples/hello (wasm32-wasip2) and bench/native-hello (release);
  2. installs the reference `wasmtime` CLI of the same wasmtime version fnhost pins
     (`cargo install --locked wasmtime-cli@VERSION --root target/bench/tools`), run with its
     pooling allocator on;
  3. installs wrk from Debian when missing;
  4. for each round and each connection count, runs the servers in turn (their order rotates
     each round so drift shows), wrk -t2 -cN -dD --latency against each;
  5. prints requests/s and p50/p99 latency per server, the ratios fnhost / wasmtime serve and
     fnhost / native (medians over rounds), and writes them to --out with the machine's
     description.

--languages builds examples/js-hello and examples/python-hello too (npm and componentize-py in
target/tools/python, as .ci/run installs them) and reports, per language: component size,
first start (compiling, empty cache) and cached start of a release fnhost, and requests/s and
latency at 1 and 16 connections, as ratios to the Rust hello measured in the same run.

--background serves the hello component as `hello` (sync) and as `noop-background` (a
background function: answered 202, run from the durable queue) and reports, per round: sync
req/s (GET, 64 clients, after a 1 s warm-up); then for each queue of --queues (sqlite: the
embedded queue; pg1, pg2: one and two fnhost nodes on one database of a throwaway PostgreSQL
started from Debian's packages by tests/pg/tmp-postgres.sh, stopped at the end; rows say "not
run" when PostgreSQL is not installed), each on a fresh, empty queue: accepted/s and 202
p50/p99 of `POST {"job": 1}` at 1 and 64 clients for --duration, and completed runs/s for a
backlog of at least --backlog jobs POSTed at 64 clients (succeeded / (last finished_at - first
created_at), read from the database once nothing is queued, running or retrying; bounded by
300 s), with the number of invocations run twice (attempts > 1 or interrupted). It prints the
medians, the ratios to sync, pg1 / sqlite and pg2 / pg1, and the issue's targets. Servers' logs
are in target/bench/run/.

--p3 serves the WASI 0.3 test guest (tests/guests/p3, `GET …/hi`) from fnhost with a fresh
instance per request (the default) and with `reuse = 1000`, the 0.2 hello beside it, and the
same 0.3 component under `wasmtime serve` (whose 0.3 defaults reuse an instance for up to 128
requests, 16 at once); it reports req/s and latency at 1 and 16 connections and the ratios
reuse / fresh, 0.3 fresh / 0.2, and fnhost reuse / wasmtime serve.

Each mode rewrites its own section of --out."""

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The binary measured; FNHOST_BIN=PATH measures another build (an A/B of two commits in one run).
FNHOST = Path(os.environ.get("FNHOST_BIN", ROOT / "target/release/fnhost"))
BENCH = ROOT / "target" / "bench"
TOOLS = BENCH / "tools"


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def wasmtime_version():
    text = (ROOT / "Cargo.toml").read_text()
    # `wasmtime = "V"` or `wasmtime = { version = "V", ... }`
    return re.search(r'^wasmtime = (?:\{ version = )?"([^"]+)"', text, re.M).group(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def wait_answer(url, proc, timeout=180):
    """Until `url` answers at all: a server may accept connections before its functions are
    compiled (big components take seconds)."""
    import urllib.error
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} never answered")


def build():
    run(["cargo", "build", "--release", "-p", "fnhost", "-p", "native-hello"], cwd=ROOT)
    comps = BENCH / "components"
    run([FNHOST, "build", ROOT / "examples/hello", "--out", comps], cwd=ROOT,
        env={**os.environ, "CARGO_TARGET_DIR": str(ROOT / "target/guests")})
    version = wasmtime_version()
    wasmtime = TOOLS / "bin" / "wasmtime"
    have = subprocess.run([wasmtime, "--version"], capture_output=True, text=True).stdout if wasmtime.exists() else ""
    if version not in have:
        run(["cargo", "install", "--locked", f"wasmtime-cli@{version}", "--root", TOOLS])
    if not shutil.which("wrk"):
        run(["apt-get", "install", "-y", "wrk"])
    return comps / "hello.wasm", wasmtime


def servers(hello, wasmtime, work):
    fnhost = FNHOST
    funcs = work / "functions"
    funcs.mkdir(parents=True, exist_ok=True)
    shutil.copy(hello, funcs / "hello.wasm")
    (work / "fnhost.toml").write_text("[server]\nmax_concurrency = 1024\n")
    return {
        # Budgets stay enforced: 10 s epoch deadline + host timeout, 1024 MB memory cap.
        "fnhost": lambda port: [fnhost, "serve", funcs, "--listen", f"127.0.0.1:{port}",
                                "--config", work / "fnhost.toml", "--data-dir", work / "data",
                                "--cache-dir", work / "cache"],
        "wasmtime serve": lambda port: [wasmtime, "serve", "-O", "pooling-allocator=y", "-S", "cli=y",
                                        "--addr", f"127.0.0.1:{port}", hello],
        "native hyper": lambda port: [ROOT / "target/release/native-hello", f"127.0.0.1:{port}"],
    }


def parse_latency(text, pct):
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


# Servers run as in production: without the developer's RUST_BACKTRACE (it makes wasmtime
# capture a backtrace per dropped store, in `wasmtime serve` as in fnhost).
SERVER_ENV = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE")}


def cpu_seconds(pid):
    """User + system CPU time a process has used so far (/proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid):
    """The most resident memory a process has had (/proc/PID/status VmHWM), in MB."""
    kb = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)
    return int(kb) / 1024


def measure(argv, path, conns, duration, env=None, after=None, cpu=False, memory=False):
    """wrk against the server `argv(port)` starts (with `env` added to its environment): req/s,
    p50, p99; with `cpu`, the server's CPU time per request in µs over the timed run (all its
    threads: steadier than req/s on a shared machine); `after(base_url)` runs before the server
    stops; with `memory`, the server's peak resident memory in MB. Extra values are appended in
    that order."""
    port = free_port()
    proc = subprocess.Popen([str(a) for a in argv(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**SERVER_ENV, **(env or {})})
    try:
        wait_port(port, proc)
        url = f"http://127.0.0.1:{port}{path}"
        wait_answer(url, proc)
        threads = str(min(2, conns))
        subprocess.run(["wrk", "-t", threads, "-c", str(conns), "-d", "1s", url], capture_output=True, check=True)
        cpu_before = cpu_seconds(proc.pid) if cpu else 0.0
        out = subprocess.run(["wrk", "-t", threads, "-c", str(conns), "-d", f"{duration}s", "--latency", url],
                             capture_output=True, text=True, check=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            raise RuntimeError(f"{errors.group(1)} error responses:\n{out}")
        result = (rps, parse_latency(out, 50), parse_latency(out, 99))
        if cpu:
            requests = int(re.search(r"(\d+) requests in", out).group(1))
            result += ((cpu_seconds(proc.pid) - cpu_before) * 1e6 / requests,)
        if after:
            result += (after(f"http://127.0.0.1:{port}"),)
        return result + (peak_rss_mb(proc.pid),) if memory else result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def machine():
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    except OSError:
        mem = 0
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB, {platform.system()} {platform.release()}"


def write_section(path, heading, body):
    """Replaces the `## heading` section of the report at `path` (appends it when absent)."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"## {heading}\n\n{body.strip()}\n"
    start = text.find(f"## {heading}\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    path.write_text(text)
    print(f"written to {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, help="default: 3, 2 with --background")
    ap.add_argument("--conns", default="1,16,64")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--background", action="store_true",
                    help="instead: background functions vs sync (accepted/s, 202 latency, runs/s) on"
                         " SQLite and PostgreSQL")
    ap.add_argument("--backlog", type=int, default=5000, help="--background: jobs POSTed for runs/s")
    ap.add_argument("--queues", default="sqlite,pg1,pg2", help="--background: sqlite, pg1, pg2")
    ap.add_argument("--p3-wait", action="store_true",
                    help="instead: WASI 0.3 handlers that wait: instances made and memory, fresh/reuse/shared")
    ap.add_argument("--p3", action="store_true",
                    help="instead: a WASI 0.3 function, fresh instances vs reuse, vs wasmtime serve")
    ap.add_argument("--traces", action="store_true",
                    help="instead: tracing's cost: off, on at 0 %% sampling, on at 100 %% to a live receiver")
    ap.add_argument("--baseline", help="--traces: a fnhost binary from before traces, measured beside")
    ap.add_argument("--wakes", action="store_true",
                    help="instead: durable steps: how late a 2 s sleep re-runs, how soon an event wakes a wait")
    ap.add_argument("--languages", action="store_true",
                    help="instead: the JS and Python examples vs the Rust hello (size, start, latency)")
    args = ap.parse_args()
    if args.rounds is None:
        args.rounds = 2 if args.background else 3
    if args.languages:
        return languages(args)
    if args.p3:
        return p3(args)
    if args.p3_wait:
        return p3_wait(args)
    if args.traces:
        return traces(args)
    if args.wakes:
        return wakes(args)
    conns = [int(c) for c in args.conns.split(",")]

    if args.skip_build:
        hello, wasmtime = BENCH / "components/hello.wasm", TOOLS / "bin/wasmtime"
    else:
        hello, wasmtime = build()
    work = BENCH / "run"
    shutil.rmtree(work, ignore_errors=True)
    if args.background:
        return background(hello, work, args)
    table = servers(hello, wasmtime, work)
    paths = {"fnhost": "/.netlify/functions/hello", "wasmtime serve": "/", "native hyper": "/"}
    names = list(table)
    results = {}  # (name, conns) -> [(rps, p50, p99)]
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for c in conns:
            for name in order:
                r = measure(table[name], paths[name], c, args.duration)
                results.setdefault((name, c), []).append(r)
                print(f"round {rnd + 1} c={c:<3} {name:<15} {r[0]:>10.0f} req/s  p50 {r[1]:.3f} ms  p99 {r[2]:.3f} ms",
                      flush=True)

    med = lambda xs: statistics.median(xs)
    lines = [
        f"Machine: {machine()}. Load generator: wrk (2 threads) on the same machine, loopback.",
        f"Component: examples/hello. wasmtime {wasmtime_version()} for both fnhost and `wasmtime serve`"
        " (pooling allocator on). fnhost runs with its budgets enforced (epoch deadline + host timeout,"
        " memory cap).",
        f"Each cell: median of {args.rounds} rounds of {args.duration} s (all rounds in parentheses);"
        " servers run in turn, order rotating each round.",
        "",
        f"Command: `python3 bench/run.py --duration {args.duration} --rounds {args.rounds} --conns {args.conns}`",
        "",
        "| conns | server | req/s | p50 ms | p99 ms |",
        "|---:|---|---:|---:|---:|",
    ]
    for c in conns:
        for name in names:
            rs = results[(name, c)]
            rps = [r[0] for r in rs]
            lines.append(f"| {c} | {name} | {med(rps):.0f} ({', '.join(f'{x:.0f}' for x in rps)}) "
                         f"| {med([r[1] for r in rs]):.3f} | {med([r[2] for r in rs]):.3f} |")
    lines += ["", "| conns | fnhost / wasmtime serve | fnhost / native |", "|---:|---:|---:|"]
    for c in conns:
        f = med([r[0] for r in results[("fnhost", c)]])
        w = med([r[0] for r in results[("wasmtime serve", c)]])
        n = med([r[0] for r in results[("native hyper", c)]])
        lines.append(f"| {c} | {f / w:.2f} | {f / n:.2f} |")
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    write_section(args.out, "fnhost vs wasmtime serve vs native hyper (hello)", report)


BG_SQL_STATS = ("SELECT COUNT(*), SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END), MIN(created_at),"
                " MAX(finished_at), SUM(CASE WHEN attempts > 1 OR interruptions > 0 THEN 1 ELSE 0 END)"
                " FROM invocations")
BG_SQL_PENDING = "SELECT COUNT(*) FROM invocations WHERE state IN ('queued', 'running', 'retrying')"
BG_PATH = "/.netlify/functions/noop-background"
BG_POST = 'wrk.method = "POST"\nwrk.body = \'{"job": 1}\'\nwrk.headers["Content-Type"] = "application/json"\n'
PG_SCRIPT = ROOT / "tests/pg/tmp-postgres.sh"


def log_tail(log, lines=30):
    try:
        text = Path(log).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log {log}: {e})"
    return f"--- last {min(lines, len(text))} lines of {log} ---\n" + "\n".join(text[-lines:])


class Node:
    """A release `fnhost serve` on a free port; stdout and stderr go to a log under `work`."""

    def __init__(self, funcs, work, name, queue=None):
        self.port = free_port()
        self.data = work / f"data-{name}"
        shutil.rmtree(self.data, ignore_errors=True)
        self.log = work / f"{name}-{self.port}.log"
        argv = [FNHOST, "serve", funcs, "--listen", f"127.0.0.1:{self.port}",
                "--config", work / "fnhost.toml", "--data-dir", self.data, "--cache-dir", work / "cache"]
        if queue:
            argv += ["--queue", queue]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                                         env=SERVER_ENV)
        try:
            wait_port(self.port, self.proc, timeout=600)  # the first start compiles the components
        except Exception as e:
            self.stop()
            print(f"fnhost {name} did not start: {e}\n{log_tail(self.log)}", flush=True)
            raise

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def check(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"fnhost on port {self.port} exited with {self.proc.returncode}")

    def stop(self):
        stop(self.proc)


class Nodes:
    """`count` nodes on one queue, stopped on exit; on an error, prints the tails of their logs."""

    def __init__(self, funcs, work, name, queue=None, count=1):
        self.args, self.name, self.queue, self.count, self.nodes = (funcs, work), name, queue, count, []

    def __enter__(self):
        try:
            for i in range(self.count):
                self.nodes.append(Node(*self.args, f"{self.name}-{'ab'[i]}" if self.count > 1 else self.name,
                                       self.queue))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.nodes

    def __exit__(self, kind, error, tb):
        for node in self.nodes:
            node.stop()
        if kind is not None:
            print(f"error in {self.name}: {error}", flush=True)
            for node in self.nodes:
                print(log_tail(node.log), flush=True)
        return False


def wrk_cmd(url, conns, duration, script=None):
    cmd = ["wrk", "-t", str(min(2, conns)), "-c", str(conns), "-d", f"{duration}s", "--latency", url]
    return cmd + (["-s", str(script)] if script else [])


def wrk_result(cmd, proc, out, err):
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{out}{err}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} error responses:\n{out}")
    socket_errors = re.search(r"Socket errors: .*", out)
    if socket_errors:
        raise RuntimeError(f"{socket_errors.group(0)}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, parse_latency(out, 50), parse_latency(out, 99), requests


def wrk_all(loads):
    """Runs one wrk per (url, conns, duration, script) at once; returns their results."""
    cmds = [wrk_cmd(*load) for load in loads]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in cmds]
    outs = [p.communicate() for p in procs]
    return [wrk_result(cmd, p, out, err) for cmd, p, (out, err) in zip(cmds, procs, outs)]


class TmpPostgres:
    """The throwaway PostgreSQL of tests/pg/tmp-postgres.sh; `missing` says why when not installed."""

    def __init__(self, dir):
        self.dir, self.port, self.missing, self.n = dir, free_port(), None, 0
        subprocess.run(["sh", PG_SCRIPT, "stop", dir], capture_output=True)  # a previous run's leftovers
        out = subprocess.run(["sh", PG_SCRIPT, "start", dir, str(self.port), str(os.getpid())],
                             capture_output=True, text=True)
        if out.returncode == 3:
            self.missing = out.stderr.strip()
        elif out.returncode != 0:
            raise RuntimeError(f"cannot start PostgreSQL: {out.stderr}")
        else:
            self.base = out.stdout.strip()
            print(f"PostgreSQL at {self.base} ({dir})", flush=True)

    def createdb(self):
        self.n += 1
        name = f"bench_{os.getpid()}_{self.n}"
        subprocess.run(["sh", PG_SCRIPT, "createdb", self.dir, str(self.port), name], check=True,
                       capture_output=True, text=True)
        return name, f"{self.base}/{name}"

    def query(self, name, sql):
        out = subprocess.run(["sh", PG_SCRIPT, "psql", self.dir, str(self.port), name, sql],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"psql: {out.stderr}")
        return [None if v == "" else int(v) for v in out.stdout.strip().split("|")]

    def stop(self):
        if not self.missing:
            subprocess.run(["sh", PG_SCRIPT, "stop", self.dir], capture_output=True)


class Queue:
    """A fresh, empty queue: a new SQLite data dir (the node's own), or a new PostgreSQL database."""

    def __init__(self, kind, pg):
        self.kind, self.pg = kind, pg
        self.url = self.db = self.sqlite_path = None
        if kind != "sqlite":
            self.db, self.url = pg.createdb()
        self.nodes_count = 2 if kind == "pg2" else 1

    def attach(self, nodes):
        if self.kind == "sqlite":
            self.sqlite_path = nodes[0].data / "queue.db"

    def query(self, sql):
        if self.kind != "sqlite":
            return self.pg.query(self.db, sql)
        con = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=10)
        try:
            return list(con.execute(sql).fetchone())
        finally:
            con.close()


def accepted(funcs, work, kind, pg, conns, duration, tag):
    """accepted/s, 202 p50 and p99 (ms) of POSTs for `duration` at `conns` clients, on a fresh queue."""
    queue = Queue(kind, pg)
    with Nodes(funcs, work, tag, queue.url, queue.nodes_count) as nodes:
        if conns == 1:
            loads = [(nodes[0].url(BG_PATH), 1, duration, work / "post.lua")]
        else:
            share = conns // len(nodes)
            loads = [(n.url(BG_PATH), share, duration, work / "post.lua") for n in nodes]
        results = wrk_all(loads)
        for n in nodes:
            n.check()
    return (sum(r[0] for r in results), max(r[1] for r in results), max(r[2] for r in results))


def post_backlog(nodes, backlog, marks):
    """POSTs at least `backlog` jobs as fast as 64 clients can, split over `nodes` (one wrk -t2 each).

    Each wrk thread stops itself after its share and leaves a mark file (wrk itself only ends at
    its -d, so the harness interrupts it once every thread has marked); a few requests in flight
    may slip through: the database, not this target, has the count."""
    per_wrk = 64 // len(nodes)
    threads = min(2, per_wrk)
    share = -(-backlog // (len(nodes) * threads))
    lua = marks.parent / f"{marks.name}.lua"
    lua.write_text(BG_POST + f"""local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  mark = args[1] .. "-" .. id
end
local count = 0
function response(status, headers, body)
  count = count + 1
  if count == {share} then
    local f = io.open(mark, "w")
    f:close()
    wrk.thread:stop()
  end
end
""")
    cmds = [wrk_cmd(n.url(BG_PATH), per_wrk, 300, lua) + ["--", f"{marks}-{i}"] for i, n in enumerate(nodes)]
    want = [Path(f"{marks}-{i}-{t + 1}") for i in range(len(nodes)) for t in range(threads)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in cmds]
    try:
        deadline = time.time() + 300
        while not all(m.exists() for m in want):
            if any(p.poll() is not None for p in procs) or time.time() > deadline:
                break
            for n in nodes:
                n.check()
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        outs = []
        for p in procs:
            try:
                outs.append(p.communicate(timeout=30))
            except subprocess.TimeoutExpired:
                p.kill()
                outs.append(p.communicate())
    results = [wrk_result(cmd, p, out, err) for cmd, p, (out, err) in zip(cmds, procs, outs)]
    missing = [m.name for m in want if not m.exists()]
    if missing:
        raise RuntimeError(f"wrk threads without their share of {share} after 300 s: {missing}")
    return results


def completed(funcs, work, kind, pg, backlog, tag):
    """POSTs at least `backlog` jobs at 64 clients, waits for the queue to drain, reads the database:
    (runs/s, rows, succeeded, run twice, seconds to post, seconds from the last 202 to drained)."""
    queue = Queue(kind, pg)
    with Nodes(funcs, work, tag, queue.url, queue.nodes_count) as nodes:
        queue.attach(nodes)
        started = time.time()
        post_backlog(nodes, backlog, work / f"{tag}-done")
        posted = time.time()
        deadline = posted + 300
        while True:
            for n in nodes:
                n.check()
            if queue.query(BG_SQL_PENDING)[0] == 0:
                break
            if time.time() > deadline:
                raise RuntimeError(f"{tag}: invocations still pending after 300 s: {queue.query(BG_SQL_STATS)}")
            time.sleep(0.1)
        drained = time.time()
        try:
            rows, succeeded, first, last, twice = queue.query(BG_SQL_STATS)
        except Exception:  # a build from before the interruptions column (schema version 3)
            rows, succeeded, first, last, twice = queue.query(BG_SQL_STATS.replace(" OR interruptions > 0", ""))
            print(f"{tag}: no interruptions column: run twice counts attempts > 1 only", flush=True)
    if rows < backlog or succeeded != rows:
        raise RuntimeError(f"{tag}: {rows} rows (wanted >= {backlog}), {succeeded} succeeded")
    return succeeded / ((last - first) / 1000), rows, succeeded, twice, posted - started, drained - posted


def background(hello, work, args):
    """Background functions vs sync, same no-op guest: accepted/s and 202 latency, completed runs/s,
    on SQLite and on PostgreSQL with one and two nodes."""
    kinds = args.queues.split(",")
    for k in kinds:
        if k not in ("sqlite", "pg1", "pg2"):
            raise SystemExit(f"--queues: unknown queue {k!r} (sqlite, pg1, pg2)")
    if not shutil.which("wrk"):
        run(["apt-get", "install", "-y", "wrk"])
    funcs = work / "functions"
    funcs.mkdir(parents=True, exist_ok=True)
    # The hello component as a sync function and as a background one (the `-background` suffix):
    # the runs themselves are trivial.
    shutil.copy(hello, funcs / "hello.wasm")
    shutil.copy(hello, funcs / "noop-background.wasm")
    (work / "fnhost.toml").write_text("[server]\nmax_concurrency = 1024\n")
    (work / "post.lua").write_text(BG_POST)
    med = statistics.median
    sync = []
    res = {k: {"c1": [], "c64": [], "runs": [], "twice": []} for k in kinds}
    pg = None
    begun = time.time()
    try:
        if any(k != "sqlite" for k in kinds):
            pg = TmpPostgres(BENCH / "pg")
            if pg.missing:
                print(f"PostgreSQL not run: {pg.missing}", flush=True)
        for rnd in range(args.rounds):
            with Nodes(funcs, work, f"r{rnd + 1}-sync") as nodes:
                url = nodes[0].url("/.netlify/functions/hello")
                wrk_all([(url, 64, 1, None)])  # warm-up
                r = wrk_all([(url, 64, args.duration, None)])[0]
                nodes[0].check()
            sync.append(r[0])
            print(f"round {rnd + 1} sync   c=64 {r[0]:>8.0f} req/s  p50 {r[1]:.2f} ms  p99 {r[2]:.2f} ms",
                  flush=True)
            for k in kinds:
                if k != "sqlite" and pg.missing:
                    continue
                for c in (1, 64):
                    tag = f"r{rnd + 1}-{k}-c{c}"
                    a = accepted(funcs, work, k, pg, c, args.duration, tag)
                    res[k][f"c{c}"].append(a)
                    print(f"round {rnd + 1} {k:<6} c={c:<2} {a[0]:>8.0f} accepted/s  p50 {a[1]:.2f} ms"
                          f"  p99 {a[2]:.2f} ms", flush=True)
                runs, rows, ok, twice, post_s, drain_s = completed(funcs, work, k, pg, args.backlog,
                                                                   f"r{rnd + 1}-{k}-backlog")
                res[k]["runs"].append(runs)
                res[k]["twice"].append(twice)
                print(f"round {rnd + 1} {k:<6} backlog {rows} rows, {ok} succeeded: {runs:>8.0f} runs/s"
                      f"  (posting {post_s:.1f} s, drained {drain_s:.1f} s after the last 202),"
                      f" run twice {twice}", flush=True)
    finally:
        if pg:
            pg.stop()
    print(f"background benchmark took {time.time() - begun:.0f} s", flush=True)

    s = med(sync)
    done = {k: bool(res[k]["runs"]) for k in kinds}
    m = {k: {"a1": med([a[0] for a in res[k]["c1"]]), "a64": med([a[0] for a in res[k]["c64"]]),
             "runs": med(res[k]["runs"])} for k in kinds if done[k]}
    all_ = lambda xs: ", ".join(f"{x:.0f}" for x in xs)
    cmd = (f"python3 bench/run.py --background --duration {args.duration} --rounds {args.rounds}"
           f" --backlog {args.backlog} --queues {args.queues}")
    lines = [
        f"Machine: {machine()}. Release fnhost, wasmtime {wasmtime_version()}; load generator: wrk on the"
        " same machine, loopback. Guest: examples/hello, served as `hello` (sync) and as"
        " `noop-background` (background); `max_concurrency = 1024`, default background concurrency.",
        "PostgreSQL: a throwaway server from Debian's packages (tests/pg/tmp-postgres.sh, default"
        " durability); pg1 = one fnhost node, pg2 = two nodes on the same database. SQLite: the embedded"
        " queue in a fresh data dir. Every measurement starts with a fresh, empty queue.",
        f"Each cell: median of {args.rounds} rounds (all rounds in parentheses).",
        "",
        f"Command: `{cmd}`",
        "",
        "Columns: *accepted/s* = 202 responses per second to `POST {\"job\": 1}` for"
        f" {args.duration} s at 1 and 64 keep-alive clients (pg2: split over the two nodes, summed);"
        " *202 p50/p99* = wrk's latency percentiles of those responses (pg2: the higher node's);"
        f" *runs/s* = invocations succeeded / (last `finished_at` - first `created_at`) after POSTing"
        f" a backlog of at least {args.backlog} jobs as fast as 64 clients can (runs start while"
        " posting); *accepted/sync*, *runs/sync* = accepted/s at 64 clients and runs/s over sync req/s"
        " (GET `hello`, 64 clients, same run); *run twice* = invocations with more than one attempt or"
        " an interruption, summed over rounds.",
        "",
        f"| queue | accepted/s c=1 | 202 p50/p99 ms c=1 | accepted/s c=64 | 202 p50/p99 ms c=64 |"
        f" runs/s (backlog {args.backlog}) | accepted/sync | runs/sync | run twice |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in kinds:
        if not done[k]:
            lines.append(f"| {k} | not run: PostgreSQL not installed | | | | | | | |")
            continue
        r = res[k]
        lat = lambda xs: f"{med([a[1] for a in xs]):.2f} / {med([a[2] for a in xs]):.2f}"
        lines.append(f"| {k} | {m[k]['a1']:.0f} ({all_(a[0] for a in r['c1'])}) | {lat(r['c1'])} |"
                     f" {m[k]['a64']:.0f} ({all_(a[0] for a in r['c64'])}) | {lat(r['c64'])} |"
                     f" {m[k]['runs']:.0f} ({all_(r['runs'])}) | {m[k]['a64'] / s:.2f} | {m[k]['runs'] / s:.2f} |"
                     f" {sum(r['twice'])} |")
    lines += ["", f"Sync (GET `hello`, 64 clients): {s:.0f} req/s ({all_(sync)})."]

    def ratio(a, b, label):
        if a in m and b in m:
            lines.append(f"- {label}: accepted/s c=1 {m[a]['a1'] / m[b]['a1']:.2f}, c=64"
                         f" {m[a]['a64'] / m[b]['a64']:.2f}; runs/s {m[a]['runs'] / m[b]['runs']:.2f}")
        else:
            lines.append(f"- {label}: not run")

    lines += ["", "Ratios (medians):", ""]
    ratio("pg1", "sqlite", "pg1 / sqlite")
    ratio("pg2", "pg1", "pg2 / pg1")

    def target(label, keys, ok):
        if all(k in m for k in keys):
            lines.append(f"- {'✓' if ok() else '✗'} {label}")
        else:
            lines.append(f"- – {label} (not run)")

    p99_64 = lambda k: med([a[2] for a in res[k]["c64"]])
    lines += ["", "Targets:", ""]
    target("SQLite accepted/s c=64 ≥ 1.0× sync", ["sqlite"], lambda: m["sqlite"]["a64"] >= s)
    target("SQLite runs/s ≥ 0.5× sync", ["sqlite"], lambda: m["sqlite"]["runs"] >= 0.5 * s)
    target("SQLite 202 p99 c=64 ≤ 20 ms", ["sqlite"], lambda: p99_64("sqlite") <= 20)
    target("pg1 accepted/s c=64 ≥ 0.7× SQLite", ["pg1", "sqlite"],
           lambda: m["pg1"]["a64"] >= 0.7 * m["sqlite"]["a64"])
    target("pg1 runs/s ≥ 0.7× SQLite", ["pg1", "sqlite"], lambda: m["pg1"]["runs"] >= 0.7 * m["sqlite"]["runs"])
    target("pg2 accepted/s c=64 ≥ 1.0× pg1", ["pg2", "pg1"], lambda: m["pg2"]["a64"] >= m["pg1"]["a64"])
    target("pg2 runs/s ≥ 1.0× pg1", ["pg2", "pg1"], lambda: m["pg2"]["runs"] >= m["pg1"]["runs"])
    ran = [k for k in kinds if done[k]]
    target(f"run twice = 0 ({', '.join(ran) or 'no queue'})", ran or ["none"],
           lambda: all(sum(res[k]["twice"]) == 0 for k in ran))
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    write_section(args.out, "Background throughput (noop-background)", report)


LANGUAGES = [("Rust", "hello"), ("JavaScript", "js-hello"), ("Python", "python-hello")]


def start_fnhost(funcs, work, cache):
    """Starts a release fnhost on a free port; returns (proc, port, seconds to listening, log)."""
    port = free_port()
    log = work / f"fnhost-{port}.log"
    started = time.time()
    proc = subprocess.Popen([str(a) for a in [FNHOST, "serve", funcs, "--listen",
                            f"127.0.0.1:{port}", "--config", work / "fnhost.toml", "--data-dir", work / "data",
                            "--cache-dir", cache]], stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env=SERVER_ENV)
    wait_port(port, proc, timeout=600)
    return proc, port, time.time() - started, log


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def p3_wait(args):
    """WASI 0.3 handlers that wait: fresh instances, reuse, instance_concurrency."""
    fnhost, _, _, _ = p3_site(args)
    lines = [f"Machine: {machine()}. wrk (2 threads) on the same machine, loopback.",
             f"Command: `python3 bench/run.py --p3-wait --duration {args.duration} --rounds {args.rounds}`"]
    lines += waiting_handlers(args, fnhost)
    print("\n".join(lines))
    write_section(args.out, "WASI 0.3: handlers that wait (instances made, memory)", "\n".join(lines))


def p3_site(args):
    """Builds (unless --skip-build) and lays out the WASI 0.3 functions: `fresh`, `warm`
    (reuse = 1000), `shared` (+ instance_concurrency = 16), their Python twins and the 0.2
    hello; returns the fnhost command for a port, the two 0.3 components and wasmtime."""
    comps = BENCH / "components"
    if args.skip_build:
        hello, wasmtime = comps / "hello.wasm", TOOLS / "bin/wasmtime"
    else:
        hello, wasmtime = build()
        run([FNHOST, "build", ROOT / "tests/guests/p3", "--out", comps], cwd=ROOT,
            env={**os.environ, "CARGO_TARGET_DIR": str(ROOT / "target/guests")})
        run([FNHOST, "build", ROOT / "examples/python-p3", "--out", comps], cwd=ROOT,
            env={**os.environ, "PATH": f"{ROOT / 'target/tools/python/bin'}:{os.environ['PATH']}"})
    guest, python = comps / "guest-p3.wasm", comps / "python-p3.wasm"
    work = BENCH / "run-p3"
    shutil.rmtree(work, ignore_errors=True)
    funcs = work / "functions"
    funcs.mkdir(parents=True)
    shutil.copy(hello, funcs / "hello.wasm")
    shutil.copy(guest, funcs / "fresh.wasm")
    shutil.copy(guest, funcs / "warm.wasm")
    shutil.copy(guest, funcs / "shared.wasm")
    shutil.copy(python, funcs / "pyfresh.wasm")
    shutil.copy(python, funcs / "pywarm.wasm")
    shutil.copy(python, funcs / "pyshared.wasm")
    (work / "fnhost.toml").write_text(
        "[server]\nmax_concurrency = 1024\n[functions.warm]\nreuse = 1000\n"
        "[functions.shared]\nreuse = 1000\ninstance_concurrency = 16\n"
        "[functions.pyfresh]\npath = \"/pyfresh\"\n[functions.pywarm]\npath = \"/pywarm\"\nreuse = 1000\n"
        "[functions.pyshared]\npath = \"/pyshared\"\nreuse = 1000\ninstance_concurrency = 16\n")
    fnhost = lambda port: [FNHOST, "serve", funcs, "--listen", f"127.0.0.1:{port}", "--config",
                           work / "fnhost.toml", "--data-dir", work / "data", "--cache-dir", work / "cache"]
    return fnhost, guest, python, wasmtime


def p3(args):
    """WASI 0.3: fnhost fresh vs reuse = 1000 vs the 0.2 hello, and `wasmtime serve`."""
    fnhost, guest, python, wasmtime = p3_site(args)
    table = {
        "fnhost 0.2 hello": (fnhost, "/.netlify/functions/hello"),
        "fnhost 0.3 fresh": (fnhost, "/.netlify/functions/fresh/hi"),
        "fnhost 0.3 reuse": (fnhost, "/.netlify/functions/warm/hi"),
        "fnhost 0.3 shared": (fnhost, "/.netlify/functions/shared/hi"),
        "wasmtime serve 0.3": (lambda port: [wasmtime, "serve", "-O", "pooling-allocator=y", "-S", "cli=y",
                                             "--addr", f"127.0.0.1:{port}", guest], "/hi"),
        "fnhost python-p3 fresh": (fnhost, "/pyfresh"),
        "fnhost python-p3 reuse": (fnhost, "/pywarm"),
        "fnhost python-p3 shared": (fnhost, "/pyshared"),
        "wasmtime serve python-p3": (lambda port: [wasmtime, "serve", "-O", "pooling-allocator=y", "-S", "cli=y",
                                                   "--addr", f"127.0.0.1:{port}", python], "/py3"),
    }
    conns = [1, 16]
    results = {}
    names = list(table)
    for rnd in range(args.rounds):
        for c in conns:
            for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                argv, path = table[name]
                r = measure(argv, path, c, args.duration)
                results.setdefault((name, c), []).append(r)
                print(f"round {rnd + 1} c={c:<3} {name:<20} {r[0]:>9.0f} req/s  p50 {r[1]:.3f} ms  p99 {r[2]:.3f} ms",
                      flush=True)
    med = lambda name, c, i: statistics.median(r[i] for r in results[(name, c)])
    lines = [
        f"Machine: {machine()}. wrk (2 threads) on the same machine, loopback. wasmtime {wasmtime_version()}.",
        "Components: tests/guests/p3 (Rust, wasip3 0.9, `GET /hi`, a streamed 40-byte body), examples/python-p3"
        " (componentize-py 0.25.1, `GET /py3`) and examples/hello (0.2). fnhost: `reuse = 1000` for the reuse rows,"
        " plus `instance_concurrency = 16` for the shared rows;"
        " `wasmtime serve` keeps its own 0.3 defaults (an instance serves up to 128 requests, 16 at once).",
        f"Median of {args.rounds} rounds of {args.duration} s; servers in turn, order rotating each round.",
        "",
        f"Command: `python3 bench/run.py --p3 --duration {args.duration} --rounds {args.rounds}`",
        "",
        "| conns | server | req/s | p50 ms | p99 ms |",
        "|---:|---|---:|---:|---:|",
    ]
    for c in conns:
        for name in names:
            lines.append(f"| {c} | {name} | {med(name, c, 0):.0f} | {med(name, c, 1):.3f} | {med(name, c, 2):.3f} |")
    lines += ["", "| conns | guest | reuse / fresh | shared / reuse | fnhost reuse / wasmtime serve"
              " | fnhost shared / wasmtime serve | 0.3 fresh / 0.2 hello |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for c in conns:
        rps = lambda n: med(n, c, 0)
        for guest, pre, ref in [("Rust", "fnhost 0.3", "wasmtime serve 0.3"),
                                ("Python", "fnhost python-p3", "wasmtime serve python-p3")]:
            hello = (f"{rps('fnhost 0.3 fresh') / rps('fnhost 0.2 hello'):.2f}" if guest == "Rust" else "")
            lines.append(f"| {c} | {guest} | {rps(pre + ' reuse') / rps(pre + ' fresh'):.2f} | "
                         f"{rps(pre + ' shared') / rps(pre + ' reuse'):.2f} | "
                         f"{rps(pre + ' reuse') / rps(ref):.2f} | {rps(pre + ' shared') / rps(ref):.2f} | {hello} |")
    print("\n".join(lines))
    write_section(args.out, "WASI 0.3: fresh instances, reuse, wasmtime serve", "\n".join(lines))


def waiting_handlers(args, fnhost):
    """Handlers that mostly wait (`overlap?ms=50`: 50 ms on a timer) at 32 connections: what
    fresh instances, `reuse` and `instance_concurrency` cost in instances made and memory."""
    conns, rows = 32, []
    for name, fn in [("fresh", "fresh"), ("reuse = 1000", "warm"),
                     ("reuse = 1000, instance_concurrency = 16", "shared")]:
        made = lambda base, fn=fn: metric(base, "fnhost_instantiation_duration_seconds_count", f'"{fn}"')
        runs = [measure(fnhost, f"/.netlify/functions/{fn}/overlap?ms=50", conns, args.duration,
                        after=made, memory=True) for _ in range(args.rounds)]
        med = lambda i: statistics.median(r[i] for r in runs)
        rows.append(f"| {name} | {med(0):.0f} | {med(1):.1f} | {med(2):.1f} | {med(3):.0f} | {med(4):.0f} |")
    return ["", f"Handlers that wait (`GET …/overlap?ms=50`, a 50 ms timer), {conns} connections, median of"
            f" {args.rounds} runs; instances made over the whole run (warm-up included), the server's peak"
            " resident memory:", "",
            "| instances | req/s | p50 ms | p99 ms | instances made | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|"] + rows


class OtlpSink:
    """A live OTLP/HTTP receiver for the trace benchmark: takes every POST to /v1/traces
    (reads the whole protobuf body), answers 200 with an empty ExportTraceServiceResponse, and
    counts requests and bytes. It runs in this process, on the same two cores as the server
    and wrk, as a collector beside a node would."""

    def __init__(self):
        import http.server
        import threading
        sink = self
        self.requests = self.bytes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                self.rfile.read(n)
                sink.requests += 1
                sink.bytes += n
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def metric(base, name, label=""):
    """The sum of `name`'s samples (matching `label`) in fnhost's exposition."""
    import urllib.request
    text = urllib.request.urlopen(f"{base}/.fnhost/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def traces(args):
    """Tracing's cost on hello at 64 connections: off, on with sampling 0 %, on at 100 % to a
    live receiver; with --baseline, a fnhost built before traces existed, in the same run."""
    hello = BENCH / "components/hello.wasm" if args.skip_build else build()[0]
    work = BENCH / "run-traces"
    shutil.rmtree(work, ignore_errors=True)
    funcs = work / "functions"
    funcs.mkdir(parents=True)
    shutil.copy(hello, funcs / "hello.wasm")
    (work / "fnhost.toml").write_text("[server]\nmax_concurrency = 1024\n")
    sink = OtlpSink()
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}"}
    serve = lambda binary: lambda port: [binary, "serve", funcs, "--listen", f"127.0.0.1:{port}", "--config",
                                         work / "fnhost.toml", "--data-dir", work / f"data-{port}",
                                         "--cache-dir", work / "cache"]
    spans = lambda base: (metric(base, "fnhost_trace_spans_exported_total"),
                          metric(base, "fnhost_trace_spans_dropped_total"))
    table = {
        "traces off": (serve(FNHOST), {}),
        "on, sampling 0 %": (serve(FNHOST), {**endpoint, "OTEL_TRACES_SAMPLER": "traceidratio",
                                             "OTEL_TRACES_SAMPLER_ARG": "0"}),
        "on, 100 % exported": (serve(FNHOST), {**endpoint, "OTEL_TRACES_SAMPLER": "always_on"}),
        # Nothing listens there: every export fails at once (connection refused).
        "on, 100 %, collector down": (serve(FNHOST), {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                                                      "OTEL_TRACES_SAMPLER": "always_on"}),
    }
    if args.baseline:
        table = {"before traces (--baseline)": (serve(Path(args.baseline)), {}), **table}
    names, conns, results = list(table), 64, {}
    for rnd in range(args.rounds):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            argv, env = table[name]
            r = measure(argv, "/.netlify/functions/hello", conns, args.duration, env, after=spans, cpu=True)
            results.setdefault(name, []).append(r)
            print(f"round {rnd + 1} {name:<28} {r[0]:>9.0f} req/s  p50 {r[1]:.3f} ms  p99 {r[2]:.3f} ms"
                  f"  {r[3]:.1f} µs CPU/req"
                  f"  spans exported {r[-1][0]:.0f} dropped {r[-1][1]:.0f}", flush=True)
    med = lambda name, i: statistics.median(r[i] for r in results[name])
    off = med("traces off", 0)
    lines = [
        f"Machine: {machine()}. wrk -t2 -c{conns} on the same machine, loopback; the receiver (a Python"
        " OTLP/HTTP sink reading every body) on the same cores.",
        f"Median of {args.rounds} rounds of {args.duration} s; variants in turn, order rotating each round.",
        "Spans per request: 3 (server, run, instantiate). 0 %: `OTEL_TRACES_SAMPLER=traceidratio`, arg 0;"
        " 100 %: `always_on`, exported over HTTP/protobuf.",
        "",
        f"Command: `python3 bench/run.py --traces --duration {args.duration} --rounds {args.rounds}"
        + (" --baseline BIN`" if args.baseline else "`"),
        "",
        "The machine's throughput drifts by ±20 % between rounds: the paired column divides each variant by"
        " `traces off` of the same round (neighbours in time), then takes the median over rounds.",
        "",
        "CPU per request: the server process's user + system time over the timed run (/proc/PID/stat, all"
        " threads, the export included) / requests answered — the work, steadier than req/s here.",
        "",
        "| variant | req/s (rounds) | p50 ms | p99 ms | / off (medians) | / off (paired, per round) "
        "| CPU µs/req | / off | spans exported | dropped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    instr = lambda name: statistics.median(r[3] for r in results[name])
    for name in names:
        rps = [r[0] for r in results[name]]
        paired = [r[0] / o[0] for r, o in zip(results[name], results["traces off"])]
        exported = sum(r[-1][0] for r in results[name])
        dropped = sum(r[-1][1] for r in results[name])
        lines.append(f"| {name} | {med(name, 0):.0f} ({', '.join(f'{x:.0f}' for x in rps)}) | {med(name, 1):.3f}"
                     f" | {med(name, 2):.3f} | {med(name, 0) / off:.3f} | {statistics.median(paired):.3f}"
                     f" ({', '.join(f'{x:.2f}' for x in paired)}) | {instr(name):.1f}"
                     f" | {instr(name) / instr('traces off'):.3f} | {exported:.0f} | {dropped:.0f} |")
    lines += ["", f"Receiver: {sink.requests} export requests, {sink.bytes / 1e6:.1f} MB.",
              "Targets (issue): off ≤ 1 % below before traces; 100 % ≤ 15 % below off."]
    print("\n".join(lines))
    write_section(args.out, "Traces: off, sampled out, exported", "\n".join(lines))


def languages(args):
    tools = ROOT / "target/tools/python/bin"
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "CARGO_TARGET_DIR": str(ROOT / "target/guests")}
    comps = BENCH / "components"
    if not args.skip_build:
        run(["cargo", "build", "--release", "-p", "fnhost"], cwd=ROOT)
        run([FNHOST, "build", ROOT / "examples", "--out", comps], cwd=ROOT, env=env)
    if not shutil.which("wrk"):
        run(["apt-get", "install", "-y", "wrk"])
    work = BENCH / "languages"
    shutil.rmtree(work, ignore_errors=True)
    (work / "fnhost.toml").parent.mkdir(parents=True)
    (work / "fnhost.toml").write_text("[server]\nmax_concurrency = 1024\n")
    rows = {}
    for language, name in LANGUAGES:
        funcs = work / name
        funcs.mkdir()
        shutil.copy(comps / f"{name}.wasm", funcs / f"{name}.wasm")
        cache = work / f"cache-{name}"
        starts = []
        for _ in range(2):  # empty cache, then the same cache
            proc, _port, secs, log = start_fnhost(funcs, work, cache)
            stop(proc)
            m = re.search(r"loaded 1 function\(s\) .* in (\d+) ms \((\d+) from cache", log.read_text())
            starts.append((secs, int(m.group(1)), int(m.group(2))))
        assert starts[0][2] == 0 and starts[1][2] == 1, f"{name}: cache not used as expected: {starts}"
        rows[name] = {"language": language, "size": (comps / f"{name}.wasm").stat().st_size, "starts": starts}
        print(f"{name}: {rows[name]['size']} bytes, first start {starts[0][0]:.2f} s (load {starts[0][1]} ms), "
              f"cached start {starts[1][0]:.2f} s (load {starts[1][1]} ms)", flush=True)
    wasmtime = TOOLS / "bin" / "wasmtime"
    servers = {
        "fnhost": lambda name: (lambda port: [FNHOST, "serve", work / name, "--listen",
                                              f"127.0.0.1:{port}", "--config", work / "fnhost.toml", "--data-dir",
                                              work / "data", "--cache-dir", work / f"cache-{name}"],
                                f"/.netlify/functions/{name}?name=bench"),
    }
    if wasmtime.exists():  # the reference host, as `python3 bench/run.py` installs it
        servers["wasmtime serve"] = lambda name: (
            lambda port: [wasmtime, "serve", "-O", "pooling-allocator=y", "-S", "cli=y", "--addr",
                          f"127.0.0.1:{port}", comps / f"{name}.wasm"], "/?name=bench")
    results = {}
    for rnd in range(args.rounds):
        order = LANGUAGES[rnd % 3:] + LANGUAGES[:rnd % 3]
        for c in [1, 16]:
            for _language, name in order:
                for server, make in servers.items():
                    argv, path = make(name)
                    r = measure(argv, path, c, args.duration)
                    results.setdefault((server, name, c), []).append(r)
                    print(f"round {rnd + 1} c={c:<3} {name:<13} {server:<15} {r[0]:>8.0f} req/s  p50 {r[1]:.3f} ms"
                          f"  p99 {r[2]:.3f} ms", flush=True)
    med = statistics.median
    lines = [
        f"Machine: {machine()}. Release fnhost, wasmtime {wasmtime_version()}, pooling allocator, budgets on.",
        "Start: wall time from spawning `fnhost serve` (one function) until its port accepts, and the",
        "load time it logs; first with an empty compiled-component cache, then with that cache.",
        f"Requests: GET `?name=bench`, wrk (2 threads) on loopback, median of {args.rounds} rounds of"
        f" {args.duration} s, languages in rotating order; \"vs Rust\" = req/s / the Rust hello's req/s on"
        " the same server; `wasmtime serve` (same wasmtime, pooling on) serves the same components as the"
        " reference.",
        "",
        f"Command: `python3 bench/run.py --languages --duration {args.duration} --rounds {args.rounds}`",
        "",
        "| function | language | component | first start (load) | cached start (load) |",
        "|---|---|---:|---:|---:|",
    ]
    for language, name in LANGUAGES:
        row = rows[name]
        (s1, l1, _), (s2, l2, _) = row["starts"]
        lines.append(f"| {name} | {language} | {row['size'] / 1e6:.2f} MB | {s1:.2f} s ({l1} ms) |"
                     f" {s2:.2f} s ({l2} ms) |")
    lines += ["", "| function | server | conns | req/s | p50 ms | p99 ms | vs Rust | fnhost / wasmtime serve |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for _language, name in LANGUAGES:
        for c in [1, 16]:
            for server in servers:
                rs = results[(server, name, c)]
                rps = med([r[0] for r in rs])
                rust = med([r[0] for r in results[(server, "hello", c)]])
                ref = ""
                if server == "fnhost" and "wasmtime serve" in servers:
                    ref = f"{rps / med([r[0] for r in results[('wasmtime serve', name, c)]]):.2f}"
                lines.append(f"| {name} | {server} | {c} | {rps:.0f} ({', '.join(f'{r[0]:.0f}' for r in rs)}) |"
                             f" {med([r[1] for r in rs]):.3f} | {med([r[2] for r in rs]):.3f} | {rps / rust:.3f} |"
                             f" {ref} |")
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    write_section(args.out, "Functions in other languages (JS, Python) vs the Rust hello", report)

class Calls:
    """A loopback upstream that notes when each path is asked for (the steps' side effects)."""

    def __init__(self):
        import http.server
        import threading
        calls = self
        self.times = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                calls.times.setdefault(self.path.split("?")[0], []).append(time.monotonic())
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first(self, path, within=60):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.times.get(path):
                return self.times[path][0]
            time.sleep(0.002)
        raise RuntimeError(f"{path} never called")


def wakes(args):
    """Durable steps (tests/guests/steps on release fnhost): a 2 s sleep's re-run, measured
    from the step before it to the step after it (at the upstream), and an event's wake: from
    the POST of the event to the woken run's answer being stored."""
    import json
    import urllib.request
    if not args.skip_build:
        run(["cargo", "build", "--release", "-p", "fnhost"], cwd=ROOT)
        run(["cargo", "build", "--release", "-p", "guest-steps", "--target", "wasm32-wasip2"], cwd=ROOT)
    guest = ROOT / "target/wasm32-wasip2/release/guest_steps.wasm"
    work = BENCH / "run-wakes"
    shutil.rmtree(work, ignore_errors=True)
    (work / "functions").mkdir(parents=True)
    shutil.copy(guest, work / "functions/steps-background.wasm")
    calls = Calls()
    (work / "fnhost.toml").write_text(
        f'[server]\nadmin_token = "t0ken"\n[defaults]\nallowed_outbound_hosts = ["http://127.0.0.1:{calls.port}"]\n')
    port = free_port()
    proc = subprocess.Popen([FNHOST, "serve", work / "functions", "--listen", f"127.0.0.1:{port}",
                             "--config", work / "fnhost.toml", "--data-dir", work / "data",
                             "--cache-dir", work / "cache"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def call(path, method="POST", data=b"", headers=None):
        req = urllib.request.Request(base + path, method=method, data=data if method == "POST" else None,
                                     headers={"authorization": "Bearer t0ken", **(headers or {})})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()

    def state(id_):
        return json.loads(call(f"/.fnhost/invocations/{id_}", "GET")[2])["state"]

    def until(id_, want, within=30):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if state(id_) == want:
                return time.monotonic()
            time.sleep(0.002)
        raise RuntimeError(f"{id_} never {want}")

    try:
        wait_port(port, proc)
        late, woken = [], []
        for i in range(args.rounds):
            calls.times.clear()
            _, h, _ = call(f"/.netlify/functions/steps-background?op=sleep&ms=2000&upstream=http://127.0.0.1:{calls.port}")
            late.append((calls.first("/after") - calls.first("/before")) * 1000 - 2000)
            _, h, _ = call(f"/.netlify/functions/steps-background?op=wait&event=go&key=k{i}&timeout_ms=600000")
            id_ = h["fnhost-invocation-id"]
            until(id_, "waiting")
            sent = time.monotonic()
            call(f"/.fnhost/events/go?key=k{i}", data=b"yes")
            woken.append((until(id_, "succeeded") - sent) * 1000)
            print(f"round {i + 1}: sleep re-run {late[-1]:+.0f} ms late, event to answer stored {woken[-1]:.0f} ms", flush=True)
    finally:
        proc.terminate()
        proc.wait()
    fmt = lambda xs: f"median {statistics.median(xs):.0f}, max {max(xs):.0f}"
    lines = [
        f"Machine: {machine()}. Release fnhost, embedded SQLite queue, tests/guests/steps; {args.rounds} rounds.",
        f"Command: `python3 bench/run.py --wakes --rounds {args.rounds}`",
        "",
        "| what | ms |",
        "|---|---:|",
        f"| a 2 s sleep: its re-run starts this late (step before → step after, minus 2000) | {fmt(late)} |",
        f"| an event: POST `/.fnhost/events/NAME` → the woken run's answer stored (status polled every 2 ms) | {fmt(woken)} |",
    ]
    print("\n".join(lines))
    write_section(args.out, "Workflows: how late a sleep wakes, how soon an event does", "\n".join(lines))

if __name__ == "__main__":
    sys.exit(main())

