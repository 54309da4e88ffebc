//! Model prices, for spend accounting and budget reservations.
//!
//! Prices are integers: millionths of a US dollar ("micros") per million
//! tokens, so a price of $3 per million input tokens is `3_000_000`. The
//! shipped table covers the current Anthropic and OpenAI models; an operator
//! overrides or extends it in configuration. A model matches the longest
//! entry that is a prefix of its id, so dated snapshots
//! (`claude-3-5-haiku-20241022`) find their family's price.

use serde::{Deserialize, Serialize};

/// Price of one model, in micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Price {
    /// Per million input tokens read without the prompt cache.
    pub input: u64,
    /// Per million output tokens.
    pub output: u64,
    /// Per million input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Per million input tokens written to a five-minute cache entry.
    pub cache_write: u64,
    /// Per million input tokens written to a one-hour cache entry.
    pub cache_write_1h: u64,
}

/// The tokens of one call, as the provider counted them (or the host
/// estimated them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// Every input token, cached or not.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// The part of `input` read from the prompt cache.
    pub cache_read: u64,
    /// The part of `input` written to the prompt cache (any lifetime).
    pub cache_write: u64,
    /// The part of `cache_write` written to one-hour entries.
    pub cache_write_1h: u64,
}

impl Tokens {
    /// Input and output only, nothing cached.
    pub fn plain(input: u64, output: u64) -> Self {
        Self {
            input,
            output,
            ..Self::default()
        }
    }
}

impl Price {
    /// A price with no cache discount or surcharge.
    pub const fn flat(input: u64, output: u64) -> Self {
        Self {
            input,
            output,
            cache_read: input,
            cache_write: input,
            cache_write_1h: input,
        }
    }

    /// Anthropic's list price: cache reads at a tenth of the input price,
    /// five-minute writes at 1.25 times and one-hour writes at twice it.
    pub const fn anthropic(input: u64, output: u64) -> Self {
        Self {
            input,
            output,
            cache_read: input / 10,
            cache_write: input.saturating_mul(5) / 4,
            cache_write_1h: input.saturating_mul(2),
        }
    }

    /// OpenAI's list price: cached input at `cached`, writes at the input
    /// price (OpenAI charges nothing extra to cache).
    pub const fn openai(input: u64, output: u64, cached: u64) -> Self {
        Self {
            input,
            output,
            cache_read: cached,
            cache_write: input,
            cache_write_1h: input,
        }
    }

    /// The cost of a call in micro-dollars, rounded up. Cached parts that
    /// exceed the input count (a confused provider) are clamped to it.
    pub fn cost(&self, tokens: &Tokens) -> u64 {
        let read = tokens.cache_read.min(tokens.input);
        let write = tokens.cache_write.min(tokens.input - read);
        let write_1h = tokens.cache_write_1h.min(write);
        let uncached = tokens.input - read - write;
        let total = [
            (uncached, self.input),
            (read, self.cache_read),
            (write - write_1h, self.cache_write),
            (write_1h, self.cache_write_1h),
            (tokens.output, self.output),
        ]
        .iter()
        .fold(0u128, |sum, (count, price)| {
            sum.saturating_add(u128::from(*count) * u128::from(*price))
        });
        u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    /// The most `input` and `output` tokens can cost, whatever part of the
    /// input the provider caches (a cache write costs more than a read).
    pub(crate) fn worst_case_micros(&self, input: u64, output: u64) -> u64 {
        let dearest_input = self
            .input
            .max(self.cache_read)
            .max(self.cache_write)
            .max(self.cache_write_1h);
        Price::flat(dearest_input, self.output).cost(&Tokens::plain(input, output))
    }
}

const fn anthropic(input: u64, output: u64) -> Price {
    Price::anthropic(input, output)
}

const fn openai(input: u64, output: u64, cached: u64) -> Price {
    Price::openai(input, output, cached)
}

/// The shipped prices (USD per million tokens, list prices).
const BUILTIN: &[(&str, &str, Price)] = &[
    (
        "anthropic",
        "claude-opus-4",
        anthropic(15_000_000, 75_000_000),
    ),
    (
        "anthropic",
        "claude-sonnet-4",
        anthropic(3_000_000, 15_000_000),
    ),
    (
        "anthropic",
        "claude-haiku-4",
        anthropic(1_000_000, 5_000_000),
    ),
    (
        "anthropic",
        "claude-3-7-sonnet",
        anthropic(3_000_000, 15_000_000),
    ),
    (
        "anthropic",
        "claude-3-5-sonnet",
        anthropic(3_000_000, 15_000_000),
    ),
    (
        "anthropic",
        "claude-3-5-haiku",
        anthropic(800_000, 4_000_000),
    ),
    (
        "anthropic",
        "claude-3-opus",
        anthropic(15_000_000, 75_000_000),
    ),
    ("anthropic", "claude-3-haiku", anthropic(250_000, 1_250_000)),
    ("openai", "gpt-5-pro", Price::flat(15_000_000, 120_000_000)),
    ("openai", "gpt-5.2", openai(1_750_000, 14_000_000, 175_000)),
    ("openai", "gpt-5-nano", openai(50_000, 400_000, 5_000)),
    ("openai", "gpt-5-mini", openai(250_000, 2_000_000, 25_000)),
    ("openai", "gpt-5", openai(1_250_000, 10_000_000, 125_000)),
    ("openai", "gpt-4.1-nano", openai(100_000, 400_000, 25_000)),
    (
        "openai",
        "gpt-4.1-mini",
        openai(400_000, 1_600_000, 100_000),
    ),
    ("openai", "gpt-4.1", openai(2_000_000, 8_000_000, 500_000)),
    ("openai", "gpt-4o-mini", openai(150_000, 600_000, 75_000)),
    ("openai", "gpt-4o", openai(2_500_000, 10_000_000, 1_250_000)),
    ("openai", "o4-mini", openai(1_100_000, 4_400_000, 275_000)),
    ("openai", "o3-pro", Price::flat(20_000_000, 80_000_000)),
    ("openai", "o3", openai(2_000_000, 8_000_000, 500_000)),
];

/// One configured price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PriceEntry {
    /// Provider kind.
    pub provider: String,
    /// Model id, or a prefix of model ids.
    pub model: String,
    /// The price.
    pub price: Price,
}

/// The operator's price file (`prices.toml` in the state directory), in US
/// dollars per million tokens:
///
/// ```toml
/// [[price]]
/// provider = "openai-compatible"
/// model = "llama3"              # a model id or a prefix of ids
/// input_usd_per_mtok = 0.0
/// output_usd_per_mtok = 0.0
/// # optional; by default Anthropic's ratios for `anthropic` (reads 0.1x,
/// # writes 1.25x, one-hour writes 2x) and the input price otherwise
/// cache_read_usd_per_mtok = 0.0
/// cache_write_usd_per_mtok = 0.0
/// cache_write_1h_usd_per_mtok = 0.0
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceFile {
    /// The entries; they override shipped prices for the same provider and
    /// model.
    #[serde(default)]
    pub price: Vec<PriceFileEntry>,
}

/// One entry of the price file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceFileEntry {
    /// Provider kind.
    pub provider: String,
    /// Model id or prefix.
    pub model: String,
    /// US dollars per million input tokens.
    pub input_usd_per_mtok: f64,
    /// US dollars per million output tokens.
    pub output_usd_per_mtok: f64,
    /// US dollars per million input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_usd_per_mtok: Option<f64>,
    /// US dollars per million input tokens written to a five-minute cache
    /// entry.
    #[serde(default)]
    pub cache_write_usd_per_mtok: Option<f64>,
    /// US dollars per million input tokens written to a one-hour entry.
    #[serde(default)]
    pub cache_write_1h_usd_per_mtok: Option<f64>,
}

impl PriceFile {
    /// Parses a price file.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: PriceFile = toml::from_str(text).map_err(|e| format!("prices.toml: {e}"))?;
        for entry in &file.price {
            for (name, value) in [
                ("input_usd_per_mtok", Some(entry.input_usd_per_mtok)),
                ("output_usd_per_mtok", Some(entry.output_usd_per_mtok)),
                ("cache_read_usd_per_mtok", entry.cache_read_usd_per_mtok),
                ("cache_write_usd_per_mtok", entry.cache_write_usd_per_mtok),
                (
                    "cache_write_1h_usd_per_mtok",
                    entry.cache_write_1h_usd_per_mtok,
                ),
            ] {
                let Some(value) = value else { continue };
                if !(value.is_finite() && (0.0..=1_000_000.0).contains(&value)) {
                    return Err(format!(
                        "prices.toml: {} {}: {name} = {value} is not a price",
                        entry.provider, entry.model
                    ));
                }
            }
        }
        Ok(file)
    }

    /// The shipped table with these entries applied.
    pub fn table(&self) -> PriceTable {
        let micros = |usd: f64| (usd * 1e6).round() as u64;
        PriceTable::with_overrides(self.price.iter().map(|e| {
            let (input, output) = (micros(e.input_usd_per_mtok), micros(e.output_usd_per_mtok));
            let defaults = if e.provider == "anthropic" {
                Price::anthropic(input, output)
            } else {
                Price::flat(input, output)
            };
            PriceEntry {
                provider: e.provider.clone(),
                model: e.model.clone(),
                price: Price {
                    cache_read: e
                        .cache_read_usd_per_mtok
                        .map_or(defaults.cache_read, micros),
                    cache_write: e
                        .cache_write_usd_per_mtok
                        .map_or(defaults.cache_write, micros),
                    cache_write_1h: e
                        .cache_write_1h_usd_per_mtok
                        .map_or(defaults.cache_write_1h, micros),
                    ..defaults
                },
            }
        }))
    }
}

/// Prices by provider and model-id prefix.
#[derive(Debug, Clone)]
pub struct PriceTable {
    entries: Vec<PriceEntry>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self::builtin()
    }
}

impl PriceTable {
    /// The shipped prices.
    pub fn builtin() -> Self {
        Self {
            entries: BUILTIN
                .iter()
                .map(|(provider, model, price)| PriceEntry {
                    provider: provider.to_string(),
                    model: model.to_string(),
                    price: *price,
                })
                .collect(),
        }
    }

    /// The shipped prices with `overrides` taking precedence.
    pub(crate) fn with_overrides(overrides: impl IntoIterator<Item = PriceEntry>) -> Self {
        let mut table = Self::builtin();
        for entry in overrides {
            table
                .entries
                .retain(|e| !(e.provider == entry.provider && e.model == entry.model));
            table.entries.push(entry);
        }
        table
    }

    /// The price of `model` at `provider`: the longest matching prefix.
    /// OpenAI-compatible servers use OpenAI's names only when configured.
    pub(crate) fn price(&self, provider: &str, model: &str) -> Option<Price> {
        self.entries
            .iter()
            .filter(|e| e.provider == provider && model.starts_with(e.model.as_str()))
            .max_by_key(|e| e.model.len())
            .map(|e| e.price)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_snapshots_match_their_family() {
        let table = PriceTable::builtin();
        assert_eq!(
            table
                .price("openai", "gpt-4o-mini-2024-07-18")
                .unwrap()
                .input,
            150_000
        );
        assert_eq!(
            table.price("openai", "gpt-4o-2024-08-06").unwrap().input,
            2_500_000
        );
        assert_eq!(
            table
                .price("anthropic", "claude-3-5-haiku-20241022")
                .unwrap()
                .output,
            4_000_000
        );
        assert_eq!(table.price("anthropic", "gpt-4o"), None);
        assert_eq!(table.price("openai-compatible", "llama3"), None);
    }

    #[test]
    fn costs_round_up_and_never_overflow() {
        let price = Price::flat(3_000_000, 15_000_000);
        assert_eq!(price.cost(&Tokens::plain(1_000_000, 0)), 3_000_000);
        assert_eq!(price.cost(&Tokens::plain(1, 0)), 3);
        assert_eq!(price.cost(&Tokens::plain(1, 1)), 18);
        assert_eq!(Price::flat(1, 0).cost(&Tokens::plain(1, 0)), 1);
        assert_eq!(
            Price::flat(u64::MAX, u64::MAX).cost(&Tokens::plain(u64::MAX, u64::MAX)),
            u64::MAX
        );
    }

    #[test]
    fn the_price_file_is_in_dollars_and_validated() {
        let file = PriceFile::from_toml(
            "[[price]]\nprovider = \"openai\"\nmodel = \"gpt-4o\"\ninput_usd_per_mtok = 2.0\noutput_usd_per_mtok = 8.5\n",
        )
        .unwrap();
        assert_eq!(
            file.table().price("openai", "gpt-4o-2024").unwrap(),
            Price::flat(2_000_000, 8_500_000)
        );
        assert!(PriceFile::from_toml("[[price]]\nprovider = \"x\"\nmodel = \"y\"\ninput_usd_per_mtok = -1.0\noutput_usd_per_mtok = 1.0\n").is_err());
        assert!(PriceFile::from_toml("[[price]]\nprovider = \"x\"\n").is_err());
    }

    #[test]
    fn overrides_replace_and_extend() {
        let table = PriceTable::with_overrides([
            PriceEntry {
                provider: "openai".into(),
                model: "gpt-4o".into(),
                price: Price::flat(1, 2),
            },
            PriceEntry {
                provider: "openai-compatible".into(),
                model: "llama3".into(),
                price: Price::flat(0, 0),
            },
        ]);
        assert_eq!(table.price("openai", "gpt-4o").unwrap(), Price::flat(1, 2));
        assert_eq!(
            table.price("openai-compatible", "llama3:8b").unwrap(),
            Price::flat(0, 0)
        );
    }

    #[test]
    fn cached_tokens_are_priced_at_their_own_rates() {
        // Claude Haiku 4.5 list prices: $1 in, $5 out, reads $0.10, writes
        // $1.25 (5 minutes) and $2 (1 hour) per million.
        let haiku = PriceTable::builtin()
            .price("anthropic", "claude-haiku-4-5")
            .unwrap();
        let tokens = Tokens {
            input: 1_000_000 + 2_000_000 + 4_000_000 + 8_000_000,
            output: 1_000_000,
            cache_read: 2_000_000,
            cache_write: 12_000_000,
            cache_write_1h: 8_000_000,
        };
        // 1 uncached + 2 x 0.10 + 4 x 1.25 + 8 x 2 + 1 x 5 dollars.
        assert_eq!(haiku.cost(&tokens), 27_200_000);
        assert_eq!(haiku.worst_case_micros(1_000_000, 0), 2_000_000);
        // Prices not divisible by four keep their cache-write rate exact.
        let odd = Price::anthropic(1_000_001, 0);
        assert_eq!(
            (odd.cache_write, odd.cache_write_1h),
            (1_250_001, 2_000_002)
        );
        // gpt-4o: cached input at half price.
        let gpt = PriceTable::builtin().price("openai", "gpt-4o").unwrap();
        let cached = Tokens {
            input: 2_000_000,
            cache_read: 1_000_000,
            ..Tokens::default()
        };
        assert_eq!(gpt.cost(&cached), 2_500_000 + 1_250_000);
        // A provider that reports more cached than input tokens is clamped.
        let confused = Tokens {
            input: 10,
            cache_read: 1_000,
            ..Tokens::default()
        };
        assert_eq!(
            gpt.cost(&confused),
            gpt.cost(&Tokens {
                cache_read: 10,
                ..confused
            })
        );
        let file = PriceFile::from_toml(
            "[[price]]\nprovider = \"anthropic\"\nmodel = \"claude-x\"\ninput_usd_per_mtok = 2.0\noutput_usd_per_mtok = 10.0\ncache_read_usd_per_mtok = 0.3\n",
        )
        .unwrap();
        let price = file.table().price("anthropic", "claude-x").unwrap();
        assert_eq!(
            (price.cache_read, price.cache_write, price.cache_write_1h),
            (300_000, 2_500_000, 4_000_000)
        );
    }
}
