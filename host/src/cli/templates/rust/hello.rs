//! A new ClawCage agent: asks its model once and answers with the text.

use clawcage_sdk::{CompletionRequest, Event, Model, handler, info};
use serde::Deserialize;

/// The event's payload: `{"prompt": "..."}`.
#[derive(Debug, Deserialize)]
pub struct Ask {
    /// What to ask the model.
    pub prompt: String,
}

/// The request the agent sends: its prompt, capped in length.
pub fn request_for(ask: &Ask) -> CompletionRequest {
    let prompt: String = ask.prompt.chars().take(4_000).collect();
    CompletionRequest::new()
        .system("You are a concise assistant.")
        .user(prompt)
        .max_tokens(256)
}

#[handler]
fn handle(event: Event) -> clawcage_sdk::Result<String> {
    let ask: Ask = event.payload()?;
    info!("asking the model for a {} event", event.kind);
    let model = Model::open("default")?;
    let answer = model.complete(&request_for(&ask))?;
    Ok(answer.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_capped() {
        let ask = Ask { prompt: "x".repeat(10_000) };
        let request = request_for(&ask);
        let sent: usize = request
            .messages
            .iter()
            .flat_map(|m| &m.content)
            .map(|part| match part {
                clawcage_sdk::ContentPart::Text(text) => text.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(sent, 4_000);
    }
}
