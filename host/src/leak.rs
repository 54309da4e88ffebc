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

use crate::secret::Secret;

/// The shortest run of a secret's private bytes that counts as a leak.
pub const WINDOW: usize = 8;

/// How many bytes of streamed text are always held back: one less than a
/// window, so no byte of a detected run has been passed on.
pub const STREAM_HOLD_BYTES: usize = WINDOW - 1;

/// The fewest private bytes a secret must have, so that a window cannot be
/// guessed and ordinary text does not match it by chance.
pub(crate) const MIN_PRIVATE_BYTES: usize = 16;

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
    pub(crate) fn of_provider(provider: &str) -> Self {
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
    pub(crate) fn min_bytes(self) -> usize {
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

/// Public prefixes of the credentials people hold, longest first where one
/// starts another. They are public whatever kind a secret is stored as (a
/// Stripe key held as an `http` credential has the same known start).
const PUBLIC_PREFIXES: &[&str] = &[
    // Anthropic (`sk-ant-<kind><version>-` in general, see below).
    "sk-ant-api03-",
    "sk-ant-admin01-",
    // OpenAI.
    "sk-proj-",
    "sk-svcacct-",
    "sk-admin-",
    "sk-None-",
    // OpenRouter.
    "sk-or-v1-",
    // GitHub.
    "github_pat_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    // GitLab.
    "glpat-",
    // Notion.
    "secret_",
    "ntn_",
    // Stripe.
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    // Hugging Face, Groq, Replicate, Perplexity, Google.
    "hf_",
    "gsk_",
    "r8_",
    "pplx-",
    "AIza",
    // The shortest last.
    "sk-",
];

/// A marker OpenAI puts in the middle of its keys (`OpenAI`, base64).
const OPENAI_MARKER: &[u8] = b"T3BlbkFJ";

/// The parts of `secret` a guest could not know: the whole secret less its
/// public prefix and any constant inside it.
///
/// - A known prefix ([`PUBLIC_PREFIXES`], and `sk-ant-<word>-`) is public.
/// - A Slack token's team, user and bot ids are public (events carry them):
///   only what follows its last `-` is private.
/// - A JSON Web Token's header and claims are readable by anyone who sees
///   one: only its signature is private.
/// - Anthropic keys end in a constant `AA`; OpenAI's older keys hold the
///   constant `T3BlbkFJ`.
pub(crate) fn private_segments(kind: SecretKind, secret: &[u8]) -> Vec<Range<usize>> {
    let mut start = PUBLIC_PREFIXES
        .iter()
        .find(|prefix| secret.starts_with(prefix.as_bytes()))
        .map_or(0, |prefix| prefix.len());
    if let Some(rest) = secret.strip_prefix(b"sk-ant-")
        && let Some(dash) = rest.iter().position(|&b| b == b'-')
        && dash <= 12
        && rest[..dash].iter().all(u8::is_ascii_alphanumeric)
    {
        start = start.max(b"sk-ant-".len() + dash + 1);
    }
    let slack_like = secret.starts_with(b"xox") || secret.starts_with(b"xapp-");
    if (kind == SecretKind::Slack || slack_like)
        && let Some(last_dash) = secret.iter().rposition(|&b| b == b'-')
    {
        start = start.max(last_dash + 1);
    }
    if secret.starts_with(b"eyJ")
        && secret.iter().filter(|&&b| b == b'.').count() == 2
        && let Some(last_dot) = secret.iter().rposition(|&b| b == b'.')
    {
        start = start.max(last_dot + 1);
    }
    let mut end = secret.len();
    if secret.starts_with(b"sk-ant-") && secret.ends_with(b"AA") && end >= start + 2 {
        end -= 2;
    }
    let marker = secret[start..end]
        .windows(OPENAI_MARKER.len())
        .position(|w| w == OPENAI_MARKER)
        .filter(|_| secret.starts_with(b"sk-"));
    let segments = match marker {
        Some(at) => [start..start + at, start + at + OPENAI_MARKER.len()..end],
        None => [start..end, end..end],
    };
    segments.into_iter().filter(|r| !r.is_empty()).collect()
}

/// Checks that a secret is fit to hold: long enough for its kind, with
/// enough private bytes, and not a run of a few repeated characters.
pub(crate) fn check_quality(kind: SecretKind, secret: &Secret) -> Result<(), String> {
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

/// The windows of the carried secrets.
struct Matcher {
    /// Every private window as a little-endian `u64`.
    windows: WindowSet,
    /// The same windows in ASCII lower case.
    folded: WindowSet,
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
        let folded: Vec<u64> = windows.iter().map(|w| fold_window(*w)).collect();
        Some(Self {
            windows: WindowSet::new(&windows),
            folded: WindowSet::new(&folded),
            folded_alphabet,
        })
    }

    /// Whether a window of lower-cased text is a secret's, lower-cased.
    #[inline(always)]
    fn hit_folded(&self, window: u64) -> bool {
        self.folded.contains(window)
    }

    /// Whether a window (as a little-endian `u64`) is a secret's.
    #[inline(always)]
    fn hit(&self, window: u64) -> bool {
        self.windows.contains(window)
    }
}

/// A set of windows, looked up with the same work whether or not a window
/// is in it: a hash with a secret per-process seed picks a slot of an
/// open-addressed table kept at most 1/4 full. (A filter on a window's
/// first bytes, or a search run only when it passes, would make the time a
/// long echo takes depend on which pairs of bytes the key holds.)
struct WindowSet {
    slots: Box<[u64]>,
    shift: u32,
    /// Whether the all-zero window, which marks an empty slot, is a member.
    has_zero: bool,
    members: usize,
}

impl WindowSet {
    fn new(windows: &[u64]) -> Self {
        let capacity = (windows.len() * 4).next_power_of_two().max(64);
        let mut set = Self {
            slots: vec![0; capacity].into_boxed_slice(),
            shift: 64 - capacity.trailing_zeros(),
            has_zero: false,
            members: 0,
        };
        for &window in windows {
            if window == 0 {
                set.has_zero = true;
                continue;
            }
            let mask = set.slots.len() - 1;
            let mut slot = set.slot(window);
            while set.slots[slot] != 0 && set.slots[slot] != window {
                slot = (slot + 1) & mask;
            }
            if set.slots[slot] == 0 {
                set.slots[slot] = window;
                set.members += 1;
            }
        }
        set
    }

    #[inline(always)]
    fn slot(&self, window: u64) -> usize {
        ((window ^ hash_seed()).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    #[inline(always)]
    fn contains(&self, window: u64) -> bool {
        if window == 0 {
            return self.has_zero;
        }
        let mask = self.slots.len() - 1;
        let mut slot = self.slot(window);
        loop {
            let found = self.slots[slot];
            if found == window {
                return true;
            }
            if found == 0 {
                return false;
            }
            slot = (slot + 1) & mask;
        }
    }
}

/// A random seed for [`WindowSet`]'s hash, chosen once per process.
fn hash_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // Should the OS have no randomness to give, the slots are still
        // spread, only predictably; lookups stay as fast either way.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        u64::from_le_bytes(bytes)
    })
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
                &self.matcher.as_ref().map_or(0, |m| m.windows.members),
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

    /// A scanner for text that reaches the guest in pieces, in order.
    pub(crate) fn scanner(&self) -> Scanner {
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
    pub(crate) fn check_json(&self, json: &str) -> Result<(), LeakDetected> {
        if self.matcher.is_none() {
            return Ok(());
        }
        self.check(json)?;
        self.check_json_strings(json)
    }

    /// If `json` is a JSON document, checks its strings joined in document
    /// order: all values, and all object keys, each as one text (a secret
    /// split across fields is whole there). The text of the document itself
    /// is the caller's to check.
    pub(crate) fn check_json_strings(&self, json: &str) -> Result<(), LeakDetected> {
        let Some(matcher) = &self.matcher else {
            return Ok(());
        };
        if serde_json::from_str::<serde::de::IgnoredAny>(json).is_err() {
            return Ok(());
        }
        let mut values = Scanner::new(Some(matcher.clone()));
        let mut keys = Scanner::new(Some(matcher.clone()));
        json_strings(json, &mut |text, is_key| {
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

/// Visits every string literal of a valid JSON text, decoded, in document
/// order (a parsed `Value` would give object keys sorted, and drop repeated
/// keys), with whether it is an object key.
fn json_strings(
    json: &str,
    visit: &mut dyn FnMut(&str, bool) -> Result<(), LeakDetected>,
) -> Result<(), LeakDetected> {
    let bytes = json.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'"' {
            at += 1;
            continue;
        }
        let start = at;
        at += 1;
        while at < bytes.len() && bytes[at] != b'"' {
            at += if bytes[at] == b'\\' { 2 } else { 1 };
        }
        let end = (at + 1).min(bytes.len());
        at = end;
        let is_key = bytes[end..]
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b':');
        // Quotes are ASCII, so both ends are character boundaries.
        if let Ok(text) = serde_json::from_str::<String>(&json[start..end]) {
            visit(&text, is_key)?;
        }
    }
    Ok(())
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

/// The decoder of JSON and percent escapes: its pending escape, with the
/// raw digits read so far (an escape that turns out not to be one gives
/// them back, so the decoded text never loses a byte of the raw one).
#[derive(Default, Clone)]
enum Unescape {
    #[default]
    Plain,
    Backslash,
    Unicode {
        digits: [u8; 3],
        len: u8,
    },
    Percent {
        first: Option<u8>,
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
pub(crate) struct Scanner {
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
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), LeakDetected> {
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
                b'%' => self.unescape = Unescape::Percent { first: None },
                _ => self.decoded_byte(matcher, byte, false)?,
            },
            Unescape::Backslash => {
                let decoded = match byte {
                    b'u' => {
                        self.unescape = Unescape::Unicode {
                            digits: [0; 3],
                            len: 0,
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
            Unescape::Unicode { mut digits, len } => match hex_value(byte) {
                Some(_) if len == 3 => {
                    let value = digits
                        .iter()
                        .chain(std::iter::once(&byte))
                        .filter_map(|d| hex_value(*d))
                        .fold(0u32, |value, nibble| (value << 4) | u32::from(nibble));
                    let c = char::from_u32(value).unwrap_or('\u{fffd}');
                    let mut buffer = [0u8; 4];
                    for &b in c.encode_utf8(&mut buffer).as_bytes() {
                        self.decoded_byte(matcher, b, true)?;
                    }
                }
                Some(_) => {
                    digits[usize::from(len)] = byte;
                    self.unescape = Unescape::Unicode {
                        digits,
                        len: len + 1,
                    };
                }
                None => {
                    // Not an escape after all: the text goes on as it was.
                    for &b in [b'\\', b'u'].iter().chain(&digits[..usize::from(len)]) {
                        self.decoded_byte(matcher, b, false)?;
                    }
                    self.decode(matcher, byte)?;
                }
            },
            Unescape::Percent { first } => match (hex_value(byte), first) {
                (Some(low), Some(high)) => {
                    let high = hex_value(high).unwrap_or(0);
                    self.decoded_byte(matcher, (high << 4) | low, true)?;
                }
                (Some(_), None) => self.unescape = Unescape::Percent { first: Some(byte) },
                (None, first) => {
                    self.decoded_byte(matcher, b'%', false)?;
                    if let Some(first) = first {
                        self.decoded_byte(matcher, first, false)?;
                    }
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
pub(crate) struct HeldText {
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
        // Known starts are public whatever the secret is stored as.
        let stripe = b"sk_live_51HxYzAbCdEfGhIjKlMnOpQr";
        assert_eq!(
            private_segments(SecretKind::Http, stripe),
            vec![8..stripe.len()]
        );
        let oauth = b"sk-ant-oat01-AbCdEfGhIjKlMnOpQrStUvWx";
        assert_eq!(
            private_segments(SecretKind::Http, oauth),
            vec![13..oauth.len()]
        );
        let user = b"xoxp-1111222233-4444555566-7777888899-0a1b2c3d4e5f60718293a4b5c6d7e8f9";
        assert_eq!(
            private_segments(SecretKind::Http, user),
            vec![38..user.len()]
        );
        let jwt = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";
        assert_eq!(private_segments(SecretKind::Http, jwt), vec![41..jwt.len()]);
        let random = b"Zx9QkT4mW2pL8vRb6NcY1aDf";
        assert_eq!(
            private_segments(SecretKind::Http, random),
            vec![0..random.len()]
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
        // An escape that is not one gives its bytes back.
        let tail = &private(ANTHROPIC)[2..10];
        for broken in [
            format!("%{tail}"),
            format!("\\u{tail}"),
            format!("\\u{}", &private(ANTHROPIC)[..10]),
        ] {
            assert!(g.check(&broken).is_err(), "{broken}");
        }
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
        // In the order the guest reads them, not sorted.
        let reordered = format!(r#"{{"z": "{}", "a": "{}"}}"#, &p[0..5], &p[5..10]);
        assert!(g.check(&reordered).is_ok());
        assert!(g.check_json(&reordered).is_err());
        let keys = format!(r#"{{"{}": 1, "{}": 2}}"#, &p[0..5], &p[5..10]);
        assert!(g.check_json(&keys).is_err());
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
