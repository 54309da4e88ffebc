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
/// Deliveries are not limited: a delivery spent while the database was
/// away, or while another daemon still ran the event, must not lose it. A
/// message that can never run is terminated instead.
pub const MAX_DELIVER: i64 = -1;
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
    /// The consumer's ack wait, as the server has it (the first daemon to
    /// create the consumer set it).
    ack_wait: Duration,
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("daemon", &self.daemon)
            .finish_non_exhaustive()
    }
}

/// Aborts a task when dropped (the handler panicked, or the run was
/// cancelled): a heartbeat must never outlive its run.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a claim went.
enum Claim {
    /// This daemon runs the event; the token proves the claim is still its.
    Run(i32),
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
        // Daemons starting together race to create the stream and the
        // consumer; the losers' creations fail (JetStream answers "subjects
        // overlap" or "already exists") and, on a second look, find them.
        let mut attempt = 0;
        let consumer = loop {
            attempt += 1;
            match Self::stream_and_consumer(&js, &options).await {
                Ok(consumer) => break consumer,
                Err(error) if attempt >= 5 => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(100 * attempt)).await,
            }
        };
        let ack_wait = consumer.cached_info().config.ack_wait;
        if ack_wait != options.ack_wait {
            tracing::warn!(
                server = ?ack_wait,
                asked = ?options.ack_wait,
                "the work queue's consumer exists with another ack wait; using the server's"
            );
        }
        Ok(Self {
            js,
            consumer,
            db,
            daemon: Arc::from(daemon.into()),
            ack_wait,
        })
    }

    async fn stream_and_consumer(
        js: &jetstream::Context,
        options: &QueueOptions,
    ) -> Result<consumer::PullConsumer, QueueError> {
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
        stream
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
            .map_err(nats)
    }

    /// Puts an event on the queue, once: a second publish of the same id
    /// within [`DUPLICATE_WINDOW`] is dropped by JetStream. Returns when
    /// the stream has stored it.
    pub async fn publish(&self, item: &WorkItem) -> Result<(), QueueError> {
        if item.id.is_empty() || item.agent.is_empty() {
            return Err(QueueError::Item(
                "a work item needs an id and an agent".into(),
            ));
        }
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
    /// itself when NATS or PostgreSQL come back, and takes no work while
    /// the database cannot record claims.
    pub async fn run<F, Fut>(&self, capacity: usize, handle: F)
    where
        F: Fn(WorkItem) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        let handle = Arc::new(handle);
        let slots = Arc::new(tokio::sync::Semaphore::new(capacity.max(1)));
        let mut last_prune: Option<tokio::time::Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            // No claims can be recorded: pulling would only spend
            // deliveries. Wait for the database.
            if let Err(error) = self.db_ready().await {
                tracing::warn!(%error, "the work queue waits for PostgreSQL");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            backoff = Duration::from_millis(100);
            if last_prune.is_none_or(|at| at.elapsed() > Duration::from_secs(600)) {
                last_prune = Some(tokio::time::Instant::now());
                if let Err(error) = self.prune().await {
                    tracing::warn!(%error, "cannot prune work items");
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

    /// Whether claims can be recorded now.
    async fn db_ready(&self) -> Result<(), QueueError> {
        let client = self.db.client().await?;
        client
            .execute("SELECT 1", &[])
            .await
            .map_err(ClusterError::from)?;
        Ok(())
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
        let delivery = message.info().map(|info| info.delivered).unwrap_or(1);
        let token = match self.claim(&item, delivery).await {
            Ok(Claim::Run(token)) => token,
            Ok(Claim::Done) => {
                let _ = message.double_ack().await;
                return;
            }
            Ok(Claim::Busy) => {
                // Its runner is alive; look again after one ack wait.
                let _ = message.ack_with(AckKind::Nak(Some(self.ack_wait))).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, id = %item.id, "cannot claim a work item; it will be delivered again");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return;
            }
        };
        // While the event runs, tell JetStream and the claim; if the claim
        // is lost (another daemon took the event over, believing this one
        // dead), stop running it and leave the message to the new owner.
        let lost = Arc::new(tokio::sync::Notify::new());
        let _beat = AbortOnDrop(tokio::spawn({
            let queue = self.clone();
            let id = item.id.clone();
            let progress = message.clone();
            let lost = lost.clone();
            let ack_wait = queue.ack_wait;
            let every = (ack_wait / 3).max(Duration::from_millis(100));
            async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                let mut confirmed = tokio::time::Instant::now();
                loop {
                    tick.tick().await;
                    let _ = tokio::time::timeout(every, progress.ack_with(AckKind::Progress)).await;
                    match tokio::time::timeout(ack_wait, queue.heartbeat(&id, token)).await {
                        Ok(Ok(true)) => confirmed = tokio::time::Instant::now(),
                        // Another daemon holds the claim now.
                        Ok(Ok(false)) => {
                            lost.notify_one();
                            return;
                        }
                        // Unconfirmed for an ack wait: others may take the
                        // event over from now on, so this run must stop,
                        // as a lease holder that cannot renew does.
                        _ if confirmed.elapsed() > ack_wait => {
                            lost.notify_one();
                            return;
                        }
                        _ => {}
                    }
                }
            }
        }));
        let outcome = tokio::select! {
            outcome = handle(item.clone()) => outcome,
            () = lost.notified() => {
                tracing::warn!(id = %item.id, "a work item's claim was lost or could not be confirmed; this run stops and another daemon will run it");
                return;
            }
        };
        let outcome = if outcome.is_ok() { "ok" } else { "error" };
        // Done first, then acknowledged: a crash in between redelivers a
        // message whose claim says done, which is acknowledged unrun. The
        // heartbeat goes on until the result is recorded.
        let mut wait = Duration::from_millis(100);
        loop {
            match self.finish(&item.id, token, outcome).await {
                Ok(true) => break,
                Ok(false) => {
                    tracing::warn!(id = %item.id, "a work item was taken over before its result was recorded");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, id = %item.id, "cannot record a completed work item yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let Err(error) = message.double_ack().await {
            tracing::warn!(%error, id = %item.id, "cannot acknowledge a completed work item; its redelivery will be acknowledged unrun");
        }
    }

    /// Claims an event for this daemon: answers the claim's token, or
    /// whether it is done or running elsewhere. A running claim is taken
    /// over when its heartbeat is stale, or when this is a later delivery
    /// than the one it was claimed with (JetStream delivers again only
    /// when the runner stopped showing progress).
    async fn claim(&self, item: &WorkItem, delivery: i64) -> Result<Claim, QueueError> {
        let client = self.db.client().await?;
        let stale = self.ack_wait.as_secs_f64();
        let row = client
            .query_opt(
                "INSERT INTO work_items (id, agent, daemon, state, attempts, delivery) VALUES ($1, $2, $3, 'running', 1, $5) \
                 ON CONFLICT (id) DO UPDATE SET daemon = EXCLUDED.daemon, attempts = work_items.attempts + 1, \
                 delivery = EXCLUDED.delivery, heartbeat_at = now() \
                 WHERE work_items.state = 'running' \
                   AND (work_items.heartbeat_at < now() - make_interval(secs => $4) OR work_items.delivery < EXCLUDED.delivery) \
                 RETURNING attempts",
                &[&item.id, &item.agent, &&*self.daemon, &stale, &delivery],
            )
            .await
            .map_err(ClusterError::from)?;
        if let Some(row) = row {
            return Ok(Claim::Run(row.get(0)));
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

    /// Refreshes a claim's heartbeat; answers whether it is still this
    /// daemon's (same token).
    async fn heartbeat(&self, id: &str, token: i32) -> Result<bool, QueueError> {
        let client = self.db.client().await?;
        let changed = client
            .execute(
                "UPDATE work_items SET heartbeat_at = now() WHERE id = $1 AND daemon = $2 AND attempts = $3 AND state = 'running'",
                &[&id, &&*self.daemon, &token],
            )
            .await
            .map_err(ClusterError::from)?;
        Ok(changed == 1)
    }

    /// Records an event done; answers whether the claim was still this
    /// daemon's.
    async fn finish(&self, id: &str, token: i32, outcome: &str) -> Result<bool, QueueError> {
        let client = self.db.client().await?;
        let changed = client
            .execute(
                "UPDATE work_items SET state = 'done', outcome = $4, finished_at = now() \
                 WHERE id = $1 AND daemon = $2 AND attempts = $3 AND state = 'running'",
                &[&id, &&*self.daemon, &token, &outcome],
            )
            .await
            .map_err(ClusterError::from)?;
        Ok(changed == 1)
    }

    /// Deletes claims older than [`KEEP_DONE`]: completed ones, and
    /// abandoned ones whose heartbeat stopped that long ago.
    async fn prune(&self) -> Result<u64, QueueError> {
        let client = self.db.client().await?;
        let keep = KEEP_DONE.as_secs_f64();
        Ok(client
            .execute(
                "DELETE FROM work_items WHERE (state = 'done' AND finished_at < now() - make_interval(secs => $1)) \
                 OR (state = 'running' AND heartbeat_at < now() - make_interval(secs => $1))",
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
