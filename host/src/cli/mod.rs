//! The `clawcage` command line. Each subcommand is a struct with
//! `execute(self)`; the binary only parses arguments.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod event;
mod registry;
mod remote;
mod run;
mod serve;
mod state;

pub use registry::{
    KeygenCommand, PullCommand, PushCommand, SignCommand, TrustAction, TrustCommand,
};
pub use run::{RunCommand, default_cache_dir};
pub use serve::{
    AgentCommand, AuditAction, AuditCommand, InvocationsCommand, InvokeCommand, ServeCommand,
    TOKEN_FILE, TokenCommand,
};
pub use state::{
    CacheAction, CacheCommand, InitCommand, KeyAction, KeyCommand, StateArgs, UsageCommand,
};

/// Exit codes of `clawcage run`, one per kind of failure, so scripts can
/// tell bad input from a failing agent.
pub mod exit {
    /// The handler returned an error.
    pub const AGENT_ERROR: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// A file could not be read.
    pub const MISSING_FILE: u8 = 3;
    /// The manifest is invalid.
    pub const BAD_MANIFEST: u8 = 4;
    /// The file is not a WebAssembly component.
    pub const NOT_A_COMPONENT: u8 = 5;
    /// The component does not fit the `clawcage:agent` world.
    pub const WRONG_WORLD: u8 = 6;
    /// The event is not valid.
    pub const BAD_EVENT: u8 = 7;
    /// The agent crashed (panic, abort, trap).
    pub const CRASHED: u8 = 8;
    /// The agent hit a limit (deadline, memory, fuel, stack, result size).
    pub const LIMIT: u8 = 9;
    /// The host failed or is busy.
    pub const HOST: u8 = 10;
}

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
        let simple = |result: Result<(), String>| match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        };
        match self.command {
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
            Command::Completions { shell } => {
                let mut command = <Self as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "clawcage", &mut std::io::stdout());
                ExitCode::SUCCESS
            }
        }
    }
}
