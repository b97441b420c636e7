#!/usr/bin/env python3
"""The benchmark driver (stdlib only; started by bench/run.sh, which raises `ulimit -n` first).

Builds the release binaries, then for each scenario runs the three servers -- our gateway
(fresh SQLite DB in a temp dir), bare socketioxide, Node socket.io -- alternating server by
server, run by run, each run on a freshly started server pinned to CPU 0 with the load
generator pinned to CPU 1. Takes the median of the runs and writes the table between the
GENERATED markers of docs/BENCHMARKS.md (the rest of the file, notes and analysis, is kept).
Raw JSON of every run and the servers' logs go to bench/results/<stamp>/.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import cluster

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
LOADGEN = os.path.join(BENCH, "target", "release", "loadgen")
BARE = os.path.join(BENCH, "target", "release", "socketioxide-bare")
NODE_DIR = os.path.join(BENCH, "peers", "node")
SECRET = "bench-jwt-secret-0123456789abcdef0123456789"
API_KEY = "bench-api-key-0123456789"
SERVER_CPU = "0"
LOADGEN_CPU = "1"
BEGIN = "<!-- BEGIN GENERATED: bench/run.sh rewrites this part -->"
END = "<!-- END GENERATED -->"

SERVERS = {
    "aegisx": "AegisX (SQLite)",
    "bare": "bare socketioxide",
    "node": "Node socket.io",
}

# Fan-out publisher rates (msgs/s into a room of 1,000: deliveries/s = 1,000 x rate).
FANOUT_RATES = [20, 40, 60, 80, 100, 150, 200, 300, 400, 500, 650, 800, 1000]
# Rooms: msgs/s per client (5,000 clients, rooms of 10).
ROOMS_RATES = [1, 1.25, 1.5, 2]

PLANS = {
    "full": {
        "idle": [10000, 19000],
        "idle_hold": 3,
        "fanout_subs": 1000,
        "fanout_rates": FANOUT_RATES,
        "fanout_step": 3,
        "rooms_clients": 5000,
        "rooms_k": 10,
        "rooms_rates": ROOMS_RATES,
        "rooms_step": 4,
        "ack_clients": 50,
        "ack_window": 32,
        "ack_secs": 8,
        "notify_users": 1000,
        "notify_rate": 1000,
        "notify_secs": 5,
        "tenant_layouts": ["per-user", "100x100", "one"],
        "tenant_n": 10000,
        "storm_clients": 10000,
        "storm_chat_secs": 5,
        "flood_others": 100,
        "flood_stored": 1000,
        "flood_secs": 8,
    },
    # For trying the driver itself: a couple of minutes.
    "quick": {
        "idle": [2000],
        "idle_hold": 1,
        "fanout_subs": 200,
        "fanout_rates": [20, 100, 400],
        "fanout_step": 2,
        "rooms_clients": 500,
        "rooms_k": 10,
        "rooms_rates": [1, 4],
        "rooms_step": 2,
        "ack_clients": 10,
        "ack_window": 16,
        "ack_secs": 3,
        "notify_users": 100,
        "notify_rate": 200,
        "notify_secs": 2,
        "tenant_layouts": ["per-user", "one"],
        "tenant_n": 1000,
        "storm_clients": 500,
        "storm_chat_secs": 2,
        "flood_others": 20,
        "flood_stored": 200,
        "flood_secs": 3,
    },
}

# Scenarios the peers cannot run (no storage, no history API): our gateway only.
AEGISX_ONLY = ("storm", "replay-flood", "replay-flood-none")


def log(msg):
    print(f"[run] {msg}", file=sys.stderr, flush=True)


def sh(cmd, cwd=None, env=None):
    log(f"$ (cd {cwd or os.getcwd()} && {cmd if isinstance(cmd, str) else shlex.join(cmd)})")
    subprocess.run(cmd, cwd=cwd, env=env, check=True, shell=isinstance(cmd, str))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process, pinned to CPU 0, started fresh for one run."""

    def __init__(self, kind, logdir, tag, gateway_bin):
        self.kind = kind
        self.port = free_port()
        self.tmp = None
        env = dict(os.environ, JWT_SECRET=SECRET, API_KEYS=API_KEY, PORT=str(self.port), HOST="127.0.0.1")
        if kind == "aegisx":
            self.tmp = tempfile.mkdtemp(prefix="aegisx-bench-")
            env.update(
                DATABASE_URL=f"sqlite://{self.tmp}/aegisx.db",
                RATE_LIMIT_PER_MINUTE="1000000000",
                MAX_CONNECTIONS_PER_USER="1000000",
                LOG_LEVEL="warn",
                SHUTDOWN_TIMEOUT_SECS="2",
            )
            cmd = [gateway_bin, "serve"]
        elif kind == "bare":
            cmd = [BARE]
        elif kind == "node":
            cmd = ["node", os.path.join(NODE_DIR, "server.js")]
        else:
            raise ValueError(kind)
        self.cmd = ["taskset", "-c", SERVER_CPU] + cmd
        self.env_set = {k: v for k, v in env.items() if os.environ.get(k) != v}
        self.env_shown = {k: env[k] for k in ("PORT", "DATABASE_URL", "RATE_LIMIT_PER_MINUTE", "MAX_CONNECTIONS_PER_USER", "LOG_LEVEL") if k in env}
        self.log_path = os.path.join(logdir, f"{tag}-{kind}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.time() + 30
        while True:
            line = self.proc.stdout.readline()
            if line:
                self.log.write(line)
                self.log.flush()
                if "listening on" in line:
                    break
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"{kind} exited before listening; see {self.log_path}")
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{kind} did not print 'listening on' within 30 s; see {self.log_path}")
        self.pid = self.proc.pid  # taskset execs the server: same pid
        time.sleep(0.3)

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def alive(self):
        return self.proc.poll() is None

    def restart_cmd(self):
        """The same server on the same port, for `loadgen storm --restart-cmd` (log appended)."""
        envs = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(self.env_set.items()))
        return f"env {envs} {shlex.join(self.cmd)} >>{shlex.quote(self.log_path)}.restarted 2>&1"

    def stop_restarted(self, pid):
        """Stops the process `storm` started in place of this one."""
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                with open(f"/proc/{pid}/status") as f:
                    if any(l.startswith("State:") and "Z" in l for l in f):
                        return
            except OSError:
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            rest = self.proc.stdout.read()
            if rest:
                self.log.write(rest)
        except Exception:
            pass
        self.log.close()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def loadgen(args, server, label, timeout):
    cmd = ["taskset", "-c", LOADGEN_CPU, LOADGEN] + args + [
        "--addr", server.addr, "--server-pid", str(server.pid), "--server-core", SERVER_CPU, "--label", label,
    ]
    env = dict(os.environ, JWT_SECRET=SECRET, API_KEY=API_KEY)
    t0 = time.time()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"loadgen timed out after {timeout} s"}, cmd
    out = p.stdout.strip().splitlines()
    try:
        res = json.loads(out[-1]) if out else {"error": "no output"}
    except json.JSONDecodeError:
        res = {"error": f"unparsable output: {out[-1][:200]}"}
    res["_exit"] = p.returncode
    res["_seconds"] = round(time.time() - t0, 1)
    res["_stderr_tail"] = p.stderr.strip().splitlines()[-6:]
    if not server.alive() and "restarted_pid" not in res:
        res["server_died"] = True
    return res, cmd


def scenario_args(plan):
    """(name, loadgen args, timeout s) per scenario, in run order."""
    out = []
    for n in plan["idle"]:
        out.append((f"idle-{n}", ["idle", "-n", str(n), "--hold", str(plan["idle_hold"]),
                                  "--connect-inflight", "128"], 180))
    for layout in plan.get("tenant_layouts", []):
        n = plan["tenant_n"]
        out.append((f"idle-{n}-{layout}", ["idle", "-n", str(n), "--hold", str(plan["idle_hold"]),
                                           "--connect-inflight", "200", "--tenants", layout], 240))
    out.append(("fanout", ["fanout", "-n", str(plan["fanout_subs"]),
                           "--rates", ",".join(map(str, plan["fanout_rates"])),
                           "--step-secs", str(plan["fanout_step"]), "--drain-secs", "2",
                           "--warmup-secs", "2"], 240))
    out.append(("rooms", ["rooms", "-n", str(plan["rooms_clients"]), "-k", str(plan["rooms_k"]),
                          "--rates", ",".join(map(str, plan["rooms_rates"])),
                          "--step-secs", str(plan["rooms_step"]), "--drain-secs", "2",
                          "--warmup-secs", "2"], 240))
    out.append(("chat-ack", ["chat-ack", "-c", str(plan["ack_clients"]), "-w", str(plan["ack_window"]),
                             "--duration", str(plan["ack_secs"])], 120))
    out.append(("notify", ["notify", "-u", str(plan["notify_users"]), "--rate", str(plan["notify_rate"]),
                           "--duration", str(plan["notify_secs"])], 120))
    out.append(("storm", ["storm", "-n", str(plan["storm_clients"]), "-k", "10", "--rate", "0.2",
                          "--chat-secs", str(plan["storm_chat_secs"]), "--posts-per-room", "5",
                          "--connect-inflight", "200", "--tenants", "one"], 300))
    for name, extra in (("replay-flood", []), ("replay-flood-none", ["--no-flood"])):
        out.append((name, ["replay-flood", "--others", str(plan["flood_others"]), "--rate", "10",
                           "--flood-sockets", "10", "--stored", str(plan["flood_stored"]),
                           "--duration", str(plan["flood_secs"])] + extra, 180))
    return out


def g(d, *path, default=None):
    for p in path:
        if isinstance(d, dict) and p in d:
            d = d[p]
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return default
    return d


def figures(name, r):
    """The numbers of one run that go in the table."""
    if "error" in r or r.get("server_died"):
        return {"error": r.get("error", "server died")}
    if name.startswith("idle"):
        return {
            "connected_p99": g(r, "connect", "latency_ms", "p99"),
            "user_status": r.get("user_status_received"),
            "rss_kib": r.get("rss_per_conn_kib"),
            "connect_rate": r.get("connect_rate_per_s"),
            "failures": r.get("failures"),
            "dropped": r.get("dropped_while_held"),
            "server_core_busy": r.get("server_core_busy_pct_while_connecting"),
        }
    if name == "storm":
        return {
            "recovery_s": r.get("recovery_s"),
            "missed": r.get("missed"),
            "duplicated": r.get("duplicated"),
            "connect_p99": g(r, "storm_connect", "latency_ms", "p99"),
            "connect_timeouts": g(r, "storm_connect", "timeouts"),
            "connect_refused": g(r, "storm_connect", "refused"),
            "peak_rss_kib": r.get("restarted_peak_rss_kib"),
            "peak_rss_per_client_kib": r.get("restarted_peak_rss_per_client_kib_above_start"),
            "posts_timed_out": g(r, "posts", "timed_out"),
        }
    if name.startswith("replay-flood"):
        return {
            "status": r.get("status"),
            "ack_p50": g(r, "ack_latency_ms", "p50"),
            "ack_p99": g(r, "ack_latency_ms", "p99"),
            "joins_per_s": r.get("flood_joins_per_s"),
            "replayed_per_s": r.get("flood_replayed_per_s"),
            "refused_per_s": r.get("flood_refused_per_s"),
        }
    if name in ("fanout", "rooms"):
        steps = r.get("steps", [])
        first = steps[0] if steps else {}
        return {
            "max_delivered": g(r, "max_sustained", "delivered_per_s", default=0.0),
            "max_rate": g(r, "max_sustained", "rate_per_sender", default=0.0),
            "max_p99": g(r, "max_sustained", "p99_ms"),
            "first_rate": first.get("rate_per_sender"),
            "first_p50": g(first, "latency_ms", "p50"),
            "first_p99": g(first, "latency_ms", "p99"),
            "first_max": g(first, "latency_ms", "max"),
            "first_lost": first.get("lost"),
            "first_delivered": first.get("delivered_per_s"),
            "first_sustained": first.get("sustained"),
        }
    if name == "chat-ack":
        return {
            "acked": r.get("acked_per_s"),
            "p50": g(r, "ack_latency_ms", "p50"),
            "p99": g(r, "ack_latency_ms", "p99"),
            "clean": r.get("clean"),
            "server_core_busy": r.get("server_core_busy_pct"),
        }
    if name == "notify":
        return {
            "status": r.get("status"),
            "p50": g(r, "e2e_latency_ms", "p50"),
            "p99": g(r, "e2e_latency_ms", "p99"),
            "lost": r.get("lost"),
            "created_per_s": r.get("created_per_s"),
        }
    return {}


def median(vals):
    vals = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}{unit}"
    return f"{v:,.0f}{unit}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "model": model,
        "ram": mem,
        "kernel": platform.release(),
        "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip(),
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
    }


def gateway_identity(gateway_bin):
    """Commit of the tree the gateway binary was built from (as far as git knows) and its mtime."""
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip() or "?"
    except OSError:
        rev = "?"
    try:
        mtime = datetime.datetime.fromtimestamp(os.path.getmtime(gateway_bin), datetime.timezone.utc)
        built = f"{mtime:%Y-%m-%d %H:%M} UTC"
    except OSError:
        built = "?"
    try:
        import hashlib
        with open(gateway_bin, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        digest = "?"
    return f"`target/release/aegisx-realtime` built {built} (sha256 {digest}) from tree {rev}"


def medians(results, name, server):
    runs = [figures(name, r) for r in results.get(name, {}).get(server, [])]
    keys = set().union(*[set(r) for r in runs]) if runs else set()
    out = {k: median([r.get(k) for r in runs]) for k in keys}
    out["_runs"] = runs
    out["_errors"] = [r["error"] for r in runs if "error" in r]
    return out


def render(results, plan, commands, started, elapsed, runs, servers, stamp, gateway, notes):
    m = machine()
    L = []
    L.append(BEGIN)
    L.append("")
    L.append(f"Run of {started:%Y-%m-%d %H:%M} UTC (driver took {elapsed / 60:.1f} min), "
             f"medians of {runs} runs per server, servers alternated run by run.")
    L.append("")
    L.append(f"Machine: {m['nproc']} CPUs ({m['model']}), {m['ram']} RAM, Linux {m['kernel']}; "
             f"{m['rustc']}; Node {m['node']}. Server pinned to CPU {SERVER_CPU}, load generator "
             f"to CPU {LOADGEN_CPU} (`taskset -c`). Raw JSON: `bench/results/{stamp}/`.")
    L.append("")
    L.append(f"Gateway: {gateway}.")
    for n in notes:
        L.append("")
        L.append(n)
    L.append("")

    def M(name, server):
        return medians(results, name, server)

    present = [s for s in ["aegisx", "bare", "node"] if s in servers]
    head = "| figure | target | " + " | ".join(SERVERS[s] for s in present) + " | AegisX / bare | AegisX / Node | met? |"
    L.append(head)
    L.append("|" + "---|" * (len(present) + 5))

    def row(label, target, vals, digits=0, unit="", check=None, show_ratio=True):
        cells = [fmt(vals.get(s), digits, unit) for s in present]
        rb = ratio(vals.get("aegisx"), vals.get("bare")) if show_ratio else None
        rn = ratio(vals.get("aegisx"), vals.get("node")) if show_ratio else None
        verdict = "" if check is None else ("yes" if check(vals, rb, rn) else "**no**")
        if check is not None and vals.get("aegisx") is None:
            verdict = "–"
        L.append(f"| {label} | {target} | " + " | ".join(cells)
                 + f" | {fmt(rb, 2, '×') if rb is not None else '–'} | {fmt(rn, 2, '×') if rn is not None else '–'} | {verdict} |")

    for n in plan["idle"]:
        name = f"idle-{n}"
        if name not in results:
            continue
        med = {s: M(name, s) for s in present}
        row(f"idle {n:,}: RSS per connection (KiB)", "≤ 12 KiB",
            {s: med[s].get("rss_kib") for s in present}, 1, "",
            lambda v, rb, rn: v.get("aegisx") is not None and v["aegisx"] <= 12.0)
        row(f"idle {n:,}: connect rate (/s)", "≥ 0.8× bare",
            {s: med[s].get("connect_rate") for s in present}, 0, "",
            lambda v, rb, rn: rb is not None and rb >= 0.8)
        row(f"idle {n:,}: failed connects", "0",
            {s: med[s].get("failures") for s in present}, 0, "",
            lambda v, rb, rn: v.get("aegisx") == 0, show_ratio=False)
    for layout in plan.get("tenant_layouts", []):
        n = plan["tenant_n"]
        name = f"idle-{n}-{layout}"
        if name not in results:
            continue
        med = {s: M(name, s) for s in present}
        what = {"per-user": "one tenant per user", "100x100": "tenants of 100", "one": f"one tenant of {n:,}"}[layout]
        per_user = M(f"idle-{n}-per-user", "aegisx").get("connect_rate")

        def vs_per_user(v, rb, rn, base=per_user):
            return v.get("aegisx") is not None and base not in (None, 0) and v["aegisx"] / base >= 0.8

        row(f"{n:,} users, {what}: connect rate (/s)", "≥ 0.8× per-user" if layout == "one" else "",
            {s: med[s].get("connect_rate") for s in present}, 0, "",
            vs_per_user if layout == "one" and per_user else None)
        row(f"{n:,} users, {what}: p99 connect → `connected` (ms)", "≤ 250" if layout == "one" else "",
            {s: med[s].get("connected_p99") for s in present}, 1, "",
            (lambda v, rb, rn: v.get("aegisx") is not None and v["aegisx"] <= 250.0) if layout == "one" else None,
            False)
        row(f"{n:,} users, {what}: RSS per connection (KiB)", "≤ 16 KiB" if layout == "one" else "",
            {s: med[s].get("rss_kib") for s in present}, 1, "",
            (lambda v, rb, rn: v.get("aegisx") is not None and v["aegisx"] <= 16.0) if layout == "one" else None)
        row(f"{n:,} users, {what}: `user_status` received", "",
            {s: med[s].get("user_status") for s in present}, 0, "", None, False)
    if "fanout" in results:
        med = {s: M("fanout", s) for s in present}
        row(f"fanout 1×{plan['fanout_subs']:,}: highest sustained deliveries/s (p99 ≤ 50 ms, no loss)",
            "≥ 0.8× bare, ≥ 5× Node",
            {s: med[s].get("max_delivered") for s in present}, 0, "",
            lambda v, rb, rn: rb is not None and rn is not None and rb >= 0.8 and rn >= 5)
        row("fanout: p99 at that rate (ms)", "≤ 50", {s: med[s].get("max_p99") for s in present}, 1, "", None, False)
    if "rooms" in results:
        med = {s: M("rooms", s) for s in present}
        rate = plan["rooms_rates"][0]
        row(f"rooms {plan['rooms_clients']:,} in rooms of {plan['rooms_k']}, {rate} msg/s each: p99 (ms)", "≤ 20 ms",
            {s: med[s].get("first_p99") for s in present}, 1, "",
            lambda v, rb, rn: v.get("aegisx") is not None and v["aegisx"] <= 20.0, False)
        row(f"rooms, {rate} msg/s each: p50 (ms)", "", {s: med[s].get("first_p50") for s in present}, 2, "", None, False)
        row(f"rooms, {rate} msg/s each: lost", "0", {s: med[s].get("first_lost") for s in present}, 0, "", None, False)
        row("rooms: highest sustained msgs/s per client (of " + ",".join(map(str, plan["rooms_rates"])) + ")", "",
            {s: med[s].get("max_rate") for s in present}, 0, "", None)
        row("rooms: deliveries/s at that rate", "", {s: med[s].get("max_delivered") for s in present}, 0, "", None)
    if "chat-ack" in results:
        med = {s: M("chat-ack", s) for s in present}
        row(f"chat-ack ({plan['ack_clients']} clients × window {plan['ack_window']}): acked msgs/s", "≥ 20,000 (SQLite)",
            {s: med[s].get("acked") for s in present}, 0, "",
            lambda v, rb, rn: v.get("aegisx") is not None and v["aegisx"] >= 20000)
        row("chat-ack: ack latency p50 (ms)", "", {s: med[s].get("p50") for s in present}, 2, "", None, False)
        row("chat-ack: ack latency p99 (ms)", "", {s: med[s].get("p99") for s in present}, 2, "", None, False)
    if "notify" in results:
        med = {s: M("notify", s) for s in present}
        row(f"notify ({plan['notify_users']:,} users, {plan['notify_rate']:,}/s over HTTP): end-to-end p50 (ms)", "",
            {s: med[s].get("p50") for s in present}, 2, "", None, False)
        row("notify: end-to-end p99 (ms)", "", {s: med[s].get("p99") for s in present}, 2, "", None, False)
        row("notify: lost", "0", {s: med[s].get("lost") for s in present}, 0, "", None, False)
        for s in present:
            st = [r.get("status") for r in med[s]["_runs"] if r.get("status")]
            if st and any(x != "ran" for x in st):
                L.append("")
                L.append(f"notify on {SERVERS[s]}: {sorted(set(st))}")
    if "storm" in results:
        med = {s: M("storm", s) for s in present}
        sc = plan["storm_clients"]
        row(f"storm ({sc:,} clients of one tenant, rooms of 10): s from restart until every client has every message",
            "≤ 10 s", {s: med[s].get("recovery_s") for s in present}, 2, "",
            lambda v, rb, rn: v.get("aegisx") is not None and v["aegisx"] <= 10.0, False)
        row("storm: missed / duplicated messages", "0 / 0",
            {s: (None if med[s].get("missed") is None else med[s]["missed"] + (med[s].get("duplicated") or 0))
             for s in present}, 0, "",
            lambda v, rb, rn: v.get("aegisx") == 0, False)
        row("storm: p99 connect during the storm (ms)", "", {s: med[s].get("connect_p99") for s in present}, 1, "",
            None, False)
        row("storm: connect timeouts", "", {s: med[s].get("connect_timeouts") for s in present}, 0, "", None, False)
        row("storm: peak RSS of the restarted node per client, above an empty server's (KiB)", "≤ 16 KiB",
            {s: med[s].get("peak_rss_per_client_kib") for s in present}, 1, "",
            lambda v, rb, rn: v.get("aegisx") is not None and v["aegisx"] <= 16.0, False)
        row("storm: HTTP posts timed out", "0", {s: med[s].get("posts_timed_out") for s in present}, 0, "",
            None, False)
    if "replay-flood" in results or "replay-flood-none" in results:
        fl = {s: M("replay-flood", s) for s in present}
        nf = {s: M("replay-flood-none", s) for s in present}
        o = plan["flood_others"]
        row(f"replay flood: {o} users' ack p99 without the flood (ms)", "",
            {s: nf[s].get("ack_p99") for s in present}, 2, "", None, False)
        row(f"replay flood: {o} users' ack p99 with 10 sockets looping `join_room {{since: 0}}` / `leave_room` on {plan['flood_stored']:,} messages (ms)",
            "≤ 5 ms", {s: fl[s].get("ack_p99") for s in present}, 2, "",
            lambda v, rb, rn: v.get("aegisx") is not None and v["aegisx"] <= 5.0, False)
        row("replay flood: the flood's joins/s (each one replays)", "",
            {s: fl[s].get("joins_per_s") for s in present}, 1, "", None, False)
        row("replay flood: the flood's replayed messages/s", "",
            {s: fl[s].get("replayed_per_s") for s in present}, 0, "", None, False)
        row("replay flood: the flood's joins and leaves refused /s (`RATE_LIMITED`, ...)", "",
            {s: fl[s].get("refused_per_s") for s in present}, 1, "", None, False)
    if any(n in results for n in AEGISX_ONLY):
        L.append("")
        L.append("Storm and replay flood run on AegisX only: the peers store nothing (no `since`, no history API).")
    L.append("")
    # Every run's figures, so the medians can be checked.
    L.append("<details><summary>Every run</summary>")
    L.append("")
    L.append("| scenario | server | run | figures |")
    L.append("|---|---|---|---|")
    for name in results:
        for s in present:
            for i, r in enumerate(results[name].get(s, []), 1):
                f = figures(name, r)
                L.append(f"| {name} | {s} | {i} | `{json.dumps(f, separators=(',', ':'))}` |")
    L.append("")
    L.append("</details>")
    L.append("")
    L.append("Exact commands (ports are picked free per run; `$PID` is the server's):")
    L.append("")
    L.append("```sh")
    L.append("bench/run.sh " + " ".join(sys.argv[1:]))
    for c in commands:
        L.append(c)
    L.append("```")
    L.append("")
    L.append(END)
    return "\n".join(L)


def write_doc(path, generated):
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    else:
        text = ""
    if BEGIN in text and END in text:
        pre = text.split(BEGIN)[0]
        post = text.split(END, 1)[1]
        text = pre + generated + post
    else:
        text = (
            "# Benchmarks\n\n"
            "How AegisX Realtime compares with the bare socketioxide library (the ceiling of the stack it is\n"
            "built on) and with the Node.js socket.io v4 stack users would otherwise run. Kit: `bench/`\n"
            "(see `bench/README.md`); regenerate this table with `bench/run.sh`.\n\n"
            + generated + "\n"
        )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--plan", choices=sorted(PLANS) + sorted(cluster.PLANS), default="full",
                    help="cluster, cluster-smoke: 1 vs 2 vs 3 nodes on one Redis (see bench/cluster.py)")
    ap.add_argument("--only", default="", help="comma list of scenarios: idle,fanout,rooms,chat-ack,notify,storm,replay-flood")
    ap.add_argument("--servers", default="aegisx,bare,node")
    ap.add_argument("--skip-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--gateway-bin", default=os.path.join(ROOT, "target", "release", "aegisx-realtime"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/BENCHMARKS.md")
    ap.add_argument("--keep-from", default="", metavar="DIR",
                    help="a bench/results/<stamp> dir: take the scenarios not selected by --only from it "
                         "(to redo one scenario of a full run without redoing the rest)")
    a = ap.parse_args()

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.time()
    if a.plan in cluster.PLANS:
        return run_cluster(a, started)
    plan = PLANS[a.plan]
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    stamp = started.strftime("%Y%m%d-%H%M%S")
    outdir = os.path.join(BENCH, "results", stamp)
    os.makedirs(outdir, exist_ok=True)

    if not a.skip_build:
        if "aegisx" in servers:
            sh(["cargo", "build", "--release"], cwd=ROOT)
        sh(["cargo", "build", "--release"], cwd=BENCH)
        if "node" in servers and not os.path.isdir(os.path.join(NODE_DIR, "node_modules")):
            sh(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR)
    for b in [LOADGEN] + ([BARE] if "bare" in servers else []) + ([a.gateway_bin] if "aegisx" in servers else []):
        if not os.path.exists(b):
            sys.exit(f"missing {b}: build first (or drop --skip-build)")
    gateway = "-"
    if "aegisx" in servers:
        # Run a copy: a rebuild of target/release during the run must not change what is measured.
        gateway = gateway_identity(a.gateway_bin)
        snap = os.path.join(outdir, "aegisx-realtime")
        shutil.copy2(a.gateway_bin, snap)
        a.gateway_bin = snap
    log(f"ulimit -n: {subprocess.run(['bash', '-c', 'ulimit -n'], capture_output=True, text=True).stdout.strip()}")

    results = {}
    commands = []
    notes = []
    kept = {}
    if a.keep_from:
        with open(os.path.join(a.keep_from, "all.json")) as f:
            kept = json.load(f)
    shown = set()
    cmds_by_name = {}
    for name, args, timeout in scenario_args(plan):
        family = name.split("-")[0] if name.startswith("idle") else name
        if name.startswith("replay-flood"):
            family = "replay-flood"
        if only and family not in only and name not in only:
            if name in kept.get("results", {}):
                results[name] = kept["results"][name]
                commands += kept.get("commands", {}).get(name, [])
                notes.append(f"`{name}` comes from the run in `{kept.get('stamp', a.keep_from)}` "
                             f"({kept.get('gateway', '?')}).")
            continue
        first_cmd = len(commands)
        run_on = [s for s in servers if s == "aegisx" or name not in AEGISX_ONLY]
        results[name] = {s: [] for s in run_on}
        for run in range(1, a.runs + 1):
            for s in run_on:
                tag = f"{name}-r{run}"
                log(f"{name} run {run}/{a.runs} on {s}")
                try:
                    srv = Server(s, outdir, tag, a.gateway_bin)
                except RuntimeError as e:
                    results[name][s].append({"error": str(e)})
                    log(f"  {e}")
                    continue
                res = None
                run_args = args + (["--restart-cmd", srv.restart_cmd()] if name == "storm" else [])
                try:
                    res, cmd = loadgen(run_args, srv, s, timeout)
                finally:
                    # `storm` replaced the server by a process of its own: stop that one too.
                    new_pid = res.get("restarted_pid") if isinstance(res, dict) else None
                    if isinstance(new_pid, int):
                        srv.stop_restarted(new_pid)
                    srv.stop()
                results[name][s].append(res)
                with open(os.path.join(outdir, f"{tag}-{s}.json"), "w") as f:
                    json.dump(res, f, indent=1)
                log(f"  {json.dumps(figures(name, res))} ({res.get('_seconds')} s)")
                if (name, s) not in shown:
                    shown.add((name, s))
                    envs = " ".join(f"{k}={v}" for k, v in srv.env_shown.items() if k != "PORT")
                    envs = envs.replace(srv.tmp or "\0", "$TMPDIR_FRESH")
                    commands.append(f"# {name} / {s}")
                    shown_srv = shlex.join(srv.cmd).replace(outdir + "/aegisx-realtime", "target/release/aegisx-realtime")
                    commands.append(f"JWT_SECRET=… API_KEYS=… HOST=127.0.0.1 PORT=$PORT {envs} " + shown_srv.replace(ROOT + "/", ""))
                    shown_cmd = [c.replace(ROOT + "/", "") for c in cmd]
                    shown_cmd[shown_cmd.index("--server-pid") + 1] = "$PID"
                    shown_cmd[shown_cmd.index("--addr") + 1] = "127.0.0.1:$PORT"
                    if "--restart-cmd" in shown_cmd:
                        shown_cmd[shown_cmd.index("--restart-cmd") + 1] = "<the server command above, same PORT>"
                    commands.append("JWT_SECRET=… API_KEY=… " + shlex.join(shown_cmd))
                time.sleep(1)
        cmds_by_name[name] = commands[first_cmd:]
    elapsed = time.time() - t0
    with open(os.path.join(outdir, "all.json"), "w") as f:
        json.dump({"plan": plan, "results": results, "commands": cmds_by_name, "stamp": stamp,
                   "gateway": gateway}, f, indent=1)
    doc = render(results, plan, commands, started, elapsed, a.runs, servers, stamp, gateway, notes)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(doc + "\n")
    if not a.no_doc:
        write_doc(a.out, doc)
        log(f"wrote {a.out}")
    print(doc)
    log(f"done in {elapsed / 60:.1f} min; raw results in {outdir}")


def run_cluster(a, started):
    """The cluster plans: their own loop and table (bench/cluster.py); docs/BENCHMARKS.md is
    not rewritten by them."""
    outdir = os.path.join(BENCH, "results", started.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(outdir, exist_ok=True)
    if not a.skip_build:
        sh(["cargo", "build", "--release"], cwd=ROOT)
        sh(["cargo", "build", "--release", "-p", "loadgen"], cwd=BENCH)
    loadgen_bin = os.environ.get("LOADGEN_BIN", LOADGEN)
    for b in (loadgen_bin, a.gateway_bin):
        if not os.path.exists(b):
            sys.exit(f"missing {b}: build first (or drop --skip-build)")
    table = cluster.run(a.plan, a.gateway_bin, loadgen_bin, outdir, SECRET, API_KEY, SERVER_CPU, LOADGEN_CPU, log)
    with open(os.path.join(outdir, "cluster.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    log(f"raw results in {outdir}")


if __name__ == "__main__":
    main()
