//! ClawCage runs AI agents as WebAssembly components (`wasm32-wasip2`) inside
//! wasmtime, giving each agent nothing but the narrow `clawcage:agent` world:
//! inference through models the operator bound, tools the operator granted,
//! and logging. Credentials never enter the sandbox.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use clawcage::{Cage, EngineOptions, Event, Manifest};
//!
//! let cage = Cage::new(EngineOptions::default())?;
//! let manifest = Manifest::load("sample-agents/hello/agent.toml".as_ref())?;
//! let agent = cage.load_manifest(&manifest, "sample-agents/hello".as_ref())?;
//! let invocation = agent.invoke(Event::new("cli", "hello", serde_json::json!({"name": "Ada"}))).await;
//! println!("{:?}", invocation.outcome);
//! # Ok(()) }
//! ```
//!
//! Each capability is one module with its state, its deny-by-default
//! context and its `add_to_linker`: [`log`], [`inference`], [`tools`]; WASI is
//! linked with nothing granted (see [`state::AgentStateBuilder`]).

pub mod agent;
pub mod audit;
pub(crate) mod batch;
#[allow(missing_docs)] // generated from the documented WIT
pub mod bindings;
pub mod cli;
pub mod cluster;
pub mod daemon;
pub mod db;
pub(crate) mod egress;
pub mod engine;
pub mod error;
pub mod event;
pub mod fsutil;
pub mod inference;
pub mod leak;
pub mod ledger;
pub mod limits;
pub mod log;
pub mod manifest;
pub mod outbound;
pub(crate) mod output;
pub mod pricing;
pub mod providers;
pub mod registry;
pub mod secret;
pub mod state;
pub mod suspend;
pub(crate) mod text;
pub mod tools;
pub mod ui;
pub mod vault;

pub use agent::{Agent, Cage, Invocation};
pub use engine::{CacheOutcome, CageEngine, EngineOptions};
pub use error::{InvokeError, LoadError};
pub use event::Event;
pub use limits::{LimitKind, Limits};
pub use manifest::Manifest;
