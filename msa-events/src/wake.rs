//! Waiting for work: a commit in this process, a PostgreSQL notification from another, or
//! the poll interval, whichever comes first.

use std::time::Duration;

use msa_core::backoff::Backoff;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::Error;
use crate::store::Store;

/// What a relay or projector waits on between batches.
pub(crate) struct Wake {
    local: watch::Receiver<u64>,
    listener: Option<PgListener>,
    poll: Duration,
}

impl Wake {
    /// Wakes on `local` commits, notifications on `channel` (PostgreSQL) and every `poll`.
    pub(crate) async fn new(
        store: &Store,
        local: watch::Receiver<u64>,
        channel: &str,
        poll: Duration,
    ) -> Result<Wake, Error> {
        Ok(Wake {
            local,
            listener: store.listen(channel).await?,
            poll,
        })
    }

    /// Marks every commit so far as seen: called before looking for work, so that one
    /// committed while looking wakes the next [`wait`](Self::wait) at once.
    pub(crate) fn seen(&mut self) {
        self.local.borrow_and_update();
        if let Some(listener) = &mut self.listener {
            while listener.next_buffered().is_some() {}
        }
    }

    /// Waits for a commit, a notification or the poll interval.
    pub(crate) async fn wait(&mut self) {
        let notified = async {
            match &mut self.listener {
                // A lost connection reconnects inside `recv`; meanwhile the poll covers.
                Some(listener) => {
                    if listener.recv().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.local.changed() => {}
            () = notified => {}
            () = tokio::time::sleep(self.poll) => {}
        }
    }
}

/// Runs `work` until `stop` turns true: again at once while it says more is waiting, after
/// a commit, notification or `poll` otherwise, after a growing delay when it fails
/// (logged as `what`).
pub(crate) async fn run<F, Fut>(
    what: String,
    store: Store,
    commits: watch::Receiver<u64>,
    channel: &'static str,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, Error>>,
{
    let mut wake = loop {
        match Wake::new(&store, commits.clone(), channel, poll).await {
            Ok(wake) => break wake,
            Err(error) => {
                tracing::warn!(%error, "{what} cannot listen for commits; retrying");
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(poll) => {}
                }
            }
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    while !*stop.borrow() {
        wake.seen();
        let wait = match work().await {
            Ok(true) => {
                backoff.reset();
                continue;
            }
            Ok(false) => {
                backoff.reset();
                None
            }
            Err(error) => {
                tracing::warn!(%error, "{what} failed; retrying");
                Some(backoff.next_delay())
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = async {
                match wait {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => wake.wait().await,
                }
            } => {}
        }
    }
}

/// A relay or projector running on a task, until [`stop`](Self::stop)ped.
#[derive(Debug)]
pub struct TaskHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TaskHandle {
    /// Spawns `run(stop)`: a loop that returns once `stop` turns true.
    pub fn spawn<Fut>(run: impl FnOnce(watch::Receiver<bool>) -> Fut) -> TaskHandle
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        TaskHandle {
            stop,
            task: tokio::spawn(run(stopped)),
        }
    }

    /// Stops the loop after the work in hand and waits for it.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}
