#!/usr/bin/env python3
"""HTTP benchmark: fnhost vs `wasmtime serve` vs a native hyper server, same component, one run.

Usage: python3 bench/run.py [--duration 5] [--rounds 3] [--conns 1,16,64] [--out BENCHMARKS.md]
       python3 bench/run.py --languages   # JS and Python examples vs the Rust hello
       python3 bench/run.py --background  # accepted background requests/s

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
latency at 1 and 16 connections, as ratios to the Rust hello measured in the same run. Each mode
rewrites its own section of --out.
"""

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "target" / "bench"
TOOLS = BENCH / "tools"


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def wasmtime_version():
    text = (ROOT / "Cargo.toml").read_text()
    return re.search(r'^wasmtime = "([^"]+)"', text, re.M).group(1)


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


def build():
    run(["cargo", "build", "--release", "-p", "fnhost", "-p", "native-hello"], cwd=ROOT)
    comps = BENCH / "components"
    run([ROOT / "target/release/fnhost", "build", ROOT / "examples/hello", "--out", comps], cwd=ROOT,
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
    fnhost = ROOT / "target/release/fnhost"
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


def measure(argv, path, conns, duration):
    port = free_port()
    proc = subprocess.Popen([str(a) for a in argv(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=SERVER_ENV)
    try:
        wait_port(port, proc)
        url = f"http://127.0.0.1:{port}{path}"
        threads = str(min(2, conns))
        subprocess.run(["wrk", "-t", threads, "-c", str(conns), "-d", "1s", url], capture_output=True, check=True)
        out = subprocess.run(["wrk", "-t", threads, "-c", str(conns), "-d", f"{duration}s", "--latency", url],
                             capture_output=True, text=True, check=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            raise RuntimeError(f"{errors.group(1)} error responses:\n{out}")
        return rps, parse_latency(out, 50), parse_latency(out, 99)
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
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", default="1,16,64")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--background", action="store_true",
                    help="instead: accepted background requests/s and 202 latency at 1 and 64 clients")
    ap.add_argument("--languages", action="store_true",
                    help="instead: the JS and Python examples vs the Rust hello (size, start, latency)")
    args = ap.parse_args()
    if args.languages:
        return languages(args)
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


def background(hello, work, args):
    """POSTs to a background function: every 202 waits for its group commit (WAL, FULL)."""
    funcs = work / "functions"
    funcs.mkdir(parents=True, exist_ok=True)
    # The hello component as a background function: the runs themselves are trivial.
    shutil.copy(hello, funcs / "noop-background.wasm")
    (work / "fnhost.toml").write_text("[server]\nmax_concurrency = 1024\n")
    lua = work / "post.lua"
    lua.write_text('wrk.method = "POST"\nwrk.body = \'{"job": 1}\'\nwrk.headers["Content-Type"] = "application/json"\n')
    fnhost = ROOT / "target/release/fnhost"
    rows = []
    for rnd in range(args.rounds):
        for c in [1, 64]:
            shutil.rmtree(work / "data", ignore_errors=True)
            port = free_port()
            proc = subprocess.Popen([str(a) for a in [fnhost, "serve", funcs, "--listen", f"127.0.0.1:{port}",
                                    "--config", work / "fnhost.toml", "--data-dir", work / "data",
                                    "--cache-dir", work / "cache"]],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=SERVER_ENV)
            try:
                wait_port(port, proc)
                url = f"http://127.0.0.1:{port}/.netlify/functions/noop-background"
                out = subprocess.run(["wrk", "-t", str(min(2, c)), "-c", str(c), "-d", f"{args.duration}s",
                                      "--latency", "-s", str(lua), url], capture_output=True, text=True,
                                     check=True).stdout
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
                if re.search(r"Non-2xx or 3xx responses", out):
                    raise RuntimeError(out)
                r = (rps, parse_latency(out, 50), parse_latency(out, 99))
                rows.append((c, r))
                print(f"round {rnd + 1} c={c:<3} {r[0]:>8.0f} accepted/s  p50 {r[1]:.2f} ms  p99 {r[2]:.2f} ms", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    for c in [1, 64]:
        rs = [r for cc, r in rows if cc == c]
        print(f"c={c}: median {statistics.median(r[0] for r in rs):.0f} accepted/s, "
              f"p50 {statistics.median(r[1] for r in rs):.2f} ms, p99 {statistics.median(r[2] for r in rs):.2f} ms")


LANGUAGES = [("Rust", "hello"), ("JavaScript", "js-hello"), ("Python", "python-hello")]


def start_fnhost(funcs, work, cache):
    """Starts a release fnhost on a free port; returns (proc, port, seconds to listening, log)."""
    port = free_port()
    log = work / f"fnhost-{port}.log"
    started = time.time()
    proc = subprocess.Popen([str(a) for a in [ROOT / "target/release/fnhost", "serve", funcs, "--listen",
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


def languages(args):
    tools = ROOT / "target/tools/python/bin"
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "CARGO_TARGET_DIR": str(ROOT / "target/guests")}
    comps = BENCH / "components"
    if not args.skip_build:
        run(["cargo", "build", "--release", "-p", "fnhost"], cwd=ROOT)
        run([ROOT / "target/release/fnhost", "build", ROOT / "examples", "--out", comps], cwd=ROOT, env=env)
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
        "fnhost": lambda name: (lambda port: [ROOT / "target/release/fnhost", "serve", work / name, "--listen",
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


if __name__ == "__main__":
    sys.exit(main())
