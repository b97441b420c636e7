//! Redis servers of a test's own, on free ports, without persistence (the machine's Redis on
//! 6379 stays untouched): one server, which a fault test may stop and start again, or a 3-master
//! Redis Cluster. A missing `redis-server` fails under `CI=true` and is skipped loudly
//! elsewhere. Shared by the Redis bus's unit tests and `tests/cluster_state.rs` (`#[path]`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of the test's own, on a free port (the machine's Redis stays untouched).
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// `None` (loudly) when there is no `redis-server`; under `CI=true` that is a failure.
    pub fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut redis = Self { port, child: None };
        match redis.spawn() {
            Ok(()) => Some(redis),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("redis-server is required under CI=true: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: redis-server cannot be started ({e})");
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("redis-server did not listen"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A 3-master Redis Cluster of the test's own (no replicas), on free ports.
pub struct OwnCluster {
    pub nodes: Vec<OwnRedis>,
    _dir: tempfile::TempDir,
}

impl OwnCluster {
    pub fn start() -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let (port, bus_port) = (free(), free());
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-port"])
                .arg(bus_port.to_string())
                .arg("--cluster-config-file")
                .arg(dir.path().join(format!("nodes-{port}.conf")))
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match child {
                Ok(c) => nodes.push(OwnRedis {
                    port,
                    child: Some(c),
                }),
                Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("redis-server is required under CI=true: {e}")
                }
                Err(e) => {
                    eprintln!("SKIPPED: redis-server cannot be started ({e})");
                    return None;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &nodes {
            while std::net::TcpStream::connect(("127.0.0.1", n.port)).is_err() {
                assert!(Instant::now() < deadline, "cluster node did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = nodes.iter().all(|n| {
                Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Self { nodes, _dir: dir })
    }

    pub fn url(&self) -> String {
        let first = &self.nodes[0];
        let others: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port))
            .collect();
        format!(
            "redis-cluster://127.0.0.1:{}?{}",
            first.port,
            others.join("&")
        )
    }
}
