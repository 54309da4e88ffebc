//! The dashboard's frame and the pieces its pages share. Markup only: no
//! script, no inline style (the Content-Security-Policy forbids both),
//! every control labelled, every value escaped by maud.

use maud::{DOCTYPE, Markup, html};

use super::session::Session;

/// The sections of the dashboard, in the order of its navigation.
const SECTIONS: &[(&str, &str)] = &[
    ("/ui/", "Overview"),
    ("/ui/agents", "Agents"),
    ("/ui/usage", "Usage"),
    ("/ui/invocations", "Invocations"),
    ("/ui/audit", "Audit"),
    ("/ui/registry", "Registry"),
    ("/ui/keys", "BYOK keys"),
];

/// A Unix time as a UTC date and time, or a dash.
pub(super) fn when(seconds: Option<i64>) -> String {
    seconds
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || "—".into(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

/// An RFC 3339 time as the dashboard shows times.
pub(super) fn when_rfc3339(text: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(text).map_or_else(
        |_| text.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// Micro-dollars as dollars.
pub(super) fn dollars(micros: u64) -> String {
    if micros == 0 {
        "$0".into()
    } else if micros < 10_000 {
        format!("${:.6}", micros as f64 / 1e6)
    } else {
        format!("${:.2}", micros as f64 / 1e6)
    }
}

/// The hidden field every state-changing form carries.
pub(super) fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A page: the navigation (with the section `current` marked), the
/// signed-in token and sign-out, and `body` under an `h1`.
pub(super) fn page(title: &str, current: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ClawCage" }
                link rel="stylesheet" href="/ui/static/app.css";
            }
            body {
                a href="#main" class="skip" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        strong { "ClawCage" }
                        @if session.is_some() {
                            @for (href, label) in SECTIONS {
                                @if *label == current {
                                    a href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                    }
                    @if let Some(session) = session {
                        form method="post" action="/ui/logout" class="signout" {
                            (csrf(session))
                            span { (session.actor) " (" (session.scope.label()) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" { h1 { (title) } (body) }
            }
        }
    }
}

/// Sign-in: an API token (admin, or viewer for reading only).
pub(super) fn login(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        "",
        None,
        html! {
            @if let Some(error) = error { p role="alert" class="error" { (error) } }
            form method="post" action="/ui/login" {
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" required;
                p class="hint" { "An admin token, or a viewer token to read only. It opens a session and is not kept in the browser." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A message after a refused or failed request, with a way back.
pub(super) fn message(title: &str, text: &str, back: &str) -> Markup {
    page(
        title,
        "",
        None,
        html! { p role="alert" class="error" { (text) } p { a href=(back) { "Back" } } },
    )
}

/// A horizontal bar of `used` and `held` against `limit`, with its numbers
/// in words beside it (the bar is decoration for what the text says).
pub(super) fn budget_bar(
    label: &str,
    used: u64,
    held: u64,
    limit: Option<u64>,
    show: fn(u64) -> String,
) -> Markup {
    const WIDTH: u64 = 200;
    let text = match limit {
        Some(limit) => format!(
            "{} used, {} held, of {} ({}%)",
            show(used),
            show(held),
            show(limit),
            (used.saturating_add(held)).saturating_mul(100) / limit.max(1)
        ),
        None => format!("{} used, {} held, no limit", show(used), show(held)),
    };
    let scale = limit.unwrap_or(0).max(used.saturating_add(held)).max(1);
    let used_width = used.saturating_mul(WIDTH) / scale;
    let held_width = held.saturating_mul(WIDTH) / scale;
    html! {
        div class="budget" {
            span class="budget-label" { (label) }
            @if limit.is_some() {
                svg width=(WIDTH) height="12" viewBox={ "0 0 " (WIDTH) " 12" } aria-hidden="true" focusable="false" {
                    rect class="bar-track" x="0" y="0" width=(WIDTH) height="12" {}
                    rect class="bar-used" x="0" y="0" width=(used_width) height="12" {}
                    rect class="bar-held" x=(used_width) y="0" width=(held_width) height="12" {}
                }
            }
            span { (text) }
        }
    }
}

/// One series of a bar chart: a value a day.
pub(super) struct Series<'a> {
    /// The chart's title.
    pub title: &'a str,
    /// What its values are, for the description.
    pub unit: &'a str,
    /// Days (`YYYY-MM-DD`) and their values, oldest first.
    pub days: &'a [(String, u64)],
    /// How a value is written.
    pub show: fn(u64) -> String,
}

/// An accessible SVG bar chart of a value per day: a title and a
/// description for screen readers, a `title` per bar, and the same data as
/// a table beside it.
pub(super) fn day_chart(id: &str, series: &Series<'_>) -> Markup {
    const HEIGHT: u64 = 120;
    const BAR: usize = 14;
    let max = series.days.iter().map(|(_, v)| *v).max().unwrap_or(0);
    let total: u64 = series.days.iter().map(|(_, v)| *v).sum();
    let width = series.days.len().max(1) * BAR;
    let first = series.days.first().map_or("", |(d, _)| d.as_str());
    let last = series.days.last().map_or("", |(d, _)| d.as_str());
    html! {
        figure class="chart" {
            svg id=(id) role="img" width=(width) height=(HEIGHT + 2) viewBox={ "0 0 " (width) " " (HEIGHT + 2) }
                aria-labelledby={ (id) "-title " (id) "-desc" } {
                title id={ (id) "-title" } { (series.title) }
                desc id={ (id) "-desc" } {
                    (series.unit) " a day from " (first) " to " (last) ": " ((series.show)(total)) " in all, at most " ((series.show)(max)) " in a day."
                }
                line class="axis" x1="0" y1=(HEIGHT + 1) x2=(width) y2=(HEIGHT + 1) {}
                @for (i, (day, value)) in series.days.iter().enumerate() {
                    @let h = value.saturating_mul(HEIGHT).checked_div(max).unwrap_or(0).max(u64::from(*value > 0));
                    rect class="bar" x=(i * BAR + 1) y=(HEIGHT - h) width=(BAR - 2) height=(h) {
                        title { (day) ": " ((series.show)(*value)) }
                    }
                }
            }
            figcaption { (series.title) ", " (first) " to " (last) " (UTC)" }
            details {
                summary { "The chart's numbers" }
                table {
                    thead { tr { th scope="col" { "Day" } th scope="col" { (series.unit) } } }
                    tbody {
                        @for (day, value) in series.days.iter().rev() {
                            tr { td { (day) } td class="num" { ((series.show)(*value)) } }
                        }
                    }
                }
            }
        }
    }
}
