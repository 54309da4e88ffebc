//! An incremental parser for server-sent events (the `text/event-stream`
//! format both Anthropic and OpenAI stream in).
//!
//! Bytes arrive in arbitrary chunks; events are separated by a blank line.
//! Each event has an optional `event:` name and one or more `data:` lines
//! (joined with newlines). Comments (`:` lines) and unknown fields are
//! ignored, and `\r\n`, `\r` and `\n` all end a line.

/// Largest event the parser buffers; a server that sends more without a
/// blank line is broken or hostile.
pub(crate) const MAX_EVENT_BYTES: usize = 4 << 20;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, empty when absent.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Parses a byte stream into events.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    /// A new parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A lone `\r` at the end may be the first half of `\r\n`.
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                break;
            }
            let skip = if self.buffer[end] == b'\r' && self.buffer.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
            let line =
                String::from_utf8(line).map_err(|_| "the event stream is not UTF-8".to_string())?;
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    events.push(SseEvent {
                        event: std::mem::take(&mut self.event),
                        data: self.data.join("\n"),
                    });
                    self.data.clear();
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.event = value.to_string(),
                "data" => self.data.push(value.to_string()),
                _ => {}
            }
        }
        let pending = self.buffer.len() + self.data.iter().map(String::len).sum::<usize>();
        if pending > MAX_EVENT_BYTES {
            return Err(format!(
                "an event in the stream is larger than {MAX_EVENT_BYTES} bytes"
            ));
        }
        Ok(events)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let stream = b"event: message_start\ndata: {\"a\":1}\n\n: ping comment\r\nevent: delta\r\ndata: one\r\ndata: two\r\n\r\ndata: [DONE]\n\n";
        let expected = vec![
            SseEvent {
                event: "message_start".into(),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: "delta".into(),
                data: "one\ntwo".into(),
            },
            SseEvent {
                event: String::new(),
                data: "[DONE]".into(),
            },
        ];
        for size in 1..stream.len() {
            let mut parser = SseParser::new();
            let mut events = Vec::new();
            for chunk in stream.chunks(size) {
                events.extend(parser.push(chunk).unwrap());
            }
            assert_eq!(events, expected, "chunks of {size}");
        }
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut parser = SseParser::new();
        let err = parser.push(&vec![b'x'; MAX_EVENT_BYTES + 1]).unwrap_err();
        assert!(err.contains("larger than"));
    }
}
