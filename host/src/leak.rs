//! Key containment: detecting a carried secret in anything bound for a guest.
//!
//! A provider or tool can send a credential back: an echoing server, an
//! error that quotes the `Authorization` header, a model told to repeat it.
//! Everything the host hands a guest from one call (content, stream deltas,
//! tool-use ids and names, error messages, tool results) passes a
//! [`LeakGuard`] built from the secrets *that call carried*: the binding's
//! key or the grant's credential, and its previous value during a rotation.
//! Never the rest of the vault: a guard that knew every secret would answer
//! a guest's guesses about other agents' secrets.
//!
//! What counts as a leak: any run of [`WINDOW`] consecutive bytes of a
//! secret's private part (its [`private_segments`]: the whole secret less
//! the parts a guest could know, such as `sk-ant-api03-` or a Slack token's
//! team and bot ids), found in any of these views of the text:
//! - the raw bytes;
//! - the text with JSON backslash escapes (`\/`, `\u0041`) and
//!   percent-escapes (`%41`) decoded;
//! - that decoded text less every byte that is not in the secret's alphabet
//!   (a key broken up by spaces, quotes or commas);
//! - that decoded text in ASCII lower case (a key an upstream upper-cased);
//! - base64 (standard and URL-safe, at every alignment, line breaks
//!   skipped) and hex runs of the decoded text, decoded;
//! - for JSON documents, also every string value concatenated (a key split
//!   across fields).
//!
//! A detected leak is never redacted: redaction that changes the output
//! when the guest's text matches a secret is an oracle. The call fails as a
//! whole with `leak-blocked`, and the caller suspends the binding or grant
//! for that agent (see [`crate::suspend`]), so a guest that guesses gets one
//! answer per operator action. A guess must cover [`WINDOW`] private bytes at
//! once, about 47 bits for a base62 key, so even a call with a million
//! guesses in it confirms nothing in practice.
//!
//! Streams are scanned as they go, and the last [`STREAM_HOLD_BYTES`] of
//! text are always held back until the next delta or the end of the part,
//! whatever the text says. A run is detected the moment its last byte
//! arrives, and by then none of its bytes has been passed on.

use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;

use crate::secret::Secret;

/// The shortest run of a secret's private bytes that counts as a leak.
pub const WINDOW: usize = 8;

/// How many bytes of streamed text are always held back: one less than a
/// window, so no byte of a detected run has been passed on.
pub const STREAM_HOLD_BYTES: usize = WINDOW - 1;

/// The fewest private bytes a secret must have, so that a window cannot be
/// guessed and ordinary text does not match it by chance.
pub const MIN_PRIVATE_BYTES: usize = 16;

/// What a secret is for: this decides which of its parts are public and how
/// long it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// An Anthropic API key (`sk-ant-api03-…`, 108 bytes).
    Anthropic,
    /// An OpenAI API key (`sk-…`, `sk-proj-…`, `sk-svcacct-…`).
    OpenAi,
    /// A key for an OpenAI-compatible server: any format.
    OpenAiCompatible,
    /// A GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GitHub,
    /// A Slack token (`xoxb-<team>-<bot>-<secret>`, `xoxp-…`, `xapp-…`).
    Slack,
    /// A Notion integration token (`secret_…`, `ntn_…`).
    Notion,
    /// A credential for an allow-listed HTTP API: any format.
    Http,
    /// A webhook signing secret.
    Webhook,
}

impl SecretKind {
    /// The kind of a vault provider name; unknown names are treated like
    /// an HTTP credential.
    pub fn of_provider(provider: &str) -> Self {
        match provider {
            "anthropic" => Self::Anthropic,
            "openai" => Self::OpenAi,
            "openai-compatible" => Self::OpenAiCompatible,
            "github" => Self::GitHub,
            "slack" => Self::Slack,
            "notion" => Self::Notion,
            "webhook" => Self::Webhook,
            _ => Self::Http,
        }
    }

    /// The shortest secret of this kind that the vault accepts: what the
    /// service issues, so a truncated paste is caught at once.
    pub fn min_bytes(self) -> usize {
        match self {
            // `sk-ant-api03-` and 95 characters.
            Self::Anthropic => 100,
            // Legacy `sk-` keys are 51 bytes; project keys are longer.
            Self::OpenAi => 40,
            // Classic tokens are 40 bytes; fine-grained ones 93.
            Self::GitHub => 40,
            // `xoxb-` with team and bot ids and 24 random characters.
            Self::Slack => 40,
            // `secret_` or `ntn_` and 43 or more characters.
            Self::Notion => 46,
            Self::Webhook => 32,
            Self::OpenAiCompatible | Self::Http => MIN_PRIVATE_BYTES,
        }
    }
}

/// Known public prefixes, longest first within a family.
const PUBLIC_PREFIXES: &[(SecretKind, &str)] = &[
    (SecretKind::Anthropic, "sk-ant-api03-"),
    (SecretKind::Anthropic, "sk-ant-admin01-"),
    (SecretKind::Anthropic, "sk-ant-"),
    (SecretKind::OpenAi, "sk-proj-"),
    (SecretKind::OpenAi, "sk-svcacct-"),
    (SecretKind::OpenAi, "sk-admin-"),
    (SecretKind::OpenAi, "sk-None-"),
    (SecretKind::OpenAi, "sk-"),
    (SecretKind::GitHub, "github_pat_"),
    (SecretKind::GitHub, "ghp_"),
    (SecretKind::GitHub, "gho_"),
    (SecretKind::GitHub, "ghu_"),
    (SecretKind::GitHub, "ghs_"),
    (SecretKind::GitHub, "ghr_"),
    (SecretKind::Notion, "secret_"),
    (SecretKind::Notion, "ntn_"),
];

/// A marker OpenAI puts in the middle of its keys (`OpenAI`, base64).
const OPENAI_MARKER: &[u8] = b"T3BlbkFJ";

/// The parts of `secret` a guest could not know: the whole secret less its
/// public prefix and any constant marker inside it. A Slack token's team
/// and bot ids are public (events carry them), so only its last segment is
/// private.
pub fn private_segments(kind: SecretKind, secret: &[u8]) -> Vec<Range<usize>> {
    let mut start = 0;
    for (family, prefix) in PUBLIC_PREFIXES {
        let same_family = *family == kind
            || matches!(
                (kind, family),
                (
                    SecretKind::OpenAiCompatible | SecretKind::Http,
                    SecretKind::OpenAi | SecretKind::Anthropic
                )
            );
        if same_family && secret.starts_with(prefix.as_bytes()) {
            start = prefix.len();
            break;
        }
    }
    if kind == SecretKind::Slack
        && secret.len() > 5
        && secret[..5]
            .iter()
            .all(|b| b.is_ascii_alphabetic() || *b == b'-')
        && let Some(last_dash) = secret.iter().rposition(|&b| b == b'-')
    {
        start = start.max(last_dash + 1);
    }
    let mut end = secret.len();
    // Anthropic keys end in a constant `AA`.
    if kind == SecretKind::Anthropic && secret.ends_with(b"AA") && end >= start + 2 {
        end -= 2;
    }
    let marker = matches!(kind, SecretKind::OpenAi | SecretKind::OpenAiCompatible)
        .then(|| {
            secret[start..end]
                .windows(OPENAI_MARKER.len())
                .position(|w| w == OPENAI_MARKER)
        })
        .flatten();
    let segments = match marker {
        Some(at) => [start..start + at, start + at + OPENAI_MARKER.len()..end],
        None => [start..end, end..end],
    };
    segments.into_iter().filter(|r| !r.is_empty()).collect()
}

/// Checks that a secret is fit to hold: long enough for its kind, with
/// enough private bytes, and not a run of a few repeated characters.
pub fn check_quality(kind: SecretKind, secret: &Secret) -> Result<(), String> {
    let bytes = secret.expose();
    if bytes.len() < kind.min_bytes() {
        return Err(format!(
            "this {} is {} bytes; real ones are at least {} (was it cut short when pasted?)",
            kind_label(kind),
            bytes.len(),
            kind.min_bytes()
        ));
    }
    if bytes
        .iter()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "this {} contains white space or control characters",
            kind_label(kind)
        ));
    }
    let segments = private_segments(kind, bytes);
    let private: usize = segments.iter().map(ExactSizeIterator::len).sum();
    let longest = segments
        .iter()
        .map(ExactSizeIterator::len)
        .max()
        .unwrap_or(0);
    if private < MIN_PRIVATE_BYTES || longest < WINDOW {
        return Err(format!(
            "this {} has only {private} bytes beyond its public prefix; at least {MIN_PRIVATE_BYTES} are needed",
            kind_label(kind)
        ));
    }
    let mut distinct = [false; 256];
    for range in &segments {
        for &b in &bytes[range.clone()] {
            distinct[usize::from(b)] = true;
        }
    }
    if distinct.iter().filter(|d| **d).count() < 8 {
        return Err(format!(
            "this {} uses fewer than 8 distinct characters; it is not a random key",
            kind_label(kind)
        ));
    }
    Ok(())
}

fn kind_label(kind: SecretKind) -> &'static str {
    match kind {
        SecretKind::Anthropic => "Anthropic key",
        SecretKind::OpenAi => "OpenAI key",
        SecretKind::OpenAiCompatible => "key",
        SecretKind::GitHub => "GitHub token",
        SecretKind::Slack => "Slack token",
        SecretKind::Notion => "Notion token",
        SecretKind::Http => "credential",
        SecretKind::Webhook => "webhook secret",
    }
}

/// A detected leak: which view of the text held it. Metadata only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakDetected {
    /// `raw`, `unescaped`, `folded`, `skeleton`, `base64`, `hex` or
    /// `json-joined`.
    pub view: &'static str,
}

impl std::fmt::Display for LeakDetected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the answer carried this call's credential ({} text) and was withheld",
            self.view
        )
    }
}

/// The windows of the carried secrets, and a quick filter in front of them.
struct Matcher {
    /// Every private window as a little-endian `u64`, sorted.
    windows: Vec<u64>,
    /// One bit per possible first two bytes of a window.
    first_two: Box<[u64; 1024]>,
    /// The windows in ASCII lower case, and their filter.
    folded: Vec<u64>,
    folded_first_two: Box<[u64; 1024]>,
    /// Bytes that occur in some private segment, in lower case, for the
    /// skeleton view.
    folded_alphabet: [bool; 256],
}

impl Matcher {
    fn new(secrets: &[(SecretKind, &Secret)]) -> Option<Self> {
        let mut windows = Vec::new();
        let mut folded_alphabet = [false; 256];
        for (kind, secret) in secrets {
            let bytes = secret.expose();
            for range in private_segments(*kind, bytes) {
                let segment = &bytes[range];
                for &b in segment {
                    folded_alphabet[usize::from(b.to_ascii_lowercase())] = true;
                }
                windows.extend(segment.windows(WINDOW).map(window_value));
            }
        }
        if windows.is_empty() {
            return None;
        }
        windows.sort_unstable();
        windows.dedup();
        let mut folded: Vec<u64> = windows.iter().map(|w| fold_window(*w)).collect();
        folded.sort_unstable();
        folded.dedup();
        Some(Self {
            first_two: filter(&windows),
            folded_first_two: filter(&folded),
            windows,
            folded,
            folded_alphabet,
        })
    }

    /// Whether a window of lower-cased text is a secret's, lower-cased.
    #[inline]
    fn hit_folded(&self, window: u64) -> bool {
        let index = (window & 0xffff) as usize;
        self.folded_first_two[index / 64] & (1 << (index % 64)) != 0
            && self.folded.binary_search(&window).is_ok()
    }

    /// Whether a window (as a little-endian `u64`) is a secret's.
    #[inline]
    fn hit(&self, window: u64) -> bool {
        let index = (window & 0xffff) as usize;
        self.first_two[index / 64] & (1 << (index % 64)) != 0
            && self.windows.binary_search(&window).is_ok()
    }
}

/// The filter of a window set: one bit per first two bytes.
fn filter(windows: &[u64]) -> Box<[u64; 1024]> {
    let mut bits = Box::new([0u64; 1024]);
    for w in windows {
        let index = (*w & 0xffff) as usize;
        bits[index / 64] |= 1 << (index % 64);
    }
    bits
}

/// A window with its ASCII letters in lower case.
fn fold_window(window: u64) -> u64 {
    u64::from_le_bytes(window.to_le_bytes().map(|b| b.to_ascii_lowercase()))
}

fn window_value(window: &[u8]) -> u64 {
    let mut value = [0u8; WINDOW];
    value.copy_from_slice(window);
    u64::from_le_bytes(value)
}

/// The secrets one call carried, ready to look for.
#[derive(Clone, Default)]
pub struct LeakGuard {
    matcher: Option<Arc<Matcher>>,
}

impl std::fmt::Debug for LeakGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakGuard")
            .field(
                "windows",
                &self.matcher.as_ref().map_or(0, |m| m.windows.len()),
            )
            .finish()
    }
}

impl LeakGuard {
    /// A guard for the secrets a call carried (the key or credential it
    /// sent, and its previous value during a rotation).
    pub fn new(secrets: &[(SecretKind, &Secret)]) -> Self {
        Self {
            matcher: Matcher::new(secrets).map(Arc::new),
        }
    }

    /// Whether the call carried any secret at all.
    pub fn is_armed(&self) -> bool {
        self.matcher.is_some()
    }

    /// A scanner for text that reaches the guest in pieces, in order.
    pub fn scanner(&self) -> Scanner {
        Scanner::new(self.matcher.clone())
    }

    /// Checks one text.
    pub fn check(&self, text: &str) -> Result<(), LeakDetected> {
        if self.matcher.is_none() {
            return Ok(());
        }
        let mut scanner = self.scanner();
        scanner.feed(text.as_bytes())
    }

    /// Checks a JSON document: as text, and with its strings joined.
    pub fn check_json(&self, json: &str) -> Result<(), LeakDetected> {
        if self.matcher.is_none() {
            return Ok(());
        }
        self.check(json)?;
        if let Ok(value) = serde_json::from_str::<Value>(json) {
            self.check_value_strings(&value)?;
        }
        Ok(())
    }

    /// Checks the strings of a JSON value, joined in order (object keys,
    /// then values). The text of the document itself is the caller's to
    /// check.
    pub fn check_value_strings(&self, value: &Value) -> Result<(), LeakDetected> {
        let Some(matcher) = &self.matcher else {
            return Ok(());
        };
        let mut values = Scanner::new(Some(matcher.clone()));
        let mut keys = Scanner::new(Some(matcher.clone()));
        walk_strings(value, &mut |text, is_key| {
            let scanner = if is_key { &mut keys } else { &mut values };
            scanner.feed(text.as_bytes())
        })
        .map_err(|leak| LeakDetected {
            view: if leak.view == "raw" {
                "json-joined"
            } else {
                leak.view
            },
        })
    }
}

fn walk_strings(
    value: &Value,
    visit: &mut dyn FnMut(&str, bool) -> Result<(), LeakDetected>,
) -> Result<(), LeakDetected> {
    match value {
        Value::String(s) => visit(s, false),
        Value::Array(items) => items.iter().try_for_each(|v| walk_strings(v, visit)),
        Value::Object(map) => map.iter().try_for_each(|(key, v)| {
            visit(key, true)?;
            walk_strings(v, visit)
        }),
        _ => Ok(()),
    }
}

/// The last [`WINDOW`] bytes of one view as a rolling little-endian `u64`,
/// so a run that straddles two pieces is found, at a shift and a bit test
/// per byte.
#[derive(Default, Clone, Copy)]
struct ViewTail {
    value: u64,
    len: u8,
}

impl ViewTail {
    /// Adds one byte; returns whether the last [`WINDOW`] bytes are a
    /// secret's window.
    #[inline]
    fn push(&mut self, matcher: &Matcher, byte: u8) -> bool {
        self.push_quiet(byte);
        self.len as usize == WINDOW && matcher.hit(self.value)
    }

    /// Adds one byte without looking.
    #[inline]
    fn push_quiet(&mut self, byte: u8) {
        self.value = (self.value >> 8) | (u64::from(byte) << 56);
        if (self.len as usize) < WINDOW {
            self.len += 1;
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The decoder of JSON and percent escapes: its pending escape.
#[derive(Default, Clone)]
enum Unescape {
    #[default]
    Plain,
    Backslash,
    Unicode {
        digits: u8,
        value: u32,
    },
    Percent {
        digits: u8,
        value: u8,
    },
}

/// A bit-stream decoder of one alignment of a base64 or hex run.
#[derive(Default, Clone)]
struct RunDecoder {
    skip: u8,
    bits: u32,
    count: u32,
    tail: ViewTail,
}

impl RunDecoder {
    fn reset(&mut self, skip: u8) {
        self.skip = skip;
        self.bits = 0;
        self.count = 0;
        self.tail.clear();
    }

    /// Takes one symbol of `width` bits; returns whether a window matched.
    #[inline]
    fn push(&mut self, matcher: &Matcher, symbol: u8, width: u32) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        self.bits = (self.bits << width) | u32::from(symbol);
        self.count += width;
        if self.count >= 8 {
            self.count -= 8;
            let byte = (self.bits >> self.count) as u8;
            self.bits &= (1 << self.count) - 1;
            return self.tail.push(matcher, byte);
        }
        false
    }
}

/// The decoders of every alignment of one kind of run (base64: 4 of 6-bit
/// symbols; hex: 2 of 4-bit symbols). A run too short to hold a window is
/// only buffered, so ordinary words cost a store, not a decode.
#[derive(Clone)]
struct Runs<const ALIGNMENTS: usize> {
    width: u32,
    /// Symbols needed before a window can be decoded.
    shortest: usize,
    pending: [u8; 16],
    len: usize,
    decoders: [RunDecoder; ALIGNMENTS],
}

impl<const ALIGNMENTS: usize> Runs<ALIGNMENTS> {
    fn new(width: u32) -> Self {
        let mut runs = Self {
            width,
            shortest: (WINDOW * 8).div_ceil(width as usize),
            pending: [0; 16],
            len: 0,
            decoders: std::array::from_fn(|_| RunDecoder::default()),
        };
        runs.reset_decoders();
        runs
    }

    fn reset_decoders(&mut self) {
        for (skip, decoder) in self.decoders.iter_mut().enumerate() {
            decoder.reset(skip as u8);
        }
    }

    /// One more symbol of the current run.
    #[inline]
    fn push(&mut self, matcher: &Matcher, symbol: u8) -> bool {
        self.len += 1;
        if self.len < self.shortest {
            self.pending[self.len - 1] = symbol;
            return false;
        }
        if self.len == self.shortest {
            self.pending[self.len - 1] = symbol;
            let pending = self.pending;
            return pending[..self.len].iter().any(|&s| self.decode(matcher, s));
        }
        self.decode(matcher, symbol)
    }

    fn decode(&mut self, matcher: &Matcher, symbol: u8) -> bool {
        let width = self.width;
        let mut found = false;
        for decoder in &mut self.decoders {
            found |= decoder.push(matcher, symbol, width);
        }
        found
    }

    /// The run ended. Decoders are reset only if the run reached them.
    #[inline]
    fn end(&mut self) {
        if self.len >= self.shortest {
            self.reset_decoders();
        }
        self.len = 0;
    }
}

/// Scans text that reaches the guest in pieces, in every view at once.
///
/// One view is searched per byte: the decoded text, lower-cased, less every
/// byte outside the secret's (lower-cased) alphabet. A secret's window is
/// made of alphabet bytes only, so any window found raw, decoded or
/// lower-cased is found there too; the other views' tails are only kept,
/// to name the view when something is found. The raw text is searched on
/// its own only once an escape made the decoded text differ (a secret
/// that itself holds `%41` or `\u` sequences), and base64 and hex runs are
/// decoded separately.
#[derive(Clone)]
pub struct Scanner {
    matcher: Option<Arc<Matcher>>,
    raw: ViewTail,
    unescape: Unescape,
    /// Whether any escape was decoded yet.
    decoded_differs: bool,
    decoded: ViewTail,
    skeleton: ViewTail,
    base64: Runs<4>,
    hex: Runs<2>,
}

impl Scanner {
    fn new(matcher: Option<Arc<Matcher>>) -> Self {
        Self {
            matcher,
            raw: ViewTail::default(),
            unescape: Unescape::Plain,
            decoded_differs: false,
            decoded: ViewTail::default(),
            skeleton: ViewTail::default(),
            base64: Runs::new(6),
            hex: Runs::new(4),
        }
    }

    /// Scans the next piece of text.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), LeakDetected> {
        let Some(matcher) = self.matcher.clone() else {
            return Ok(());
        };
        for &byte in data {
            if self.decoded_differs {
                if self.raw.push(&matcher, byte) {
                    return Err(LeakDetected { view: "raw" });
                }
            } else {
                self.raw.push_quiet(byte);
            }
            if matches!(self.unescape, Unescape::Plain) && byte != b'\\' && byte != b'%' {
                self.decoded_byte(&matcher, byte, false)?;
            } else {
                self.decode(&matcher, byte)?;
            }
        }
        Ok(())
    }

    /// One raw byte through the escape decoder.
    fn decode(&mut self, matcher: &Matcher, byte: u8) -> Result<(), LeakDetected> {
        match std::mem::take(&mut self.unescape) {
            Unescape::Plain => match byte {
                b'\\' => self.unescape = Unescape::Backslash,
                b'%' => {
                    self.unescape = Unescape::Percent {
                        digits: 0,
                        value: 0,
                    }
                }
                _ => self.decoded_byte(matcher, byte, false)?,
            },
            Unescape::Backslash => {
                let decoded = match byte {
                    b'u' => {
                        self.unescape = Unescape::Unicode {
                            digits: 0,
                            value: 0,
                        };
                        return Ok(());
                    }
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'b' => 8,
                    b'f' => 12,
                    other => other,
                };
                self.decoded_byte(matcher, decoded, true)?;
            }
            Unescape::Unicode { digits, value } => match hex_value(byte) {
                Some(nibble) => {
                    let value = (value << 4) | u32::from(nibble);
                    if digits == 3 {
                        let c = char::from_u32(value).unwrap_or('\u{fffd}');
                        let mut buffer = [0u8; 4];
                        for &b in c.encode_utf8(&mut buffer).as_bytes() {
                            self.decoded_byte(matcher, b, true)?;
                        }
                    } else {
                        self.unescape = Unescape::Unicode {
                            digits: digits + 1,
                            value,
                        };
                    }
                }
                None => {
                    // Not an escape after all: the text goes on as it was.
                    self.decoded_byte(matcher, byte, false)?;
                }
            },
            Unescape::Percent { digits, value } => match hex_value(byte) {
                Some(nibble) => {
                    let value = (value << 4) | nibble;
                    if digits == 1 {
                        self.decoded_byte(matcher, value, true)?;
                    } else {
                        self.unescape = Unescape::Percent {
                            digits: digits + 1,
                            value,
                        };
                    }
                }
                None => {
                    self.decoded_byte(matcher, b'%', false)?;
                    self.decode(matcher, byte)?;
                }
            },
        }
        Ok(())
    }

    /// One byte of the decoded text, into the decoded, folded, skeleton,
    /// base64 and hex views.
    #[inline(always)]
    fn decoded_byte(
        &mut self,
        matcher: &Matcher,
        byte: u8,
        from_escape: bool,
    ) -> Result<(), LeakDetected> {
        if from_escape {
            self.decoded_differs = true;
        }
        self.decoded.push_quiet(byte);
        let folded = byte.to_ascii_lowercase();
        // Without a branch on the byte (prose alternates letters and
        // spaces, which a branch would mispredict): a byte outside the
        // alphabet leaves the skeleton as it was, and looking again at an
        // unchanged window finds nothing new.
        let keep = u64::from(matcher.folded_alphabet[usize::from(folded)]);
        let mask = keep.wrapping_neg();
        let shifted = (self.skeleton.value >> 8) | (u64::from(folded) << 56);
        self.skeleton.value = (shifted & mask) | (self.skeleton.value & !mask);
        self.skeleton.len = (self.skeleton.len + keep as u8).min(WINDOW as u8);
        if self.skeleton.len as usize == WINDOW && matcher.hit_folded(self.skeleton.value) {
            return Err(LeakDetected {
                view: self.view_found(matcher),
            });
        }
        match base64_value(byte) {
            Some(value) => {
                if self.base64.push(matcher, value) {
                    return Err(LeakDetected { view: "base64" });
                }
            }
            // Line breaks inside base64 (MIME, PEM) do not end the run.
            None if matches!(byte, b'\n' | b'\r') => {}
            None => self.base64.end(),
        }
        match hex_value(byte) {
            Some(value) => {
                if self.hex.push(matcher, value) {
                    return Err(LeakDetected { view: "hex" });
                }
            }
            None => self.hex.end(),
        }
        Ok(())
    }
}

impl Scanner {
    /// Which view a window found in the folded skeleton shows most
    /// plainly, for the operator.
    fn view_found(&self, matcher: &Matcher) -> &'static str {
        let full = |tail: &ViewTail| tail.len as usize == WINDOW;
        if full(&self.raw) && matcher.hit(self.raw.value) {
            "raw"
        } else if full(&self.decoded) && matcher.hit(self.decoded.value) {
            if self.decoded_differs {
                "unescaped"
            } else {
                "raw"
            }
        } else if full(&self.decoded) && matcher.hit_folded(fold_window(self.decoded.value)) {
            "folded"
        } else {
            "skeleton"
        }
    }
}

/// Marks a byte that is no symbol in [`HEX`] and [`BASE64`].
const NOT_A_SYMBOL: u8 = 0xff;

/// Each byte's value as a hex digit.
const HEX: [u8; 256] = {
    let mut table = [NOT_A_SYMBOL; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Each byte's value as a base64 symbol (standard and URL-safe alphabets).
const BASE64: [u8; 256] = {
    let mut table = [NOT_A_SYMBOL; 256];
    let mut i = 0;
    while i < 26 {
        table[b'A' as usize + i] = i as u8;
        table[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = 52 + i as u8;
        i += 1;
    }
    table[b'+' as usize] = 62;
    table[b'-' as usize] = 62;
    table[b'/' as usize] = 63;
    table[b'_' as usize] = 63;
    table
};

#[inline(always)]
fn hex_value(byte: u8) -> Option<u8> {
    Some(HEX[usize::from(byte)]).filter(|v| *v != NOT_A_SYMBOL)
}

#[inline(always)]
fn base64_value(byte: u8) -> Option<u8> {
    Some(BASE64[usize::from(byte)]).filter(|v| *v != NOT_A_SYMBOL)
}

/// Text of a stream on its way to the guest: scanned as it arrives, with
/// the last [`STREAM_HOLD_BYTES`] always held back until more arrives or the
/// part ends. What is held back never depends on what the text says.
#[derive(Debug, Default)]
pub struct HeldText {
    held: String,
}

impl HeldText {
    /// Takes a delta already fed to the call's scanner; returns what may be
    /// passed on now (possibly nothing).
    pub fn push(&mut self, delta: &str) -> Option<String> {
        self.held.push_str(delta);
        let mut cut = self.held.len().saturating_sub(STREAM_HOLD_BYTES);
        while cut > 0 && !self.held.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            return None;
        }
        let rest = self.held.split_off(cut);
        Some(std::mem::replace(&mut self.held, rest))
    }

    /// Everything still held, at the end of a part.
    pub fn flush(&mut self) -> Option<String> {
        (!self.held.is_empty()).then(|| std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const ANTHROPIC: &str = "sk-ant-api03-Zx9QkT4mW2pL8vRb6NcY1aDfGh7JkLmN0pQrStUvWxYz3Ab5Cd7Ef9Gh1Ij3Kl5Mn7Op9Qr1St3Uv5Wx7Yz9Ab1Cd3Ef5Gh7Ij9Kl-1Mn3OpAA";

    fn guard(kind: SecretKind, key: &str) -> LeakGuard {
        LeakGuard::new(&[(kind, &Secret::from(key.to_string()))])
    }

    fn private(key: &str) -> &str {
        &key["sk-ant-api03-".len()..]
    }

    #[test]
    fn public_prefixes_and_slack_ids_are_not_private() {
        let key = ANTHROPIC.as_bytes();
        assert_eq!(
            private_segments(SecretKind::Anthropic, key),
            vec![13..key.len() - 2]
        );
        let slack = b"xoxb-1234567890-9876543210-AbCdEfGhIjKlMnOpQrStUvWx";
        assert_eq!(
            private_segments(SecretKind::Slack, slack),
            vec![27..slack.len()]
        );
        let openai = b"sk-abcdefghij0123456789T3BlbkFJklmnopqrst9876543210";
        assert_eq!(
            private_segments(SecretKind::OpenAi, openai),
            vec![3..23, 31..openai.len()]
        );
    }

    #[test]
    fn every_view_finds_eight_private_bytes_and_no_fewer() {
        let g = guard(SecretKind::Anthropic, ANTHROPIC);
        let run = &private(ANTHROPIC)[20..28];
        assert_eq!(g.check(&format!("x {run} y")).unwrap_err().view, "raw");
        assert!(g.check(&format!("x {} y", &run[..7])).is_ok());
        // The public prefix and seven private bytes are not a leak.
        assert!(g.check(&ANTHROPIC[..20]).is_ok());
        let escaped: String = run
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        assert_eq!(g.check(&escaped).unwrap_err().view, "unescaped");
        let percent: String = run.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(g.check(&percent).unwrap_err().view, "unescaped");
        let spaced: String = run.chars().map(|c| format!("{c} ")).collect();
        assert_eq!(g.check(&spaced).unwrap_err().view, "skeleton");
        assert_eq!(
            g.check(&run.to_ascii_uppercase()).unwrap_err().view,
            "folded"
        );
        let hex: String = run.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(g.check(&format!("0x{hex}!")).is_err());
        for prefix in ["", "a", "ab", "abc", "Basic "] {
            let b64 = base64::engine::general_purpose::STANDARD
                .encode(format!("user:{}", private(ANTHROPIC)));
            assert!(g.check(&format!("{prefix}{b64}")).is_err(), "{prefix}");
            let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(private(ANTHROPIC).as_bytes());
            let wrapped: String = url
                .as_bytes()
                .chunks(10)
                .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
                .collect();
            assert!(g.check(&format!("{prefix}{wrapped}")).is_err(), "{prefix}");
        }
    }

    #[test]
    fn json_values_are_joined() {
        let g = guard(SecretKind::Anthropic, ANTHROPIC);
        let p = private(ANTHROPIC);
        let json = serde_json::json!({"a": &p[0..5], "b": &p[5..10], "note": "x"}).to_string();
        assert!(g.check(&json).is_ok());
        assert_eq!(g.check_json(&json).unwrap_err().view, "json-joined");
    }

    #[test]
    fn runs_split_across_pieces_are_found() {
        let g = guard(SecretKind::Anthropic, ANTHROPIC);
        let text = format!("Bearer {ANTHROPIC} done");
        for size in [1, 2, 3, 7, 8, 13] {
            let mut scanner = g.scanner();
            let found = text
                .as_bytes()
                .chunks(size)
                .any(|chunk| scanner.feed(chunk).is_err());
            assert!(found, "chunks of {size}");
        }
    }

    #[test]
    fn held_text_never_passes_a_detected_run() {
        let g = guard(SecretKind::Anthropic, ANTHROPIC);
        let text = format!("your key is {ANTHROPIC}");
        for size in [1, 2, 3, 5, 8, 16, 40] {
            let mut scanner = g.scanner();
            let mut held = HeldText::default();
            let mut passed = String::new();
            for chunk in text.as_bytes().chunks(size) {
                let chunk = std::str::from_utf8(chunk).unwrap();
                if scanner.feed(chunk.as_bytes()).is_err() {
                    break;
                }
                passed.push_str(&held.push(chunk).unwrap_or_default());
            }
            let leaked = passed.strip_prefix("your key is ").unwrap_or("");
            let leaked_private = leaked.len().saturating_sub("sk-ant-api03-".len());
            assert_eq!(leaked_private, 0, "chunks of {size}: {passed:?}");
        }
    }

    #[test]
    fn ordinary_text_and_other_secrets_pass() {
        let g = guard(SecretKind::Anthropic, ANTHROPIC);
        let other = "sk-ant-api03-QQQQwwwweeeerrrrttttyyyyuuuuiiiioooopppp";
        assert!(g.check(other).is_ok());
        assert!(
            g.check_json(r#"{"text": "Hello, world! 0123456789 abcdef"}"#)
                .is_ok()
        );
        assert!(LeakGuard::default().check(ANTHROPIC).is_ok());
    }

    #[test]
    fn quality_is_checked_per_kind() {
        let check = |kind, key: &str| check_quality(kind, &Secret::from(key.to_string()));
        assert!(check(SecretKind::Anthropic, ANTHROPIC).is_ok());
        assert!(check(SecretKind::Anthropic, "sk-ant-api03-short").is_err());
        assert!(check(SecretKind::Webhook, "0123456789abcdef0123456789abcde").is_err());
        assert!(check(SecretKind::Webhook, "0123456789abcdef0123456789abcdef").is_ok());
        assert!(check(SecretKind::Http, "aaaaaaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(
            check(
                SecretKind::Slack,
                "xoxb-1234567890-9876543210-aaaaaaaaaaaaaaaaaaaaaaaa"
            )
            .is_err()
        );
        assert!(
            check(
                SecretKind::Slack,
                "xoxb-1234567890-9876543210-AbCdEfGhIjKlMnOpQrStUvWx"
            )
            .is_ok()
        );
    }
}
