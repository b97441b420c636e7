"""Fixtures for the python-socketio interop tests.

`server` spawns the real gateway binary (`aegisx-realtime serve`, path from AEGISX_BIN or
../../target/debug/aegisx-realtime) on a free port with a fresh SQLite database, once per test
module, and stops it with SIGTERM. A missing binary is a hard error, never a skip.
`token` mints HS256 tokens with the server's secret. `client` makes python-socketio clients that
record every `/ws` event, and disconnects them after the test.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import jwt
import pytest
import socketio

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BIN = os.path.normpath(os.path.join(HERE, "..", "..", "target", "debug", "aegisx-realtime"))
JWT_SECRET = "aegisx-python-interop-secret-0123456789abcdef"
NAMESPACE = "/ws"
LISTENING = re.compile(r"^aegisx-realtime listening on 127\.0\.0\.1:(\d+)\s*$")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
EVENT_TIMEOUT = 10.0


class Server:
    def __init__(self, url, port, secret, proc, stderr_path):
        self.url = url
        self.port = port
        self.secret = secret
        self.proc = proc
        self.stderr_path = stderr_path

    def stderr(self):
        with open(self.stderr_path, "r", errors="replace") as f:
            return f.read()


def _binary():
    path = os.environ.get("AEGISX_BIN") or DEFAULT_BIN
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"gateway binary not found or not executable at {path} "
            "(build it with cargo, or point AEGISX_BIN at it)",
            pytrace=False,
        )
    return path


def start_server(extra_env=None):
    """Starts `aegisx-realtime serve` and returns (Server, tmpdir) once it is listening."""
    binary = _binary()
    tmpdir = tempfile.mkdtemp(prefix="aegisx-py-")
    env = dict(os.environ)
    env.update(
        HOST="127.0.0.1",
        PORT="0",
        JWT_SECRET=JWT_SECRET,
        DATABASE_URL=f"sqlite://{tmpdir}/t.db",
        LOG_LEVEL="warn",
        # python-engineio sometimes drops its CLOSE after a refused CONNECT (it races the
        # server's first PING); the server then closes the transport at this timeout.
        CONNECT_TIMEOUT_SECS="2",
    )
    env.update(extra_env or {})
    stderr_path = os.path.join(tmpdir, "stderr.log")
    stderr_file = open(stderr_path, "wb")
    proc = subprocess.Popen(
        [binary, "serve"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        env=env,
    )
    stderr_file.close()

    found = {}
    ready = threading.Event()

    def pump():
        # Reads stdout for the listening line, then keeps draining it so the pipe never fills.
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            m = LISTENING.match(line)
            if m and not ready.is_set():
                found["port"] = int(m.group(1))
                ready.set()
        ready.set()  # EOF: the process is gone

    threading.Thread(target=pump, name="aegisx-stdout", daemon=True).start()
    ready.wait(START_TIMEOUT)
    if "port" not in found:
        proc.kill()
        proc.wait()
        with open(stderr_path, "r", errors="replace") as f:
            err = f.read()
        shutil.rmtree(tmpdir, ignore_errors=True)
        pytest.fail(
            f"gateway did not print its listening line (exit code {proc.returncode}):\n{err}",
            pytrace=False,
        )
    port = found["port"]
    return Server(f"http://127.0.0.1:{port}", port, JWT_SECRET, proc, stderr_path), tmpdir


def stop_server(server, tmpdir):
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            shutil.rmtree(tmpdir, ignore_errors=True)
            pytest.fail(f"gateway did not exit within {STOP_TIMEOUT}s of SIGTERM", pytrace=False)
    shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    """The gateway with its default settings (CORS_ORIGIN=http://localhost:3000)."""
    srv, tmpdir = start_server()
    try:
        yield srv
    finally:
        stop_server(srv, tmpdir)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_own_origin():
    """The gateway on a port picked beforehand, with CORS_ORIGIN set to its own origin
    (http://127.0.0.1:PORT), which is the Origin header websocket-client sends."""
    port = free_port()
    srv, tmpdir = start_server({"PORT": str(port), "CORS_ORIGIN": f"http://127.0.0.1:{port}"})
    try:
        yield srv
    finally:
        stop_server(srv, tmpdir)


def make_token(sub, secret=JWT_SECRET, exp_in=3600, **claims):
    """An HS256 token for `sub`; `tenantId`, `name`, `email`, ... go in as keyword claims
    (a claim given as None is left out)."""
    payload = {"sub": sub, "exp": int(time.time()) + exp_in}
    payload.update({k: v for k, v in claims.items() if v is not None})
    return jwt.encode(payload, secret, algorithm="HS256")


@pytest.fixture
def token(server):
    """token(sub=None, **claims) -> a JWT the server accepts (a fresh unique sub by default)."""

    def mint(sub=None, **claims):
        return make_token(sub or unique("user"), secret=server.secret, **claims)

    return mint


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Recorder:
    """Every event a client gets on /ws, in order, with a way to wait for one."""

    def __init__(self):
        self.events = []  # (name, args)
        self.cond = threading.Condition()
        self.connect_errors = []

    def record(self, name, *args):
        with self.cond:
            self.events.append((name, args[0] if len(args) == 1 else args))
            self.cond.notify_all()

    def on_connect_error(self, data=None):
        with self.cond:
            self.connect_errors.append(data)
            self.cond.notify_all()

    def wait_for(self, name, predicate=None, timeout=EVENT_TIMEOUT, start=0):
        """Returns the payload of the first `name` event (from index `start`) that satisfies
        `predicate`, waiting for it up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev, data in self.events[start:]:
                    if ev == name and (predicate is None or predicate(data)):
                        return data
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {name!r} event within {timeout}s; got {self.events!r}"
                    )
                self.cond.wait(remaining)

    def of(self, name):
        with self.cond:
            return [data for ev, data in self.events if ev == name]

    def mark(self):
        with self.cond:
            return len(self.events)


def new_client():
    sio = socketio.Client(reconnection=False)
    rec = Recorder()
    sio.on("*", rec.record, namespace=NAMESPACE)
    sio.on("connect_error", rec.on_connect_error, namespace=NAMESPACE)
    sio.recorder = rec
    return sio


@pytest.fixture
def client(server):
    """client(tok, transports=None, **connect_kwargs) -> a connected socketio.Client on /ws,
    whose `.recorder` holds its events. Disconnected at teardown."""
    made = []

    def connect(tok, transports=None, url=None, **kwargs):
        sio = new_client()
        made.append(sio)
        sio.connect(
            url or server.url,
            auth={"token": tok} if tok is not None else None,
            namespaces=[NAMESPACE],
            transports=transports,
            wait_timeout=EVENT_TIMEOUT,
            **kwargs,
        )
        return sio

    yield connect
    for sio in made:
        try:
            sio.disconnect()
        except Exception:  # noqa: BLE001 - teardown of a client that may already be gone
            pass
