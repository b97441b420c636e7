"""The `cluster` plans of the benchmark driver (`driver.py --plan cluster | cluster-smoke`).

1, 2 and 3 gateway nodes on one redis-server and one PostgreSQL database, every node pinned to
CPU 0 with Redis (a 2-core machine cannot give each node its own core: the figures compare the
cost of spreading one room over nodes, not the capacity of N machines), the load generator on
CPU 1. Per node count, on a fresh Redis and a fresh database:

- `loadgen fanout` with the subscribers spread round-robin over the nodes (`--node-addrs`), the
  publisher on node 1: delivered messages/s, latency p50/p99 for receivers on the publisher's
  node and on the other nodes;
- Redis work per delivered message, from `INFO commandstats` / `INFO stats` before and after:
  `SPUBLISH` calls per chat message sent (1 with the bus's room-aware routing), and the room
  channel's subscribers (`PUBSUB SHARDNUMSUB`: the nodes that have members, so Redis sends
  that many messages per chat message);
- the time to resume after a Redis restart: Redis is killed and started again on its port, and
  the clock runs until every node's `/readyz` answers 200 again.

Writes `bench/results/<stamp>/cluster.json` and prints a Markdown table.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

PLANS = {
    "cluster": {"nodes": [1, 2, 3], "subs": 1000, "rates": [20, 50, 100, 200, 400], "step": 3, "runs": 3},
    # Seconds, small N: proves the plan still runs; measures nothing.
    "cluster-smoke": {"nodes": [1, 2], "subs": 20, "rates": [5], "step": 1, "runs": 1},
}


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_cli(port, *args):
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                         capture_output=True, text=True, timeout=10)
    return out.stdout


def _info(port, section):
    vals = {}
    for line in _redis_cli(port, "INFO", section).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.strip().split(":", 1)
            vals[k] = v
    return vals


def _calls(stats, cmd):
    for part in stats.get(f"cmdstat_{cmd}", "").split(","):
        if part.startswith("calls="):
            return int(part[6:])
    return 0


class Redis:
    def __init__(self, cpu):
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="aegisx-bench-redis-")
        self.cpu = cpu
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["taskset", "-c", self.cpu, "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if _redis_cli(self.port, "PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def close(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _psql(sql):
    subprocess.run(["psql", os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
                    "-qtAc", sql], check=True, capture_output=True, timeout=30)


def _pg_url(name):
    base = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
    return base.rsplit("/", 1)[0] + "/" + name


class Node:
    def __init__(self, i, gateway_bin, env, cpu, logdir, tag):
        self.port = _free_port()
        self.log_path = os.path.join(logdir, f"{tag}-node{i}.log")
        self.log = open(self.log_path, "w")
        e = dict(os.environ, **env, PORT=str(self.port), HOST="127.0.0.1", NODE_ID=f"node-{i}")
        self.proc = subprocess.Popen(["taskset", "-c", cpu, gateway_bin, "serve"], env=e,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.time() + 30
        while "listening on" not in (self.proc.stdout.readline() or ""):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"node {i} did not start; see {self.log_path}")
        self.pid = self.proc.pid

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://{self.addr}/readyz", timeout=2) as r:
                return r.status == 200
        except Exception:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _room_subscribers(port):
    """Subscribers of the busiest shard channel: the nodes that receive the room's traffic."""
    chans = [c for c in _redis_cli(port, "PUBSUB", "SHARDCHANNELS").split() if c]
    best = 0
    for c in chans:
        out = _redis_cli(port, "PUBSUB", "SHARDNUMSUB", c).split()
        if len(out) >= 2 and out[1].isdigit():
            best = max(best, int(out[1]))
    return best


def run(plan_name, gateway_bin, loadgen_bin, outdir, secret, api_key, server_cpu, loadgen_cpu, log):
    plan = PLANS[plan_name]
    results = []
    for n in plan["nodes"]:
        for run_i in range(1, plan["runs"] + 1):
            tag = f"cluster-{n}n-r{run_i}"
            db = f"aegisx_bench_{int(time.time())}_{n}_{run_i}"
            _psql(f"CREATE DATABASE {db}")
            redis = Redis(server_cpu)
            env = {"JWT_SECRET": secret, "API_KEYS": api_key, "DATABASE_URL": _pg_url(db),
                   "REDIS_URL": f"redis://127.0.0.1:{redis.port}", "RATE_LIMIT_PER_MINUTE": "1000000000",
                   "MAX_CONNECTIONS_PER_USER": "1000000", "LOG_LEVEL": "warn", "SHUTDOWN_TIMEOUT_SECS": "2"}
            nodes = []
            try:
                for i in range(1, n + 1):
                    nodes.append(Node(i, gateway_bin, env, server_cpu, outdir, tag))
                # No warm-up: every SPUBLISH during the run is then one of the counted messages.
                cmd = ["taskset", "-c", loadgen_cpu, loadgen_bin, "fanout", "-n", str(plan["subs"]),
                       "--rates", ",".join(map(str, plan["rates"])), "--step-secs", str(plan["step"]),
                       "--drain-secs", "2", "--warmup-secs", "0", "--addr", nodes[0].addr,
                       "--server-pid", str(nodes[0].pid), "--label", f"{n} nodes"]
                if n > 1:
                    cmd += ["--node-addrs", ",".join(x.addr for x in nodes[1:])]
                before = (_info(redis.port, "commandstats"), _info(redis.port, "stats"))
                log(f"{tag}: {' '.join(cmd)}")
                p = subprocess.run(cmd, env=dict(os.environ, JWT_SECRET=secret), capture_output=True,
                                   text=True, timeout=600)
                subs = _room_subscribers(redis.port)
                after = (_info(redis.port, "commandstats"), _info(redis.port, "stats"))
                lines = p.stdout.strip().splitlines()
                res = json.loads(lines[-1]) if lines else {"error": p.stderr[-500:]}
                sent = sum(s.get("sent", 0) for s in res.get("steps", []))
                spublish = _calls(after[0], "spublish") - _calls(before[0], "spublish")
                cmds = int(after[1].get("total_commands_processed", 0)) - int(before[1].get("total_commands_processed", 0))
                # Redis restart: kill, start on the same port, time until every node is ready.
                redis.kill()
                while any(x.ready() for x in nodes):
                    time.sleep(0.05)
                t0 = time.time()
                redis.start()
                deadline = t0 + 60
                while not all(x.ready() for x in nodes) and time.time() < deadline:
                    time.sleep(0.02)
                resume_s = round(time.time() - t0, 3) if all(x.ready() for x in nodes) else None
                results.append({
                    "nodes": n, "run": run_i, "exit": p.returncode, "fanout": res,
                    "chat_messages_sent": sent, "spublish_calls": spublish,
                    "spublish_per_message": round(spublish / sent, 3) if sent else None,
                    "redis_commands": cmds,
                    "room_channel_subscribers": subs,
                    "resume_after_redis_restart_s": resume_s,
                })
                log(f"{tag}: max {(res.get('max_sustained') or {})} spublish/msg "
                    f"{results[-1]['spublish_per_message']} room subscribers {subs} resume {resume_s} s")
            finally:
                for x in nodes:
                    x.stop()
                redis.close()
                try:
                    _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
                except subprocess.CalledProcessError:
                    pass
    with open(os.path.join(outdir, "cluster.json"), "w") as f:
        json.dump({"plan": plan, "results": results}, f, indent=1)
    return render(results)


def _best(r):
    steps = [s for s in r["fanout"].get("steps", []) if s.get("sustained")]
    return steps[-1] if steps else None


def _pair(step, key):
    lat = (step or {}).get(key) or {}
    return f"{lat.get('p50', '-')} / {lat.get('p99', '-')}"


def render(results):
    """One row per run: the highest sustained step, and the first step (the lightest load, a
    rate every layout sustains), where the cross-node latency target is read."""
    rows = ["| nodes | delivered/s (highest sustained) | same-node p50 / p99 (ms) | cross-node p50 / p99 (ms) "
            "| at the first step: msgs/s, same-node / cross-node p99 (ms) "
            "| SPUBLISH per message | nodes receiving the room | resume after Redis restart (s) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        b = _best(r)
        steps = r["fanout"].get("steps") or []
        first = steps[0] if steps else None
        light = "-"
        if first:
            same = (first.get("latency_same_node_ms") or {}).get("p99", "-")
            cross = (first.get("latency_cross_node_ms") or {}).get("p99", "-")
            light = f"{first.get('rate_per_sender', '-')}: {same} / {cross}"
        rows.append(
            f"| {r['nodes']} | {b['delivered_per_s'] if b else '-'} | {_pair(b, 'latency_same_node_ms')} "
            f"| {_pair(b, 'latency_cross_node_ms')} | {light} | {r['spublish_per_message']} "
            f"| {r['room_channel_subscribers']} | {r['resume_after_redis_restart_s']} |")
    return "\n".join(rows)
