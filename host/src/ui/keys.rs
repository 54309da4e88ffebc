//! BYOK settings: the vault's keys (never their values), the agents that
//! use each, and forms to add, rotate, revoke and delete. A value typed
//! into a form goes to the vault and nowhere else: never rendered back,
//! logged, audited or cached (every response is `no-store`).

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{csrf, page, when};
use super::session::Session;
use super::{Csrf, SignedIn, Ui, blocking, html as respond};
use crate::secret::Secret;
use crate::vault::KeyInfo;

/// A key as listed: what the vault says, when a call last used it, and
/// the agents whose bindings or tool grants name it.
struct KeyRow {
    info: KeyInfo,
    last_used: Option<i64>,
    used_by: Vec<String>,
}

pub(super) async fn keys(State(ui): State<Ui>, axum::Extension(session): SignedIn) -> Response {
    let rows = blocking(move || {
        let keys = ui.daemon.services.vault.list().unwrap_or_default();
        // Which agents use which key, as in effect (overrides included).
        let mut used_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for agent in ui.daemon.list() {
            if let Some(deployed) = ui.daemon.agent(&agent.name) {
                let model_keys = deployed
                    .manifest
                    .models
                    .values()
                    .filter_map(|m| m.key.clone());
                let tool_keys = deployed
                    .manifest
                    .tools
                    .values()
                    .filter_map(|t| t.credential.clone());
                for key in model_keys.chain(tool_keys) {
                    used_by.entry(key).or_default().push(agent.name.clone());
                }
            }
        }
        keys.into_iter()
            .map(|info| {
                let mut agents = used_by.remove(&info.id).unwrap_or_default();
                agents.dedup();
                KeyRow {
                    last_used: ui
                        .daemon
                        .services
                        .ledger
                        .key_last_used(&info.id)
                        .ok()
                        .flatten(),
                    used_by: agents,
                    info,
                }
            })
            .collect::<Vec<_>>()
    })
    .await;
    match rows {
        Ok(rows) => respond(markup(&session, &rows)),
        Err(response) => response,
    }
}

fn markup(session: &Session, keys: &[KeyRow]) -> Markup {
    let admin = session.may_change();
    page(
        "BYOK keys",
        "BYOK keys",
        Some(session),
        html! {
            p { "Keys are encrypted at rest; their values are never shown again. Revoking one stops every call that uses it at once." }
            @if keys.is_empty() { p { "No key yet." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "Id" } th scope="col" { "Provider" } th scope="col" { "Fingerprint" }
                        th scope="col" { "Created" } th scope="col" { "Rotated" } th scope="col" { "Last used" }
                        th scope="col" { "Status" } th scope="col" { "Used by" }
                        @if admin { th scope="col" { "Change" } }
                    } }
                    tbody {
                        @for row in keys {
                            @let key = &row.info;
                            @let agents = row.used_by.join(", ");
                            tr {
                                td { (key.id) }
                                td { (key.provider) }
                                td { code { (key.fingerprint) } }
                                td { (when(Some(key.created_at))) }
                                td { (when(key.rotated_at)) }
                                td { (when(row.last_used)) }
                                td { @if key.revoked_at.is_some() { "revoked " (when(key.revoked_at)) } @else { "active" } }
                                td { @if agents.is_empty() { "—" } @else { (agents) } }
                                @if admin {
                                    td {
                                        @if key.revoked_at.is_none() {
                                            form method="post" action={ "/ui/keys/" (key.id) "/rotate" } {
                                                (csrf(session))
                                                label for={ "rotate-" (key.id) } { "New value for " (key.id) }
                                                input id={ "rotate-" (key.id) } name="secret" type="password" autocomplete="off" required;
                                                button type="submit" { "Rotate" }
                                            }
                                            form method="post" action={ "/ui/keys/" (key.id) "/revoke" } {
                                                (csrf(session))
                                                @if agents.is_empty() {
                                                    p class="hint" { "No agent uses it." }
                                                } @else {
                                                    p class="hint" { "Revoking stops " (agents) " from using it at once." }
                                                }
                                                button type="submit" class="danger" { "Revoke " (key.id) }
                                            }
                                        } @else {
                                            form method="post" action={ "/ui/keys/" (key.id) "/delete" } {
                                                (csrf(session))
                                                button type="submit" class="danger" { "Delete " (key.id) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if admin {
                section aria-labelledby="add" {
                    h2 id="add" { "Add a key" }
                    form method="post" action="/ui/keys" {
                        (csrf(session))
                        label for="id" { "Id" }
                        input id="id" name="id" required pattern="[A-Za-z0-9._\\-]{1,64}";
                        label for="provider" { "Provider" }
                        select id="provider" name="provider" {
                            @for provider in crate::vault::PROVIDERS { option value=(provider) { (provider) } }
                        }
                        label for="secret" { "Value" }
                        input id="secret" name="secret" type="password" autocomplete="off" required;
                        p class="hint" { "Sent once, encrypted into the vault, never shown again." }
                        button type="submit" { "Add" }
                    }
                }
            }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct NewKey {
    csrf: String,
    id: String,
    provider: String,
    secret: Secret,
}

#[derive(Deserialize)]
pub(super) struct NewSecret {
    csrf: String,
    secret: Secret,
}

/// A key change from a form, through the vault (on the record), and back
/// to the keys page.
async fn key_change(
    ui: Ui,
    session: Session,
    csrf: &str,
    change: &'static str,
    apply: impl FnOnce(&crate::vault::Vault) -> Result<KeyInfo, crate::vault::VaultError>
    + Send
    + 'static,
) -> Response {
    let actor = session.actor.clone();
    super::change(&session, csrf, "/ui/keys", move || {
        ui.daemon.change_key(change, &actor, apply).map(drop)
    })
    .await
}

pub(super) async fn add_key(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Form(form): Form<NewKey>,
) -> Response {
    let NewKey {
        csrf,
        id,
        provider,
        secret,
    } = form;
    key_change(ui, session, &csrf, "add", move |vault| {
        vault.add(&id, &provider, &secret)
    })
    .await
}

pub(super) async fn rotate_key(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path(id): Path<String>,
    Form(form): Form<NewSecret>,
) -> Response {
    let NewSecret { csrf, secret } = form;
    key_change(ui, session, &csrf, "rotate", move |vault| {
        vault.rotate(&id, &secret)
    })
    .await
}

pub(super) async fn revoke_key(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path(id): Path<String>,
    Form(form): Form<Csrf>,
) -> Response {
    key_change(ui, session, &form.csrf, "revoke", move |vault| {
        vault.revoke(&id)
    })
    .await
}

pub(super) async fn delete_key(
    State(ui): State<Ui>,
    axum::Extension(session): SignedIn,
    Path(id): Path<String>,
    Form(form): Form<Csrf>,
) -> Response {
    key_change(ui, session, &form.csrf, "delete", move |vault| {
        vault.delete(&id)
    })
    .await
}
