//! The registry: repositories, versions, digests and the signers their
//! signatures name; the trust policy per namespace, whose changes go
//! through a confirmation that says which deployed agents they affect; and
//! deploying a version to an agent.

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::agents::short;
use super::pages::{csrf, page};
use super::session::Session;
use super::{SignedIn, Ui, blocking, done, failed, html as respond, refusal};
use crate::daemon::AgentInfo;
use crate::daemon::trust::TrustChange;
use crate::registry::RepositoryInfo;
use crate::registry::signing::TrustPolicy;

/// What the registry page shows.
struct Listing {
    repositories: Vec<RepositoryInfo>,
    policy: Result<TrustPolicy, String>,
    agents: Vec<AgentInfo>,
}

pub(super) async fn registry(State(ui): State<Ui>, axum::Extension(session): SignedIn) -> Response {
    let daemon = ui.daemon.clone();
    let listing = blocking(move || Listing {
        repositories: daemon.registry().map(|r| r.catalog()).unwrap_or_default(),
        policy: TrustPolicy::load(&daemon.trust_policy_path()),
        agents: daemon.list(),
    })
    .await;
    match listing {
        Ok(listing) => respond(markup(&session, &listing)),
        Err(response) => response,
    }
}

fn markup(session: &Session, listing: &Listing) -> Markup {
    let admin = session.may_change();
    let empty = TrustPolicy::default();
    let policy = listing.policy.as_ref().unwrap_or(&empty);
    page(
        "Registry",
        "Registry",
        Some(session),
        html! {
            section aria-labelledby="repositories" {
                h2 id="repositories" { "Repositories" }
                @if listing.repositories.is_empty() { p { "Nothing pushed yet. Publish with " code { "clawcage push" } "." } }
                @for repository in &listing.repositories {
                    @let namespace = repository.name.split('/').next().unwrap_or_default();
                    h3 { (repository.name) }
                    @if repository.more_versions > 0 { p class="hint" { (repository.more_versions) " older tags not shown." } }
                    table {
                        thead { tr {
                            th scope="col" { "Version" } th scope="col" { "Digest" } th scope="col" { "Signed by" }
                            @if admin && !listing.agents.is_empty() { th scope="col" { "Deploy" } }
                        } }
                        tbody {
                            @for version in repository.versions.iter().rev() {
                                @let reference = format!("{}@{}", repository.name, version.tag);
                                @let field = format!("deploy-{}-{}", repository.name.replace('/', "-"), version.tag);
                                tr {
                                    th scope="row" { (version.tag) }
                                    td { code title=(version.digest) { (short(&version.digest)) } }
                                    td {
                                        @if version.signers.is_empty() { "unsigned" }
                                        @for signer in &version.signers {
                                            code title=(signer) { (short(signer)) }
                                            @if policy.trusts(&repository.name, signer) { " (trusted)" } @else { " (not trusted for " (namespace) ")" }
                                            br;
                                        }
                                    }
                                    @if admin && !listing.agents.is_empty() {
                                        td {
                                            form method="post" action="/ui/registry/deploy" {
                                                (csrf(session))
                                                input type="hidden" name="reference" value=(reference);
                                                label for=(field) { "Deploy " (reference) " to" }
                                                select id=(field) name="agent" {
                                                    @for agent in &listing.agents { option value=(agent.name) { (agent.name) } }
                                                }
                                                button type="submit" { "Deploy" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="trust" {
                h2 id="trust" { "Trust policy" }
                @if let Err(e) = &listing.policy { p role="alert" class="error" { "The policy cannot be read: " (e) } }
                p { "Deny by default: a namespace not listed trusts nobody. A change takes effect at once: agents whose publisher is no longer trusted stop." }
                @if policy.namespaces.is_empty() { p { "No namespace is trusted." } } @else {
                    table {
                        thead { tr { th scope="col" { "Namespace" } th scope="col" { "Trusted keys" } th scope="col" { "Unsigned" } } }
                        tbody {
                            @for (namespace, trust) in &policy.namespaces {
                                tr {
                                    th scope="row" { (namespace) }
                                    td { @if trust.keys.is_empty() { "none" } @for key in &trust.keys { code title=(key) { (short(key)) } br; } }
                                    td { @if trust.allow_unsigned { span class="warn" { "allowed" } } @else { "refused" } }
                                }
                            }
                        }
                    }
                }
                @if admin {
                    form method="post" action="/ui/registry/trust" {
                        (csrf(session))
                        h3 { "Change the policy" }
                        label for="change" { "Change" }
                        select id="change" name="change" {
                            option value="add" { "trust a publisher key" }
                            option value="remove" { "stop trusting a publisher key" }
                            option value="allow-unsigned" { "allow unsigned components" }
                            option value="deny-unsigned" { "refuse unsigned components" }
                        }
                        label for="namespace" { "Namespace" }
                        input id="namespace" name="namespace" required maxlength="64" pattern="[a-z0-9._\\-]+";
                        label for="key" { "Public key (64 hex digits; for trust and stop trusting)" }
                        input id="key" name="key" maxlength="64" pattern="[0-9a-fA-F]{64}";
                        p class="hint" { "You will be asked to confirm, with the agents it affects." }
                        button type="submit" { "Review the change" }
                    }
                }
            }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct TrustForm {
    csrf: String,
    change: String,
    namespace: String,
    #[serde(default)]
    key: String,
    /// Set by the confirmation page's form.
    #[serde(default)]
    confirmed: String,
}

impl TrustForm {
    fn change(&self) -> Result<TrustChange, String> {
        let namespace = self.namespace.trim().to_string();
        let key = self.key.trim().to_string();
        let needs_key = || {
            if key.is_empty() {
                Err("give the publisher's public key".to_string())
            } else {
                Ok(key.clone())
            }
        };
        Ok(match self.change.as_str() {
            "add" => TrustChange::Add {
                namespace,
                key: needs_key()?,
            },
            "remove" => TrustChange::Remove {
                namespace,
                key: needs_key()?,
            },
            "allow-unsigned" => TrustChange::AllowUnsigned { namespace },
            "deny-unsigned" => TrustChange::DenyUnsigned { namespace },
            other => return Err(format!("{other:?} is not a change")),
        })
    }
}

/// The deployed agents a change stops: those from the namespace signed by
/// the key no longer trusted, or unsigned when unsigned ones are refused.
fn stopped_by(change: &TrustChange, agents: &[AgentInfo]) -> Vec<String> {
    agents
        .iter()
        .filter(|agent| {
            let Some(origin) = &agent.origin else {
                return false;
            };
            let namespace = origin.reference.split('/').next().unwrap_or_default();
            if namespace != change.namespace() {
                return false;
            }
            match change {
                TrustChange::Remove { key, .. } => origin
                    .signer
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(key)),
                TrustChange::DenyUnsigned { .. } => origin.signer.is_none(),
                TrustChange::Add { .. } | TrustChange::AllowUnsigned { .. } => false,
            }
        })
        .map(|agent| agent.name.clone())
        .collect()
}

fn describe(change: &TrustChange) -> String {
    match change {
        TrustChange::Add { namespace, key } => {
            format!("Trust key {key} to publish in namespace {namespace}.")
        }
        TrustChange::Remove { namespace, key } => {
            format!("Stop trusting key {key} in namespace {namespace}.")
        }
        TrustChange::AllowUnsigned { namespace } => {
            format!("Allow unsigned components from namespace {namespace}.")
        }
        TrustChange::DenyUnsigned { namespace } => {
            format!("Refuse unsigned components from namespace {namespace}.")
        }
    }
}

/// A trust change: first a confirmation page naming the agents it stops,
/// then, confirmed, the change (audited) and its enforcement at once.
pub(super) async fn change_trust(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Form(form): Form<TrustForm>,
) -> Response {
    if let Some(refusal) = refusal(&session, &form.csrf) {
        return refusal;
    }
    let change = match form.change() {
        Ok(change) => change,
        Err(e) => return failed(StatusCode::BAD_REQUEST, &e, "/ui/registry"),
    };
    if form.confirmed != "yes" {
        let stopped = stopped_by(&change, &ui.daemon.list());
        return respond(page(
            "Confirm the trust change",
            "Registry",
            Some(&session),
            html! {
                p { strong { (describe(&change)) } }
                @if stopped.is_empty() { p { "No deployed agent stops." } }
                @else { p class="warn" { "These agents stop at once: " (stopped.join(", ")) "." } }
                form method="post" action="/ui/registry/trust" {
                    (csrf(&session))
                    input type="hidden" name="change" value=(form.change);
                    input type="hidden" name="namespace" value=(form.namespace);
                    input type="hidden" name="key" value=(form.key);
                    input type="hidden" name="confirmed" value="yes";
                    button type="submit" class="danger" { "Confirm" }
                }
                p { a href="/ui/registry" { "Cancel" } }
            },
        ));
    }
    let result = blocking(move || {
        let daemon = &ui.daemon;
        crate::daemon::trust::change_trust(
            &daemon.trust_policy_path(),
            &change,
            &daemon.audit,
            &session.actor,
        )
        .map(|_| {
            // In effect now, not at the watcher's next look.
            daemon.enforce_trust();
        })
        .map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(result) => done(result, "/ui/registry"),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
pub(super) struct DeployForm {
    csrf: String,
    agent: String,
    reference: String,
}

pub(super) async fn deploy(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Form(form): Form<DeployForm>,
) -> Response {
    let to = format!("/ui/agents/{}", form.agent);
    let actor = session.actor.clone();
    super::change(&session, &form.csrf, &to, move || {
        ui.daemon
            .deploy_version(&form.agent, &form.reference, &actor)
            .map(drop)
    })
    .await
}
