//! `clawcage new` and `clawcage build`: an agent project that builds and
//! runs as it is, and its build, checked against the host's `agent` world.
//!
//! A new project runs at once on the `mock` provider: no key, no network.
//! Its SDK is the one this binary was built with: the checkout's
//! `guest-sdk` when it is still there, else a copy written into the project
//! (`clawcage-sdk/`), so the project never targets another WIT than the
//! host's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::failure::{CliError, exit};

/// The languages `clawcage new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust with `clawcage-sdk`, built by cargo.
    Rust,
    /// JavaScript or TypeScript, built by componentize-js.
    Js,
    /// Python, built by componentize-py.
    Python,
}

/// What a new project starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// Asks the model once and answers with its text.
    Hello,
    /// Offers the model a tool of its own, runs the calls the model asks
    /// for, and loops until the model answers.
    ToolLoop,
}

/// `clawcage new`: scaffolds an agent project.
#[derive(Debug, clap::Args)]
pub struct NewCommand {
    /// The agent's name: lower-case letters, digits and `-`; also the
    /// project's directory.
    pub name: String,
    /// The language.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Language,
    /// What it starts from.
    #[arg(long, value_enum, default_value = "hello")]
    pub template: Template,
    /// Where to create the project's directory (default: here).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The Rust SDK to depend on, by path (default: the checkout this
    /// binary was built from).
    #[arg(long, conflicts_with = "vendor_sdk")]
    pub sdk: Option<PathBuf>,
    /// Copy the SDK this binary was built with into the project
    /// (`clawcage-sdk/`): the default when its checkout is gone.
    #[arg(long)]
    pub vendor_sdk: bool,
}

/// `clawcage build`: builds the agent project in a directory and checks
/// the component against the host's `agent` world.
#[derive(Debug, clap::Args)]
pub struct BuildCommand {
    /// The project's directory (default: here).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// The SDK's files, embedded, for a project made where the checkout is not.
const SDK_FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../guest-sdk/Cargo.toml")),
    ("README.md", include_str!("../../../guest-sdk/README.md")),
    (
        "wit/agent.wit",
        include_str!("../../../guest-sdk/wit/agent.wit"),
    ),
    ("src/lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
    (
        "src/error.rs",
        include_str!("../../../guest-sdk/src/error.rs"),
    ),
    (
        "src/errors.rs",
        include_str!("../../../guest-sdk/src/errors.rs"),
    ),
    (
        "src/event.rs",
        include_str!("../../../guest-sdk/src/event.rs"),
    ),
    (
        "src/inference.rs",
        include_str!("../../../guest-sdk/src/inference.rs"),
    ),
    ("src/log.rs", include_str!("../../../guest-sdk/src/log.rs")),
    (
        "src/tools.rs",
        include_str!("../../../guest-sdk/src/tools.rs"),
    ),
    (
        "macros/Cargo.toml",
        include_str!("../../../guest-sdk/macros/Cargo.toml"),
    ),
    (
        "macros/src/lib.rs",
        include_str!("../../../guest-sdk/macros/src/lib.rs"),
    ),
];

/// The checkout's SDK, if this binary was built from one that is still
/// there.
fn checkout_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| sdk.canonicalize().ok())
        .flatten()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-')
}

fn write(root: &Path, file: &str, text: &str) -> Result<(), CliError> {
    let path = root.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| CliError::new(exit::HOST, format!("{}: {e}", parent.display())))?;
    }
    std::fs::write(&path, text)
        .map_err(|e| CliError::new(exit::HOST, format!("{}: {e}", path.display())))
}

impl NewCommand {
    /// Runs the command.
    pub fn run(&self, out: &mut dyn Write) -> Result<(), CliError> {
        if !valid_name(&self.name) {
            return Err(CliError::usage(format!(
                "{:?} is not an agent name: lower-case letters, digits and `-`, starting with a letter",
                self.name
            )));
        }
        let root = self.dir.join(&self.name);
        if root.exists() {
            return Err(CliError::usage(format!(
                "{} exists already: choose another name or --dir",
                root.display()
            )));
        }
        let chosen = if self.vendor_sdk {
            None
        } else {
            self.sdk.clone().or_else(checkout_sdk)
        };
        if self.lang == Language::Js {
            return self.new_js(&root, out);
        }
        if self.lang == Language::Python {
            return self.new_python(&root, out);
        }
        let sdk = match chosen {
            Some(sdk) => sdk
                .canonicalize()
                .map_err(|e| CliError::usage(format!("--sdk {}: {e}", sdk.display())))?,
            None => {
                // No checkout: the SDK this binary was built with, copied in.
                let vendored = root.join("clawcage-sdk");
                for (file, text) in SDK_FILES {
                    let text = text
                        .lines()
                        .filter(|line| !line.starts_with("workspace = "))
                        .collect::<Vec<_>>()
                        .join("\n");
                    write(&vendored, file, &(text + "\n"))?;
                }
                PathBuf::from("clawcage-sdk")
            }
        };
        let crate_name = self.name.replace('-', "_");
        write(&root, "Cargo.toml", &cargo_toml(&self.name, &sdk))?;
        self.write_agent(&root, Language::Rust, &crate_name, "/target\n/dist\n")?;
        let _ = writeln!(
            out,
            "created {} (Rust, {} template)\n\nnext:\n  cd {}\n  clawcage build\n  clawcage run agent.toml --event event.json\n  cargo test",
            root.display(),
            match self.template {
                Template::Hello => "hello",
                Template::ToolLoop => "tool-loop",
            },
            root.display()
        );
        Ok(())
    }
}

impl NewCommand {
    /// What every new project has: the template's files, the manifest (its
    /// component `dist/<component>.wasm`), the sample event, `.gitignore`.
    fn write_agent(
        &self,
        root: &Path,
        lang: Language,
        component: &str,
        ignore: &str,
    ) -> Result<(), CliError> {
        for (file, text) in template_files(lang, self.template) {
            write(root, file, text)?;
        }
        write(
            root,
            "agent.toml",
            &manifest(&self.name, component, self.template),
        )?;
        write(root, "event.json", event_json(self.template))?;
        write(root, ".gitignore", ignore)
    }

    /// A JavaScript project: the SDK module and the build script copied in,
    /// the WIT beside them, componentize-js pinned.
    fn new_js(&self, root: &Path, out: &mut dyn Write) -> Result<(), CliError> {
        let name = &self.name;
        write(
            root,
            "package.json",
            &format!(
                "{{\n  \"name\": \"{name}\",\n  \"version\": \"0.1.0\",\n  \"private\": true,\n  \"type\": \"module\",\n  \"scripts\": {{ \"test\": \"node --test\" }},\n  \"dependencies\": {{ \"@bytecodealliance/componentize-js\": \"{COMPONENTIZE_JS}\", \"@bytecodealliance/preview2-shim\": \"{PREVIEW2_SHIM}\", \"esbuild\": \"{ESBUILD}\" }}\n}}\n"
            ),
        )?;
        write(root, "clawcage.js", JS_SDK)?;
        write(root, "build.mjs", JS_BUILD)?;
        write(root, "wit/agent.wit", WIT)?;
        self.write_agent(root, Language::Js, name, "/node_modules\n/dist\n")?;
        let _ = writeln!(
            out,
            "created {} (JavaScript, componentize-js {COMPONENTIZE_JS})\n\nnext:\n  cd {}\n  clawcage build        # npm install, then componentize\n  clawcage run agent.toml --event event.json\n  npm test",
            root.display(),
            root.display()
        );
        Ok(())
    }

    /// A Python project: the SDK module in `src/` beside the agent, the
    /// WIT, componentize-py pinned in `requirements.txt`.
    fn new_python(&self, root: &Path, out: &mut dyn Write) -> Result<(), CliError> {
        let name = &self.name;
        write(
            root,
            "requirements.txt",
            &format!("componentize-py=={COMPONENTIZE_PY}\n"),
        )?;
        write(root, "src/clawcage.py", PY_SDK)?;
        write(root, "wit/agent.wit", WIT)?;
        self.write_agent(
            root,
            Language::Python,
            name,
            "/.venv\n/dist\n__pycache__/\n",
        )?;
        let _ = writeln!(
            out,
            "created {} (Python, componentize-py {COMPONENTIZE_PY})\n\nnext:\n  cd {}\n  clawcage build        # a .venv with componentize-py, then componentize\n  clawcage run agent.toml --event event.json\n  python3 -m unittest discover -s src",
            root.display(),
            root.display()
        );
        Ok(())
    }
}

/// A template's own files (its source and its test), by their place in the
/// project. They live under `templates/`, as the files they become.
fn template_files(lang: Language, template: Template) -> &'static [(&'static str, &'static str)] {
    match (lang, template) {
        (Language::Rust, Template::Hello) => {
            &[("src/lib.rs", include_str!("templates/rust/hello.rs"))]
        }
        (Language::Rust, Template::ToolLoop) => {
            &[("src/lib.rs", include_str!("templates/rust/tool_loop.rs"))]
        }
        (Language::Js, Template::Hello) => &[
            ("agent.js", include_str!("templates/js/hello/agent.js")),
            ("logic.js", include_str!("templates/js/hello/logic.js")),
            (
                "logic.test.js",
                include_str!("templates/js/hello/logic.test.js"),
            ),
        ],
        (Language::Js, Template::ToolLoop) => &[
            ("agent.js", include_str!("templates/js/tool_loop/agent.js")),
            ("logic.js", include_str!("templates/js/tool_loop/logic.js")),
            (
                "logic.test.js",
                include_str!("templates/js/tool_loop/logic.test.js"),
            ),
        ],
        (Language::Python, Template::Hello) => &[
            ("src/app.py", include_str!("templates/python/hello/app.py")),
            (
                "src/logic.py",
                include_str!("templates/python/hello/logic.py"),
            ),
            (
                "src/test_logic.py",
                include_str!("templates/python/hello/test_logic.py"),
            ),
        ],
        (Language::Python, Template::ToolLoop) => &[
            (
                "src/app.py",
                include_str!("templates/python/tool_loop/app.py"),
            ),
            (
                "src/logic.py",
                include_str!("templates/python/tool_loop/logic.py"),
            ),
            (
                "src/test_logic.py",
                include_str!("templates/python/tool_loop/test_logic.py"),
            ),
        ],
    }
}

/// The componentize-py release Python agents are built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

const PY_SDK: &str = include_str!("../../../guest-sdk/python/clawcage.py");

/// The componentize-js release JavaScript agents are built with.
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// The WASI shim componentize-js runs its splicer on: an optional peer
/// dependency of it that `npm ci` leaves out unless it is named.
pub const PREVIEW2_SHIM: &str = "0.25.0";

/// The esbuild release that bundles a JavaScript agent before
/// componentize-js (as guest-sdk/js/package.json pins it).
pub const ESBUILD: &str = "0.25.12";

const JS_SDK: &str = include_str!("../../../guest-sdk/js/clawcage.js");
const JS_BUILD: &str = include_str!("../../../guest-sdk/js/build.mjs");
const WIT: &str = include_str!("../../../guest-sdk/wit/agent.wit");

fn event_json(template: Template) -> &'static str {
    match template {
        Template::Hello => {
            "{\"source\": \"cli\", \"kind\": \"ask\", \"payload\": {\"prompt\": \"Say hello in five words.\"}}\n"
        }
        Template::ToolLoop => {
            "{\"source\": \"cli\", \"kind\": \"ask\", \"payload\": {\"prompt\": \"What is 19 plus 23?\"}}\n"
        }
    }
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A WebAssembly component for wasm32-wasip2 (`clawcage build`); rlib too, for
# `cargo test` of its logic on this machine.
crate-type = ["cdylib", "rlib"]

[dependencies]
clawcage-sdk = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# Small, fast agents: the host instantiates one per event.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A project of its own, even inside another workspace.
[workspace]
"#,
        sdk = sdk.display().to_string()
    )
}

fn manifest(name: &str, crate_name: &str, template: Template) -> String {
    let replies = match template {
        Template::Hello => {
            "[[models.default.replies]]\ntext = \"Hello from the mock model!\"\n".to_string()
        }
        Template::ToolLoop => "[[models.default.replies]]\n\
             text = \"Let me add those.\"\n\
             tool_calls = [{ name = \"add\", input = { a = 19, b = 23 } }]\n\n\
             [[models.default.replies]]\n\
             text = \"19 plus 23 is 42.\"\n"
            .to_string(),
    };
    format!(
        r#"# The agent's manifest: what it runs and what it may use.
name = "{name}"
description = "A new ClawCage agent."

# `clawcage build` puts the component here.
[component]
path = "dist/{crate_name}.wasm"

# The `mock` provider answers from the replies below: no key, no network.
# For a real model, run `clawcage init`, add a key with
# `clawcage key add anthropic-team --provider anthropic`, and write
#   provider = "anthropic"
#   model = "claude-haiku-4-5"
#   key = "anthropic-team"
[models.default]
provider = "mock"
model = "mock"

{replies}
[limits]
deadline_ms = 30000
"#
    )
}

impl BuildCommand {
    /// Runs the command.
    pub fn run(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let dir = &self.dir;
        if !dir.join("Cargo.toml").is_file() && dir.join("package.json").is_file() {
            return self.build_js(out);
        }
        if !dir.join("Cargo.toml").is_file() && dir.join("requirements.txt").is_file() {
            return self.build_python(out);
        }
        if !dir.join("Cargo.toml").is_file() {
            return Err(CliError::new(
                exit::MISSING_FILE,
                format!(
                    "{}: no Cargo.toml (a Rust agent project; `clawcage new` makes one)",
                    dir.display()
                ),
            ));
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(dir)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| CliError::new(exit::HOST, format!("running cargo: {e}")))?;
        if !output.status.success() {
            return Err(CliError::new(
                exit::AGENT_ERROR,
                "the build failed (see above; a missing target is installed with `rustup target add wasm32-wasip2`)",
            ));
        }
        // The component: the cdylib artifact cargo reports.
        let stdout = String::from_utf8_lossy(&output.stdout);
        let wasm = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact")
            .flat_map(|m| {
                m["filenames"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|f| f.as_str().map(PathBuf::from))
                    .collect::<Vec<_>>()
            })
            .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
            .ok_or_else(|| {
                CliError::new(
                    exit::NOT_A_COMPONENT,
                    "cargo built no .wasm: is the crate type `cdylib` ([lib] crate-type = [\"cdylib\"])?",
                )
            })?;
        let bytes = std::fs::read(&wasm)
            .map_err(|e| CliError::new(exit::MISSING_FILE, format!("{}: {e}", wasm.display())))?;
        check_component(&bytes)?;
        // Where the manifest expects it, whatever the target directory.
        let placed = match crate::Manifest::load(&dir.join("agent.toml")) {
            Ok(manifest) => match manifest.component.path {
                Some(path) => {
                    let to = dir.join(path);
                    if let Some(parent) = to.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| {
                            CliError::new(exit::MISSING_FILE, format!("{}: {e}", parent.display()))
                        })?;
                    }
                    std::fs::write(&to, &bytes).map_err(|e| {
                        CliError::new(exit::MISSING_FILE, format!("{}: {e}", to.display()))
                    })?;
                    to
                }
                None => wasm,
            },
            Err(_) => wasm,
        };
        let _ = writeln!(
            out,
            "built {} ({} KiB), a component of the clawcage:agent world",
            placed.display(),
            bytes.len().div_ceil(1024)
        );
        Ok(())
    }
}

impl BuildCommand {
    /// A Python project: a `.venv` with its requirements (componentize-py,
    /// and any library the agent uses, such as the SDK as a package) when
    /// there is none, then `componentize-py` on `src/app.py` into the
    /// manifest's component path. The venv's packages are on the module
    /// path (componentize-py reads `VIRTUAL_ENV`), and only what the agent
    /// imports goes into the component.
    fn build_python(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let dir = &self.dir;
        let target = component_target(dir)?;
        let needs = "Python agents need Python 3.10 or newer, with venv and pip";
        let venv = dir.join(".venv");
        let componentize = venv.join("bin/componentize-py");
        if !componentize.is_file() {
            step(dir, Path::new("python3"), &["-m", "venv", ".venv"], needs)?;
            step(
                dir,
                &venv.join("bin/pip"),
                &[
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                    "requirements.txt",
                ],
                needs,
            )?;
        }
        let target_text = target.to_string_lossy().to_string();
        if let Some(parent) = dir.join(&target).parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                CliError::new(exit::MISSING_FILE, format!("{}: {e}", parent.display()))
            })?;
        }
        let mut command = Command::new(&componentize);
        command.env("VIRTUAL_ENV", &venv).args([
            "-d",
            "wit",
            "-w",
            "agent",
            "componentize",
            "-p",
            "src",
            "app",
            "-o",
            &target_text,
        ]);
        run_step(dir, command, needs)?;
        finish_build(dir, &target, out)
    }

    /// A JavaScript or TypeScript project: `npm install` when there is no
    /// `node_modules` yet, then the build script (the project's
    /// `build.mjs`, or the SDK package's) on `agent.ts` or `agent.js`, with
    /// the project's `wit/` (or the SDK package's), into the manifest's
    /// component path.
    fn build_js(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let dir = &self.dir;
        let target = component_target(dir)?;
        let needs = "JavaScript agents need Node.js 20 or newer, with npm";
        let node = |program: &str, args: &[&str]| step(dir, Path::new(program), args, needs);
        if !dir.join("node_modules").is_dir() {
            node(
                "npm",
                &["install", "--no-audit", "--no-fund", "--loglevel=error"],
            )?;
        }
        let first = |candidates: &[&'static str]| {
            candidates
                .iter()
                .copied()
                .find(|c| dir.join(c).exists())
                .ok_or_else(|| {
                    CliError::new(
                        exit::MISSING_FILE,
                        format!(
                            "{}: none of {} (a JavaScript agent project; `clawcage new --lang js` makes one)",
                            dir.display(),
                            candidates.join(", ")
                        ),
                    )
                })
        };
        let script = first(&["build.mjs", "node_modules/@clawcage/sdk/build.mjs"])?;
        let entry = first(&["agent.ts", "agent.js"])?;
        let wit = first(&["wit", "node_modules/@clawcage/sdk/wit"])?;
        let target_text = target.to_string_lossy().to_string();
        node("node", &[script, entry, wit, &target_text])?;
        finish_build(dir, &target, out)
    }
}

/// Runs one build step in `dir`; `needs` says what to install when the
/// program is missing.
fn step(dir: &Path, program: &Path, args: &[&str], needs: &str) -> Result<(), CliError> {
    let mut command = Command::new(program);
    command.args(args);
    run_step(dir, command, needs)
}

/// Runs a prepared build step in `dir`, its output going to the user.
fn run_step(dir: &Path, mut command: Command, needs: &str) -> Result<(), CliError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let status = command
        .current_dir(dir)
        .status()
        .map_err(|e| CliError::new(exit::HOST, format!("running {program}: {e} ({needs})")))?;
    if status.success() {
        Ok(())
    } else {
        Err(CliError::new(
            exit::AGENT_ERROR,
            format!("{program} {} failed (see above)", args.join(" ")),
        ))
    }
}

/// Where the project's manifest puts its component.
fn component_target(dir: &Path) -> Result<PathBuf, CliError> {
    let manifest = crate::Manifest::load(&dir.join("agent.toml"))
        .map_err(|e| CliError::new(exit::BAD_MANIFEST, e.to_string()))?;
    manifest.component.path.ok_or_else(|| {
        CliError::new(
            exit::BAD_MANIFEST,
            "agent.toml: [component] path says where the component goes",
        )
    })
}

/// Checks the component a build wrote at `target` and says so.
fn finish_build(dir: &Path, target: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let placed = dir.join(target);
    let bytes = std::fs::read(&placed)
        .map_err(|e| CliError::new(exit::MISSING_FILE, format!("{}: {e}", placed.display())))?;
    check_component(&bytes)?;
    let _ = writeln!(
        out,
        "built {} ({} KiB), a component of the clawcage:agent world",
        placed.display(),
        bytes.len().div_ceil(1024)
    );
    Ok(())
}

/// Checks a built component: it exports the handler (with a hint when it
/// does not), and the engine accepts it against the `agent` world.
pub(crate) fn check_component(bytes: &[u8]) -> Result<(), CliError> {
    let interfaces = crate::registry::layout::interfaces(bytes)
        .map_err(|e| CliError::new(exit::NOT_A_COMPONENT, e))?;
    if !interfaces
        .exports
        .iter()
        .any(|e| e.starts_with("clawcage:agent/handler"))
    {
        return Err(CliError::new(
            exit::WRONG_WORLD,
            "the component exports no event handler: did you forget `#[handler]` on your handler function?",
        ));
    }
    // Compiled into `clawcage run`'s cache, so the first run does not
    // compile again.
    let options = crate::EngineOptions {
        cache_dir: super::run::default_cache_dir(),
        ..crate::EngineOptions::default()
    };
    let cage = crate::Cage::new(options).map_err(|e| CliError::new(exit::HOST, e.to_string()))?;
    cage.load_component("built", bytes, None)
        .map(drop)
        .map_err(|e| CliError::new(exit::WRONG_WORLD, e.to_string()))
}
