//! The `clawcage` command line. Each subcommand is a struct with
//! `run`/`execute`; the binary only parses arguments.
//!
//! One convention throughout: commands that talk to a daemon take
//! `--remote URL` (`CLAWCAGE_URL`) and `--token` (`CLAWCAGE_TOKEN`)
//! anywhere after the command name ([`DaemonArgs`]); commands that list or
//! show take `--output table|json` ([`OutputArgs`]); times for people are
//! RFC 3339; every failure exits with the code of its kind ([`exit`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agents;
mod audit;
mod event;
mod failure;
mod keys;
mod output;
mod registry;
mod remote;
mod run;
mod scaffold;
mod serve;
mod state;
mod tokens;
mod usage;

pub use agents::{AgentAction, AgentCommand, InvocationsCommand, InvokeCommand};
pub use audit::{AuditAction, AuditCommand};
pub use failure::{CliError, exit};
pub use keys::{KeyAction, KeyCommand};
pub use output::{Output, OutputArgs};
pub use registry::{
    KeygenCommand, PullCommand, PushCommand, SignCommand, TrustAction, TrustCommand,
};
pub use remote::{DEFAULT_URL, DaemonArgs, TOKEN_FILE};
pub use run::{RunCommand, default_cache_dir};
pub use scaffold::{BuildCommand, Language, NewCommand, Template};
pub use serve::ServeCommand;
pub use state::{CacheAction, CacheCommand, InitCommand, StateArgs};
pub use tokens::{TokenAction, TokenCommand};
pub use usage::{UsageCommand, UsageGrouping};

/// ClawCage: run AI agents as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "clawcage", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an agent project that builds and runs as it is (on the mock
    /// provider: no key, no network).
    New(NewCommand),
    /// Build the agent project in a directory and check the component
    /// against the host's `agent` world.
    Build(BuildCommand),
    /// Run one event through an agent and print the handler's result.
    Run(RunCommand),
    /// Create the state directory, its database and a master key.
    Init(InitCommand),
    /// Manage provider keys and tool credentials in the encrypted vault.
    Key(KeyCommand),
    /// Show inference usage and spend per agent, provider, model and key.
    Usage(UsageCommand),
    /// List or clean the compile cache of precompiled components.
    Cache(CacheCommand),
    /// Run the daemon: deployed agents, invoked by API, webhooks and schedules.
    Serve(ServeCommand),
    /// Manage the daemon's API tokens.
    Token(TokenCommand),
    /// Verify or export the audit log.
    Audit(AuditCommand),
    /// Deploy, list or remove agents on a running daemon.
    Agent(AgentCommand),
    /// Run an event on an agent deployed in a running daemon.
    Invoke(InvokeCommand),
    /// List recent invocations on a running daemon (metadata only).
    Invocations(InvocationsCommand),
    /// Create a publisher's Ed25519 signing key pair.
    Keygen(KeygenCommand),
    /// Upload a component to a daemon's registry, signed.
    Push(PushCommand),
    /// Sign a component already in a daemon's registry.
    Sign(SignCommand),
    /// Download a component from a daemon's registry, checking digests and
    /// signatures.
    Pull(PullCommand),
    /// Manage the publisher keys trusted per namespace for deployment.
    Trust(TrustCommand),
    /// Registry upkeep on a running daemon: usage per namespace, garbage
    /// collection.
    Registry(registry::RegistryCommand),
    /// Print a shell completion script (`clawcage completions bash >
    /// /etc/bash_completion.d/clawcage`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn execute(self) -> ExitCode {
        let simple = |result: Result<(), CliError>| match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(error.code)
            }
        };
        match self.command {
            Command::New(new) => simple(new.run(&mut std::io::stdout())),
            Command::Build(build) => simple(build.run(&mut std::io::stdout())),
            Command::Run(run) => run.execute(),
            Command::Init(init) => simple(init.run(&mut std::io::stdout())),
            Command::Key(key) => simple(key.run(&mut std::io::stdin(), &mut std::io::stdout())),
            Command::Usage(usage) => simple(usage.run(&mut std::io::stdout())),
            Command::Cache(cache) => simple(cache.run(&mut std::io::stdout())),
            Command::Serve(serve) => serve.execute(),
            Command::Token(token) => simple(token.run(&mut std::io::stdout())),
            Command::Audit(audit) => simple(audit.run(&mut std::io::stdout())),
            Command::Agent(agent) => simple(agent.run(&mut std::io::stdout())),
            Command::Invoke(invoke) => simple(invoke.run(&mut std::io::stdout())),
            Command::Invocations(list) => simple(list.run(&mut std::io::stdout())),
            Command::Keygen(keygen) => simple(keygen.run(&mut std::io::stdout())),
            Command::Push(push) => simple(push.run(&mut std::io::stdout())),
            Command::Sign(sign) => simple(sign.run(&mut std::io::stdout())),
            Command::Pull(pull) => simple(pull.run(&mut std::io::stdout())),
            Command::Trust(trust) => simple(trust.run(&mut std::io::stdout())),
            Command::Registry(registry) => simple(registry.run(&mut std::io::stdout())),
            Command::Completions { shell } => {
                let mut command = <Self as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "clawcage", &mut std::io::stdout());
                ExitCode::SUCCESS
            }
        }
    }
}
