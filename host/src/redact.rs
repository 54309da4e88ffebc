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
//! match is replaced, so overlapping fragments redact the whole run.
//!
//! Why so long a run: a guest can make a model echo text of its choosing,
//! so whether a reply comes back redacted is an oracle. With short runs, a
//! guest that knows a key's public prefix could guess the next character and
//! watch for `[redacted]`. A run of 32 bytes always holds at least 19 secret
//! characters of any provider key (the longest public prefix is 13), far
//! beyond guessing. For the same reason a stream never holds text back on a
//! suspicion (the hold itself would answer the guess): [`StreamRedactor`]
//! keeps the raw tail of what it passed on as context, so a run that
//! straddles chunks is caught and everything after its first 31 bytes is
//! redacted, and ordinary deltas pass through unchanged and unmerged.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::secret::Secret;

/// The shortest run of a secret's bytes that counts as a leak (see the
/// module docs for why it is this long).
pub const FRAGMENT_BYTES: usize = 32;

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
            ended_redacted: false,
        }
    }

    /// Whether `secret` would be redacted whole by this redactor.
    pub fn covers(&self, secret: &Secret) -> bool {
        secret
            .expose_str()
            .is_some_and(|text| self.redact(text) == REDACTED)
    }
}

/// Redacts a stream of text chunks, catching secrets split across chunks.
///
/// It keeps the raw tail of what it passed on as context, so a run that
/// straddles a chunk boundary is still found once it is long enough; it
/// never holds text back (see the module docs).
#[derive(Debug)]
pub struct StreamRedactor<'r> {
    redactor: &'r Redactor,
    /// Raw text already passed on (redacted), kept to match across chunks.
    context: String,
    /// Whether what was passed on so far ends with a redaction marker, so a
    /// leak that continues into the next chunk adds no second marker.
    ended_redacted: bool,
}

impl StreamRedactor<'_> {
    /// Takes the next chunk; returns it, redacted.
    pub fn push(&mut self, chunk: &str) -> String {
        let buffer = format!("{}{chunk}", self.context);
        let offset = self.context.len();
        let mut out = String::with_capacity(chunk.len());
        let mut at = offset;
        let mut ends_redacted = self.ended_redacted;
        for (start, end) in self.redactor.covered(&buffer) {
            if end <= offset {
                continue;
            }
            let start = start.max(offset);
            out.push_str(&buffer[at..start]);
            if !(start == offset && self.ended_redacted) {
                out.push_str(REDACTED);
            }
            at = end;
            ends_redacted = true;
        }
        if at < buffer.len() {
            out.push_str(&buffer[at..]);
            ends_redacted = false;
        }
        self.ended_redacted = ends_redacted;
        let keep = self.redactor.longest.saturating_sub(1);
        let keep_from = floor_char_boundary(&buffer, buffer.len().saturating_sub(keep));
        self.context = buffer[keep_from..].to_string();
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

    const KEY: &str = "sk-ant-api03-Zx9QkT4mW2pL8vRb6NcY1aDfGh7JkLmN0pQrStUvWx";

    fn redactor() -> Redactor {
        Redactor::new([
            &Secret::from(KEY.to_string()),
            &Secret::from("short-secret-0123".to_string()),
        ])
    }

    #[test]
    fn whole_secrets_and_long_runs_are_redacted() {
        let r = redactor();
        assert_eq!(r.redact(&format!("key: {KEY}!")), "key: [redacted]!");
        assert_eq!(
            r.redact(&format!("tail {}", &KEY[10..45])),
            "tail [redacted]"
        );
        assert_eq!(
            r.redact("say short-secret-0123 please"),
            "say [redacted] please"
        );
        assert!(r.covers(&Secret::from(KEY.to_string())));
        assert!(matches!(r.redact("nothing to see"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_known_prefix_plus_a_guess_is_no_oracle() {
        // Runs shorter than FRAGMENT_BYTES pass unchanged, so echoing the
        // public prefix and one guessed character reveals nothing.
        let r = redactor();
        let guess = &KEY[..14];
        assert_eq!(r.redact(guess), guess);
        let long_guess = &KEY[..FRAGMENT_BYTES - 1];
        assert_eq!(r.redact(long_guess), long_guess);
    }

    #[test]
    fn secrets_split_across_chunks_are_caught_after_at_most_31_bytes() {
        let r = redactor();
        let text = format!("Your header was Authorization: Bearer {KEY} (echoed)");
        for chunk_size in [1, 2, 3, 5, 7, 11, 13, 31, 64, 200] {
            let mut stream = r.stream();
            let mut out = String::new();
            for chunk in text.as_bytes().chunks(chunk_size) {
                out.push_str(&stream.push(std::str::from_utf8(chunk).unwrap()));
            }
            let (head, rest) = out.split_once(REDACTED).expect("the key is redacted");
            let passed = head
                .strip_prefix("Your header was Authorization: Bearer ")
                .expect("the text before is kept");
            assert!(
                passed.len() < FRAGMENT_BYTES && KEY.starts_with(passed),
                "chunks of {chunk_size}: {out}"
            );
            assert_eq!(rest, " (echoed)", "chunks of {chunk_size}: {out}");
        }
    }

    #[test]
    fn every_two_way_split_keeps_text_and_order() {
        let r = redactor();
        let text = format!("a{KEY}b");
        for i in 0..=text.len() {
            let mut stream = r.stream();
            let out = stream.push(&text[..i]) + &stream.push(&text[i..]);
            assert!(
                out.starts_with('a') && out.ends_with("[redacted]b"),
                "split at {i}: {out}"
            );
            assert_eq!(out.matches(REDACTED).count(), 1, "split at {i}: {out}");
        }
    }

    #[test]
    fn ordinary_deltas_pass_through_unchanged() {
        let r = redactor();
        let mut stream = r.stream();
        for delta in ["Hello", ", world", ". How are", " you?", "sk-ant-api03-"] {
            assert_eq!(stream.push(delta), delta);
        }
    }

    #[test]
    fn overlapping_matches_of_different_lengths_merge_fully() {
        let r = Redactor::new([
            &Secret::from("0123456789abcdefghijklmnopqrstuvwxyz".to_string()),
            &Secret::from("zz-9876".to_string()),
        ]);
        assert_eq!(
            r.redact("x 0123456789abcdefghijklmnopqrstuvwxyz y zz-9876 z"),
            "x [redacted] y [redacted] z"
        );
    }

    #[test]
    fn multibyte_text_around_a_leak_stays_valid() {
        let r = redactor();
        assert_eq!(r.redact(&format!("é{KEY}é")), "é[redacted]é");
    }
}
