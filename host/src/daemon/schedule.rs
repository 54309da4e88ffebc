//! Cron schedules: every second, each `schedule` trigger whose next time
//! (after the previous check) has come fires one event. Each firing has an
//! id made of the agent, the kind and the minute, recorded like a webhook
//! delivery, so a restart within the minute does not fire it twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Daemon;
use crate::Event;

pub use crate::manifest::parse_cron as parse;

/// Fires the events due between `after` (exclusive) and `now` (inclusive);
/// returns their invocation ids.
pub fn fire_due(daemon: &Arc<Daemon>, after: DateTime<Utc>, now: DateTime<Utc>) -> Vec<String> {
    let mut fired = Vec::new();
    for (agent, trigger) in daemon.subscribers("schedule") {
        let (Some(expression), Some(kind)) = (&trigger.cron, &trigger.kind) else {
            continue;
        };
        let Ok(cron) = parse(expression) else {
            continue;
        };
        let Ok(next) = cron.find_next_occurrence(&after, false) else {
            continue;
        };
        if next > now {
            continue;
        }
        let id = format!("schedule:{agent}:{kind}:{}", next.timestamp());
        if !daemon.first_delivery("schedule", &id) {
            continue;
        }
        let payload = trigger
            .payload
            .as_ref()
            .and_then(|p| serde_json::to_value(p).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        let event = Event {
            id: Some(id),
            source: "schedule".into(),
            kind: kind.clone(),
            payload,
        };
        match daemon.invoke_async(&agent, event, "schedule") {
            Ok(id) => fired.push(id),
            Err(e) => tracing::warn!(agent = %agent, error = %e, "scheduled event not started"),
        }
    }
    fired
}

/// Runs schedules until the daemon drains.
pub async fn run(daemon: Arc<Daemon>) {
    let mut last = Utc::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !daemon.is_shutting_down() {
        tick.tick().await;
        let now = Utc::now();
        fire_due(&daemon, last, now);
        last = now;
    }
}
