//! The smallest useful agent: no capabilities, a greeting back.

use clawcage_sdk::{Event, handler, info};

#[derive(serde::Deserialize)]
struct Greeting {
    name: Option<String>,
}

#[handler]
fn handle(event: Event) -> clawcage_sdk::Result<String> {
    let name = event
        .payload::<Greeting>()?
        .name
        .unwrap_or_else(|| "world".into());
    info!(
        "greeting {name} for a {} event from {}",
        event.kind, event.source
    );
    Ok(format!("Hello, {name}!"))
}
