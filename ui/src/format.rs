//! How times, durations and stored JSON are shown.

use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde_json::Value;

/// JSON shown on a page is cut at this many bytes: a run's input may be large.
const SHOWN_JSON_BYTES: usize = 4096;

/// `12 s ago`, `in 3 min`, with the exact instant on hover.
pub(crate) fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let secs = (now - at).num_milliseconds() as f64 / 1000.0;
    let text = if secs >= 0.0 {
        format!("{} ago", span(secs))
    } else {
        format!("in {}", span(-secs))
    };
    html! { time datetime=(at.to_rfc3339()) title=(at.to_rfc3339()) { (text) } }
}

/// [`when`] for an instant that may be missing.
pub(crate) fn maybe_when(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    match at {
        Some(at) => when(at, now),
        None => html! { span.none { "—" } },
    }
}

/// A length of time in the unit that reads best.
pub(crate) fn span(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        format!("{:.1} min", secs / 60.0)
    } else if secs < 86_400.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} d", secs / 86_400.0)
    }
}

/// Stored JSON (a run's input, output or error), with any registered secret masked,
/// pretty-printed and cut at [`SHOWN_JSON_BYTES`].
pub(crate) fn json(value: &Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let text = cairn_runner::redact::redact(&text);
    html! { pre.json { (cut(&text, SHOWN_JSON_BYTES)) } }
}

/// `text` cut at `max` bytes (on a character boundary), saying so.
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// Free text from a vendor or an error, masked and bounded.
pub(crate) fn text(message: &str) -> String {
    cut(&cairn_runner::redact::redact(message), 2000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_in_the_right_unit() {
        assert_eq!(span(0.0123), "12 ms");
        assert_eq!(span(12.34), "12.3 s");
        assert_eq!(span(150.0), "2.5 min");
        assert_eq!(span(7200.0), "2.0 h");
        assert_eq!(span(172_800.0), "2.0 d");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(10);
        let shown = cut(&text, 5);
        assert!(shown.starts_with("éé…"), "{shown}");
        assert!(shown.ends_with("(20 bytes in all)"));
    }
}
