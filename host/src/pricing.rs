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
pub struct Price {
    /// Per million input tokens.
    pub input: u64,
    /// Per million output tokens.
    pub output: u64,
}

impl Price {
    /// The cost of a call in micro-dollars, rounded up.
    pub fn cost_micros(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        let total = (u128::from(input_tokens) * u128::from(self.input))
            .saturating_add(u128::from(output_tokens) * u128::from(self.output));
        u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// A price from micro-dollars per million input and output tokens.
const fn usd(input: u64, output: u64) -> Price {
    Price { input, output }
}

/// The shipped prices (USD per million tokens, list prices).
const BUILTIN: &[(&str, &str, Price)] = &[
    ("anthropic", "claude-opus-4", usd(15_000_000, 75_000_000)),
    ("anthropic", "claude-sonnet-4", usd(3_000_000, 15_000_000)),
    ("anthropic", "claude-haiku-4", usd(1_000_000, 5_000_000)),
    ("anthropic", "claude-3-7-sonnet", usd(3_000_000, 15_000_000)),
    ("anthropic", "claude-3-5-sonnet", usd(3_000_000, 15_000_000)),
    ("anthropic", "claude-3-5-haiku", usd(800_000, 4_000_000)),
    ("anthropic", "claude-3-opus", usd(15_000_000, 75_000_000)),
    ("anthropic", "claude-3-haiku", usd(250_000, 1_250_000)),
    ("openai", "gpt-5-nano", usd(50_000, 400_000)),
    ("openai", "gpt-5-mini", usd(250_000, 2_000_000)),
    ("openai", "gpt-5", usd(1_250_000, 10_000_000)),
    ("openai", "gpt-4.1-nano", usd(100_000, 400_000)),
    ("openai", "gpt-4.1-mini", usd(400_000, 1_600_000)),
    ("openai", "gpt-4.1", usd(2_000_000, 8_000_000)),
    ("openai", "gpt-4o-mini", usd(150_000, 600_000)),
    ("openai", "gpt-4o", usd(2_500_000, 10_000_000)),
    ("openai", "o4-mini", usd(1_100_000, 4_400_000)),
    ("openai", "o3", usd(2_000_000, 8_000_000)),
];

/// One configured price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceEntry {
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
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    /// The entries; they override shipped prices for the same provider and
    /// model.
    #[serde(default)]
    pub price: Vec<PriceFileEntry>,
}

/// One entry of the price file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFileEntry {
    /// Provider kind.
    pub provider: String,
    /// Model id or prefix.
    pub model: String,
    /// US dollars per million input tokens.
    pub input_usd_per_mtok: f64,
    /// US dollars per million output tokens.
    pub output_usd_per_mtok: f64,
}

impl PriceFile {
    /// Parses a price file.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: PriceFile = toml::from_str(text).map_err(|e| format!("prices.toml: {e}"))?;
        for entry in &file.price {
            for (name, value) in [
                ("input_usd_per_mtok", entry.input_usd_per_mtok),
                ("output_usd_per_mtok", entry.output_usd_per_mtok),
            ] {
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
        PriceTable::with_overrides(self.price.iter().map(|e| PriceEntry {
            provider: e.provider.clone(),
            model: e.model.clone(),
            price: Price {
                input: (e.input_usd_per_mtok * 1e6).round() as u64,
                output: (e.output_usd_per_mtok * 1e6).round() as u64,
            },
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
    pub fn with_overrides(overrides: impl IntoIterator<Item = PriceEntry>) -> Self {
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
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
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
        let price = Price {
            input: 3_000_000,
            output: 15_000_000,
        };
        assert_eq!(price.cost_micros(1_000_000, 0), 3_000_000);
        assert_eq!(price.cost_micros(1, 0), 3);
        assert_eq!(price.cost_micros(1, 1), 18);
        assert_eq!(
            Price {
                input: 1,
                output: 0
            }
            .cost_micros(1, 0),
            1
        );
        assert_eq!(
            Price {
                input: u64::MAX,
                output: u64::MAX
            }
            .cost_micros(u64::MAX, u64::MAX),
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
            Price {
                input: 2_000_000,
                output: 8_500_000
            }
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
                price: Price {
                    input: 1,
                    output: 2,
                },
            },
            PriceEntry {
                provider: "openai-compatible".into(),
                model: "llama3".into(),
                price: Price {
                    input: 0,
                    output: 0,
                },
            },
        ]);
        assert_eq!(
            table.price("openai", "gpt-4o").unwrap(),
            Price {
                input: 1,
                output: 2
            }
        );
        assert_eq!(
            table.price("openai-compatible", "llama3:8b").unwrap(),
            Price {
                input: 0,
                output: 0
            }
        );
    }
}
