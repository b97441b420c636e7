//! The background tasks a node cannot work without (the chat writer, the fan-out, the deadline
//! task, the reaper). None of them ends while the node runs: each lives as long as the senders
//! the application holds, or loops forever. So one that ends before shutdown, by a panic or
//! otherwise, is a fault: the node stops reporting ready and exits non-zero, for its supervisor
//! (systemd, Kubernetes) to restart it, instead of running on without chat or expiry cuts.
//! Once shutdown has begun they are no longer watched: ending then is how they finish.

use std::fmt;

use tokio::task::{JoinHandle, JoinSet};

/// The watched tasks.
#[derive(Default)]
pub struct Supervisor {
    tasks: JoinSet<TaskExit>,
}

/// How a watched task ended.
#[derive(Debug)]
pub struct TaskExit {
    pub task: &'static str,
    /// The panic message, when it panicked.
    pub panic: Option<String>,
}

impl fmt::Display for TaskExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.panic {
            Some(msg) => write!(f, "background task `{}` panicked: {msg}", self.task),
            None => write!(f, "background task `{}` ended unexpectedly", self.task),
        }
    }
}

impl Supervisor {
    pub fn watch(&mut self, task: &'static str, handle: JoinHandle<()>) {
        self.tasks.spawn(async move {
            let panic = match handle.await {
                Ok(()) => None,
                Err(e) if e.is_panic() => Some(panic_message(e.into_panic())),
                Err(e) => Some(e.to_string()),
            };
            TaskExit { task, panic }
        });
    }

    /// The first watched task to end. Pending forever while none does (or none is watched).
    pub async fn first_exit(&mut self) -> TaskExit {
        match self.tasks.join_next().await {
            Some(Ok(exit)) => exit,
            // The watcher itself cannot panic; only aborting the set (never done) gets here.
            Some(Err(e)) => TaskExit {
                task: "supervisor",
                panic: Some(e.to_string()),
            },
            None => std::future::pending().await,
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_with_its_name_and_message() {
        let mut sup = Supervisor::default();
        sup.watch("forever", tokio::spawn(std::future::pending()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        sup.watch(
            "fanout",
            tokio::spawn(async move {
                let _ = rx.await;
                panic!("boom");
            }),
        );
        // Nothing has ended yet.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), sup.first_exit())
                .await
                .is_err()
        );
        tx.send(()).unwrap();
        let exit = sup.first_exit().await;
        assert_eq!(exit.task, "fanout");
        assert_eq!(exit.panic.as_deref(), Some("boom"));
        assert_eq!(exit.to_string(), "background task `fanout` panicked: boom");
    }

    #[tokio::test]
    async fn a_task_that_returns_is_reported_too() {
        let mut sup = Supervisor::default();
        sup.watch("reaper", tokio::spawn(async {}));
        let exit = sup.first_exit().await;
        assert_eq!((exit.task, exit.panic), ("reaper", None));
    }

    #[tokio::test]
    async fn with_nothing_watched_it_waits() {
        let mut sup = Supervisor::default();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), sup.first_exit())
                .await
                .is_err()
        );
    }
}
