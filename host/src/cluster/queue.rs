//! The cluster's work queue: events to run (webhook deliveries, cron
//! firings, asynchronous invocations) as messages on a durable NATS
//! JetStream work-queue stream, which any daemon with capacity takes,
//! runs, and acknowledges once the event has completed.
//!
//! - **Durable.** The stream is stored on the NATS server's disk; a
//!   message leaves it only when a daemon acknowledges it.
//! - **Published once.** Each message carries its event id as
//!   `Nats-Msg-Id`: JetStream drops a second publish of the same id within
//!   [`DUPLICATE_WINDOW`] (a webhook retried by its sender, two daemons
//!   firing one schedule).
//! - **Completed once.** Before running an event a daemon claims its id in
//!   PostgreSQL (`work_items`); an id already done is acknowledged without
//!   running again, and one running elsewhere with a fresh heartbeat is
//!   left to its runner. While it runs, the daemon tells JetStream it is
//!   still working and refreshes its claim's heartbeat.
//! - **Redelivered after a crash.** A daemon that dies stops both; after
//!   the consumer's ack wait JetStream delivers the message to another
//!   daemon, which finds a stale claim and takes the event over.
//!
//! A daemon that died in the middle of an event may have had some of its
//! effects happen; the event then runs again from the start elsewhere.
//! Making each tool call itself happen once across such a restart (a
//! journal of effects by event id) is the next step; until then, at most
//! the calls of an event in flight in a crashed daemon can repeat.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{ClusterDb, ClusterError};

/// The stream's name.
pub const STREAM: &str = "CLAWCAGE_WORK";
/// Subjects of work: `clawcage.work.<agent>`.
pub const SUBJECT_PREFIX: &str = "clawcage.work";
/// The durable consumer every daemon pulls from.
pub const CONSUMER: &str = "clawcage-daemons";
/// How long JetStream remembers a message id to drop a duplicate publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The largest message (an event and its payload), as a webhook's body is
/// bounded before it gets here.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// How many times one event is delivered at most (crashes in a row).
pub const MAX_DELIVER: i64 = 5;
/// How long completed claims are kept (redeliveries come within minutes;
/// the rows must not grow without bound).
pub const KEEP_DONE: Duration = Duration::from_secs(24 * 3600);

/// Why the work queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// NATS failed or could not be reached.
    #[error("NATS: {0}")]
    Nats(String),
    /// The claims' database failed.
    #[error(transparent)]
    Db(#[from] ClusterError),
    /// A message could not be encoded or decoded.
    #[error("work item: {0}")]
    Item(String),
}

fn nats(error: impl std::fmt::Display) -> QueueError {
    QueueError::Nats(error.to_string())
}

/// One event to run on some daemon: metadata and the event itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The event id: the key of the published-once and completed-once
    /// guarantees.
    pub id: String,
    /// The agent to run it.
    pub agent: String,
    /// Where it came from (`webhook`, `schedule`, `async`).
    pub origin: String,
    /// The event.
    pub event: crate::Event,
}

/// The queue's settings.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// How long JetStream waits for an acknowledgement (or a sign of
    /// progress) before delivering a message again. A running daemon
    /// signals progress every third of it; a claim whose heartbeat is older
    /// than this is stale.
    pub ack_wait: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// This daemon's handle on the work queue.
#[derive(Clone)]
pub struct WorkQueue {
    js: jetstream::Context,
    consumer: consumer::PullConsumer,
    db: ClusterDb,
    daemon: Arc<str>,
    options: QueueOptions,
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("daemon", &self.daemon)
            .finish_non_exhaustive()
    }
}

/// How a claim went.
enum Claim {
    /// This daemon runs the event.
    Run,
    /// Already completed: acknowledge, do not run.
    Done,
    /// Another daemon is running it and alive: leave it.
    Busy,
}

impl WorkQueue {
    /// Connects to NATS at `url`, creating the stream and the consumer if
    /// they do not exist yet (every daemon may; the first one wins and the
    /// others find them).
    pub async fn connect(
        url: &str,
        db: ClusterDb,
        daemon: impl Into<String>,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        let client = async_nats::ConnectOptions::new()
            .name("clawcage")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(3))
            .connect(url)
            .await
            .map_err(nats)?;
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                max_message_size: MAX_MESSAGE_BYTES as i32,
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let consumer = stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: options.ack_wait,
                    max_deliver: MAX_DELIVER,
                    ..Default::default()
                },
            )
            .await
            .map_err(nats)?;
        Ok(Self {
            js,
            consumer,
            db,
            daemon: Arc::from(daemon.into()),
            options,
        })
    }

    /// Puts an event on the queue, once: a second publish of the same id
    /// within [`DUPLICATE_WINDOW`] is dropped by JetStream. Returns when
    /// the stream has stored it.
    pub async fn publish(&self, item: &WorkItem) -> Result<(), QueueError> {
        let payload = serde_json::to_vec(item).map_err(|e| QueueError::Item(e.to_string()))?;
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(QueueError::Item(format!(
                "{} bytes is more than the {MAX_MESSAGE_BYTES} a work item may be",
                payload.len()
            )));
        }
        let subject = format!("{SUBJECT_PREFIX}.{}", subject_token(&item.agent));
        self.js
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(&item.id),
            )
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// Takes work while there is capacity (`capacity` events at once) and
    /// runs each with `handle`, which answers the event's outcome (`Ok` or
    /// `Err` with the error text; neither is stored, only which one it
    /// was). Runs until the returned future is dropped; reconnects by
    /// itself when NATS or PostgreSQL come back.
    pub async fn run<F, Fut>(&self, capacity: usize, handle: F)
    where
        F: Fn(WorkItem) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        let handle = Arc::new(handle);
        let slots = Arc::new(tokio::sync::Semaphore::new(capacity.max(1)));
        let mut last_prune = tokio::time::Instant::now();
        loop {
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = tokio::time::Instant::now();
                if let Err(error) = self.prune().await {
                    tracing::warn!(%error, "cannot prune completed work items");
                }
            }
            // Wait for a free slot before asking for work, then ask for as
            // many messages as there are free slots.
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let free = slots.available_permits() + 1;
            let batch = self
                .consumer
                .batch()
                .max_messages(free)
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let mut messages = match batch {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "cannot pull work from NATS; retrying");
                    drop(first);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut permit = Some(first);
            while let Some(message) = messages.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(%error, "pulling work from NATS failed");
                        break;
                    }
                };
                let slot = match permit.take() {
                    Some(slot) => slot,
                    None => match slots.clone().acquire_owned().await {
                        Ok(slot) => slot,
                        Err(_) => return,
                    },
                };
                let queue = self.clone();
                let handle = handle.clone();
                tokio::spawn(async move {
                    queue.process(message, handle.as_ref()).await;
                    drop(slot);
                });
            }
        }
    }

    /// Claims, runs and acknowledges one message.
    async fn process<F, Fut>(&self, message: jetstream::Message, handle: &F)
    where
        F: Fn(WorkItem) -> Fut,
        Fut: Future<Output = Result<String, String>>,
    {
        let item: WorkItem = match serde_json::from_slice(&message.payload) {
            Ok(item) => item,
            Err(error) => {
                // Never runnable: stop redelivering it.
                tracing::error!(%error, "a work item that is not one; dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        match self.claim(&item).await {
            Ok(Claim::Run) => {}
            Ok(Claim::Done) => {
                let _ = message.double_ack().await;
                return;
            }
            Ok(Claim::Busy) => {
                // Its runner is alive; look again after one ack wait.
                let _ = message
                    .ack_with(AckKind::Nak(Some(self.options.ack_wait)))
                    .await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, id = %item.id, "cannot claim a work item; it will be delivered again");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return;
            }
        }
        // Tell JetStream and the claim that the event is still running.
        let beat = {
            let queue = self.clone();
            let id = item.id.clone();
            let progress = message.clone();
            let every = self.options.ack_wait / 3;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let _ = progress.ack_with(AckKind::Progress).await;
                    let _ = queue.heartbeat(&id).await;
                }
            })
        };
        let outcome = handle(item.clone()).await;
        beat.abort();
        let outcome = if outcome.is_ok() { "ok" } else { "error" };
        // Done first, then acknowledged: a crash in between redelivers a
        // message whose claim says done, which is acknowledged unrun.
        let mut recorded = self.finish(&item.id, outcome).await;
        for _ in 0..3 {
            if recorded.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            recorded = self.finish(&item.id, outcome).await;
        }
        if let Err(error) = recorded {
            tracing::error!(%error, id = %item.id, "cannot record a completed work item");
            return;
        }
        if let Err(error) = message.double_ack().await {
            tracing::warn!(%error, id = %item.id, "cannot acknowledge a completed work item; its redelivery will be acknowledged unrun");
        }
    }

    async fn claim(&self, item: &WorkItem) -> Result<Claim, QueueError> {
        let client = self.db.client().await?;
        let stale = self.options.ack_wait.as_secs_f64();
        // Inserted, or taken over when not done and its heartbeat is stale.
        // A redelivery to the daemon still running it (JetStream may
        // redeliver after its own restart) finds a fresh heartbeat: busy.
        let row = client
            .query_opt(
                "INSERT INTO work_items (id, agent, daemon, state, attempts) VALUES ($1, $2, $3, 'running', 1) \
                 ON CONFLICT (id) DO UPDATE SET daemon = EXCLUDED.daemon, attempts = work_items.attempts + 1, heartbeat_at = now() \
                 WHERE work_items.state = 'running' \
                   AND work_items.heartbeat_at < now() - make_interval(secs => $4) \
                 RETURNING attempts",
                &[&item.id, &item.agent, &&*self.daemon, &stale],
            )
            .await
            .map_err(ClusterError::from)?;
        if row.is_some() {
            return Ok(Claim::Run);
        }
        let state: Option<String> = client
            .query_opt("SELECT state FROM work_items WHERE id = $1", &[&item.id])
            .await
            .map_err(ClusterError::from)?
            .map(|r| r.get(0));
        Ok(match state.as_deref() {
            Some("done") => Claim::Done,
            _ => Claim::Busy,
        })
    }

    async fn heartbeat(&self, id: &str) -> Result<(), QueueError> {
        let client = self.db.client().await?;
        client
            .execute(
                "UPDATE work_items SET heartbeat_at = now() WHERE id = $1 AND daemon = $2 AND state = 'running'",
                &[&id, &&*self.daemon],
            )
            .await
            .map_err(ClusterError::from)?;
        Ok(())
    }

    async fn finish(&self, id: &str, outcome: &str) -> Result<(), QueueError> {
        let client = self.db.client().await?;
        client
            .execute(
                "UPDATE work_items SET state = 'done', outcome = $3, finished_at = now() WHERE id = $1 AND daemon = $2",
                &[&id, &&*self.daemon, &outcome],
            )
            .await
            .map_err(ClusterError::from)?;
        Ok(())
    }

    /// Deletes completed claims older than [`KEEP_DONE`].
    async fn prune(&self) -> Result<u64, QueueError> {
        let client = self.db.client().await?;
        let keep = KEEP_DONE.as_secs_f64();
        Ok(client
            .execute(
                "DELETE FROM work_items WHERE state = 'done' AND finished_at < now() - make_interval(secs => $1)",
                &[&keep],
            )
            .await
            .map_err(ClusterError::from)?)
    }
}

/// An agent name as one NATS subject token: names are already
/// `[a-z0-9-]`, but a subject must never be split or wildcarded by one.
fn subject_token(agent: &str) -> String {
    agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_name_is_one_subject_token() {
        assert_eq!(subject_token("triage"), "triage");
        assert_eq!(subject_token("a.b>*"), "a_b__");
    }
}
