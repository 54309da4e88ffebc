//! Redaction of host-held secrets from text bound for a guest.
//!
//! Provider and tool replies can carry a credential back: an echoing
//! server, an error message that quotes the `Authorization` header, a
//! model prompted to repeat it. Everything the host hands a guest (content,
//! stream deltas, error messages) passes through a [`Redactor`] built from
//! every secret the call could have exposed.
//!
//! What counts as a leak: the whole secret, or any run of at least
//! [`FRAGMENT_BYTES`] consecutive bytes of it. Every byte covered by such a
//! match is replaced, so overlapping fragments redact the whole run. For
//! streams, [`StreamRedactor`] keeps the raw tail of what it passed on as
//! context and holds back only a chunk's tail (of [`MIN_HOLDBACK_BYTES`] or
//! more) that could start a fragment, so a secret split across chunks is
//! still caught, at most three of its bytes pass before a chunk boundary,
//! and ordinary deltas pass through unchanged and unmerged.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::secret::Secret;

/// The shortest run of a secret's bytes that counts as a leak. Shorter runs
/// (the last four characters some providers show in errors, say) are not
/// enough to use a key; longer ones might be.
pub const FRAGMENT_BYTES: usize = 12;

/// The shortest chunk tail a stream holds back because it could begin a
/// secret. Shorter tails pass at once: holding every character that happens
/// to start some fragment would split nearly every delta, and two or three
/// bytes (typically a key's public prefix) reveal nothing.
pub const MIN_HOLDBACK_BYTES: usize = 4;

/// What replaces a redacted run.
pub const REDACTED: &str = "[redacted]";

/// Finds and replaces secrets in text.
pub struct Redactor {
    /// Every `FRAGMENT_BYTES` window of every secret, and secrets shorter
    /// than a window whole. `None` when there is nothing to look for.
    patterns: Option<AhoCorasick>,
    /// The longest pattern, in bytes.
    longest: usize,
    /// The pattern bytes, to decide what a stream must hold back.
    windows: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.windows.len())
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor for these secrets.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut windows: Vec<Vec<u8>> = Vec::new();
        for secret in secrets {
            let bytes = secret.expose();
            if bytes.is_empty() {
                continue;
            }
            if bytes.len() <= FRAGMENT_BYTES {
                windows.push(bytes.to_vec());
            } else {
                windows.extend(bytes.windows(FRAGMENT_BYTES).map(<[u8]>::to_vec));
            }
        }
        windows.sort();
        windows.dedup();
        let longest = windows.iter().map(Vec::len).max().unwrap_or(0);
        let patterns = if windows.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .build(&windows)
                    .expect("a few thousand short patterns always build"),
            )
        };
        Self {
            patterns,
            longest,
            windows,
        }
    }

    /// Replaces every leaked run in `text`.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let covered = self.covered(text);
        if covered.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in covered {
            out.push_str(&text[at..start]);
            out.push_str(REDACTED);
            at = end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// The byte ranges of `text` covered by any (overlapping) match, merged,
    /// sorted and widened to character boundaries.
    fn covered(&self, text: &str) -> Vec<(usize, usize)> {
        let Some(patterns) = &self.patterns else {
            return Vec::new();
        };
        let mut covered: Vec<(usize, usize)> = Vec::new();
        for found in patterns.find_overlapping_iter(text) {
            // A fragment may start or end inside a multi-byte character of
            // the surrounding text.
            let (start, end) = (
                floor_char_boundary(text, found.start()),
                ceil_char_boundary(text, found.end()),
            );
            match covered.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => covered.push((start, end)),
            }
        }
        covered
    }

    /// A redactor for one stream of chunks.
    pub fn stream(&self) -> StreamRedactor<'_> {
        StreamRedactor {
            redactor: self,
            context: String::new(),
            pending: String::new(),
            ended_redacted: false,
        }
    }

    /// How many bytes at the end of `text` could begin a pattern and must
    /// wait for the next chunk.
    fn holdback(&self, text: &str) -> usize {
        let bytes = text.as_bytes();
        let max = self.longest.saturating_sub(1).min(bytes.len());
        for len in (MIN_HOLDBACK_BYTES..=max).rev() {
            let tail = &bytes[bytes.len() - len..];
            if self.windows.iter().any(|w| w.starts_with(tail)) {
                return len;
            }
        }
        0
    }
}

/// Redacts a stream of text chunks, catching secrets split across chunks.
///
/// It keeps the raw tail of what it already passed on as context, so a
/// fragment that straddles a chunk boundary is still found, and it holds
/// back only a tail that could be the start of a fragment.
#[derive(Debug)]
pub struct StreamRedactor<'r> {
    redactor: &'r Redactor,
    /// Raw text already passed on (redacted), kept to match across chunks.
    context: String,
    /// Raw text not yet passed on.
    pending: String,
    /// Whether what was passed on so far ends with a redaction marker, so a
    /// leak that continues into the next chunk adds no second marker.
    ended_redacted: bool,
}

impl StreamRedactor<'_> {
    /// Takes the next chunk; returns the text that is safe to pass on now
    /// (possibly empty, when the chunk might be the start of a secret).
    pub fn push(&mut self, chunk: &str) -> String {
        self.pending.push_str(chunk);
        self.emit(false)
    }

    /// Ends the stream; returns whatever was held back, redacted.
    pub fn finish(mut self) -> String {
        self.emit(true)
    }

    fn emit(&mut self, last: bool) -> String {
        let buffer = format!("{}{}", self.context, self.pending);
        let offset = self.context.len();
        let covered = self.redactor.covered(&buffer);
        // Hold back an uncovered tail that could begin a fragment.
        let mut hold_at = buffer.len();
        if !last {
            let tail_covered = covered.last().is_some_and(|&(_, end)| end == buffer.len());
            if !tail_covered {
                // The tail that could begin a fragment may reach back into
                // the context; only its new part can still be held.
                let hold = self.redactor.holdback(&buffer);
                hold_at = floor_char_boundary(&buffer, (buffer.len() - hold).max(offset));
            }
        }
        let mut out = String::new();
        let mut at = offset;
        let mut ends_redacted = self.ended_redacted;
        for &(start, end) in &covered {
            if end <= offset || start >= hold_at {
                continue;
            }
            let start = start.max(offset);
            out.push_str(&buffer[at..start]);
            let continues_previous = start == offset && self.ended_redacted;
            if !continues_previous {
                out.push_str(REDACTED);
            }
            at = end.min(hold_at);
            ends_redacted = true;
        }
        if at < hold_at {
            out.push_str(&buffer[at..hold_at]);
            ends_redacted = false;
        }
        self.ended_redacted = ends_redacted;
        let keep_from = floor_char_boundary(
            &buffer,
            hold_at.saturating_sub(self.redactor.longest.saturating_sub(1)),
        );
        self.context = buffer[keep_from..hold_at].to_string();
        self.pending = buffer[hold_at..].to_string();
        out
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while index < text.len() && !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY: &str = "sk-ant-api03-Zx9QkT4mW2pL8vRb6NcY1aDf";

    fn redactor() -> Redactor {
        Redactor::new([
            &Secret::from(KEY.to_string()),
            &Secret::from("short".to_string()),
        ])
    }

    #[test]
    fn whole_secrets_and_fragments_are_redacted() {
        let r = redactor();
        assert_eq!(r.redact(&format!("key: {KEY}!")), "key: [redacted]!");
        assert_eq!(
            r.redact(&format!("tail {}", &KEY[10..30])),
            "tail [redacted]"
        );
        assert_eq!(r.redact("say short please"), "say [redacted] please");
        // Four characters are not a leak.
        assert_eq!(
            r.redact(&format!("...{}", &KEY[KEY.len() - 4..])),
            format!("...{}", &KEY[KEY.len() - 4..])
        );
        assert!(matches!(r.redact("nothing to see"), Cow::Borrowed(_)));
    }

    #[test]
    fn secrets_split_across_chunks_are_caught() {
        let r = redactor();
        let text = format!("Your header was Authorization: Bearer {KEY} (echoed)");
        for chunk_size in [1, 2, 3, 5, 7, 11, 13, 64] {
            let mut stream = r.stream();
            let mut out = String::new();
            let bytes = text.as_bytes();
            for chunk in bytes.chunks(chunk_size) {
                out.push_str(&stream.push(std::str::from_utf8(chunk).unwrap()));
            }
            out.push_str(&stream.finish());
            // Small chunks may let up to three bytes of the run (here the
            // key's public `sk-` prefix) through before it is recognised.
            let (head, rest) = out.split_once("[redacted]").expect("the key is redacted");
            let leaked = head
                .strip_prefix("Your header was Authorization: Bearer ")
                .expect("the text before is kept");
            assert!(
                leaked.len() < MIN_HOLDBACK_BYTES && KEY.starts_with(leaked),
                "chunks of {chunk_size}: {out}"
            );
            assert_eq!(rest, " (echoed)", "chunks of {chunk_size}");
        }
    }

    #[test]
    fn no_split_lets_a_fragment_through() {
        let r = redactor();
        let text = format!("a{KEY}b{}c", &KEY[5..25]);
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let mut stream = r.stream();
                let mut out = stream.push(&text[..i]);
                out.push_str(&stream.push(&text[i..j]));
                out.push_str(&stream.push(&text[j..]));
                out.push_str(&stream.finish());
                // At most three bytes of a run may pass before a chunk
                // boundary; everything else is redacted, and nothing else
                // is touched.
                assert!(
                    out.starts_with('a') && out.ends_with("[redacted]c"),
                    "split at {i} and {j}: {out}"
                );
                let leaked = out.replace("[redacted]", "").len() - "abc".len();
                assert!(
                    leaked <= 2 * (MIN_HOLDBACK_BYTES - 1),
                    "split at {i} and {j}: {out}"
                );
                for window in KEY.as_bytes().windows(MIN_HOLDBACK_BYTES) {
                    assert!(
                        !out.contains(std::str::from_utf8(window).unwrap()),
                        "split at {i} and {j}: {out}"
                    );
                }
            }
        }
    }

    #[test]
    fn ordinary_deltas_pass_through_unchanged() {
        let r = redactor();
        let mut stream = r.stream();
        for delta in ["Hello", ", world", ". How are", " you?"] {
            assert_eq!(stream.push(delta), delta);
        }
        assert_eq!(stream.finish(), "");
    }

    #[test]
    fn multibyte_text_around_a_leak_stays_valid() {
        let r = redactor();
        assert_eq!(r.redact(&format!("é{KEY}é")), "é[redacted]é");
    }
}
