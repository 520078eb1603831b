//! The page every view is drawn in: navigation, sign-in state, the live indicator.

use maud::{DOCTYPE, Markup, html};

use crate::auth::Viewer;

/// Which section a page belongs to, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Runs,
    Schedules,
    Budgets,
    DeadLetters,
    Quarantine,
    Alerts,
    Syncs,
    None,
}

const SECTIONS: [(Nav, &str, &str); 7] = [
    (Nav::Runs, "/runs", "Runs"),
    (Nav::Syncs, "/syncs", "Syncs"),
    (Nav::Schedules, "/schedules", "Schedules"),
    (Nav::Budgets, "/budgets", "Rate budgets"),
    (Nav::DeadLetters, "/dead-letters", "Dead letters"),
    (Nav::Quarantine, "/quarantine", "Quarantine"),
    (Nav::Alerts, "/alerts", "Alerts"),
];

/// A whole page. The part of `body` inside `div#live` is redrawn whenever the database
/// changes; what is outside it (filters being typed into) stays put.
pub(crate) fn page(title: &str, nav: Nav, viewer: &Viewer, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cairn" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/runs" { "cairn" }
                    nav {
                        @for (section, href, label) in SECTIONS {
                            @if section == nav {
                                a href=(href) aria-current="page" { (label) }
                            } @else {
                                a href=(href) { (label) }
                            }
                        }
                    }
                    span #live-state .live title="Redrawn when the database changes" { "live" }
                    (session(viewer))
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn session(viewer: &Viewer) -> Markup {
    match viewer {
        Viewer::Off => {
            html! { span.session title="Start with CAIRN_UI_TOKEN to enable actions" { "read-only" } }
        }
        Viewer::Anonymous => html! { a.session href="/login" { "Sign in" } },
        Viewer::Signed { .. } => html! {
            form.session method="post" action="/logout" { button type="submit" { "Sign out" } }
        },
    }
}

/// A button that posts to `action`, or a note of why it cannot be used.
pub(crate) fn action(viewer: &Viewer, action: &str, label: &str) -> Markup {
    match viewer {
        Viewer::Signed { csrf } => html! {
            form.action method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" { (label) }
            }
        },
        Viewer::Anonymous => html! {
            a.action-off href="/login" title="Sign in to act" { (label) " (sign in)" }
        },
        Viewer::Off => html! {
            span.action-off title="Start the dashboard with CAIRN_UI_TOKEN to enable actions" { (label) " (off)" }
        },
    }
}

/// A run's or step's status as a coloured word.
pub(crate) fn status(status: &str) -> Markup {
    html! { span class={ "status s-" (status) } { (status) } }
}
