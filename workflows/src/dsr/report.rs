//! The access report: what was found about the subject, where, and what could not be
//! searched; stored as JSON (sealed when keys are configured) and rendered for people as
//! HTML or Markdown by `cairn dsr export`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Kind, Subject};

/// One lookup's account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LookupLog {
    /// The source searched.
    pub source: String,
    /// Its stream.
    pub stream: String,
    /// What it searched by: `email` or `id`.
    pub by: String,
    /// Pages read.
    pub pages: u64,
    /// Records kept (holding the identifier).
    pub found: usize,
    /// Records the vendor answered that did not hold it.
    pub rejected: usize,
    /// Why it could not finish; the report is then incomplete.
    pub error: Option<String>,
}

/// A record found, before findings of the same record are merged.
#[derive(Debug)]
pub struct Finding {
    source: String,
    stream: String,
    id: String,
    record: Box<RawValue>,
    at_vendor: bool,
}

impl Finding {
    /// A record a vendor's lookup answered.
    pub fn vendor(source: &str, stream: &str, id: String, record: Box<RawValue>) -> Self {
        Self {
            source: source.to_owned(),
            stream: stream.to_owned(),
            id,
            record,
            at_vendor: true,
        }
    }

    /// A warehouse row.
    pub fn warehouse(source: &str, stream: &str, id: String, record: Box<RawValue>) -> Self {
        Self {
            at_vendor: false,
            ..Self::vendor(source, stream, id, record)
        }
    }
}

/// One of the subject's records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportRecord {
    /// The source.
    pub source: String,
    /// The stream.
    pub stream: String,
    /// The record's id there.
    pub id: String,
    /// Found at the vendor.
    pub at_vendor: bool,
    /// Found in the warehouse.
    pub in_warehouse: bool,
    /// The record's fields: the vendor's version where it answered, else the warehouse's.
    pub fields: Box<RawValue>,
}

/// The report of one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The request.
    pub request: String,
    /// Access or erasure.
    pub kind: Kind,
    /// When it was compiled.
    pub compiled_at: chrono::DateTime<chrono::Utc>,
    /// The person.
    pub subject: Subject,
    /// Every lookup, with its pages and outcome.
    pub lookups: Vec<LookupLog>,
    /// Every record found, by source, stream and id.
    pub records: Vec<ReportRecord>,
}

impl Report {
    /// Merges `findings` (a record found at the vendor and in the warehouse is one
    /// record) into a report, ordered by source, stream and id.
    pub fn compile(
        request: &str,
        kind: Kind,
        subject: &Subject,
        lookups: Vec<LookupLog>,
        findings: Vec<Finding>,
    ) -> Self {
        let mut merged: BTreeMap<(String, String, String), ReportRecord> = BTreeMap::new();
        for finding in findings {
            let key = (
                finding.source.clone(),
                finding.stream.clone(),
                finding.id.clone(),
            );
            match merged.get_mut(&key) {
                Some(known) => {
                    if finding.at_vendor {
                        known.at_vendor = true;
                        known.fields = finding.record;
                    } else {
                        known.in_warehouse = true;
                    }
                }
                None => {
                    merged.insert(
                        key,
                        ReportRecord {
                            source: finding.source,
                            stream: finding.stream,
                            id: finding.id,
                            at_vendor: finding.at_vendor,
                            in_warehouse: !finding.at_vendor,
                            fields: finding.record,
                        },
                    );
                }
            }
        }
        Self {
            request: request.to_owned(),
            kind,
            compiled_at: chrono::Utc::now(),
            subject: subject.clone(),
            lookups,
            records: merged.into_values().collect(),
        }
    }

    /// Whether every lookup finished.
    pub fn complete(&self) -> bool {
        self.lookups.iter().all(|lookup| lookup.error.is_none())
    }

    /// The report as Markdown, for a person to read.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# Data access report {}\n\nCompiled {} for {} ({} request).\n\n",
            md(&self.request),
            self.compiled_at.to_rfc3339(),
            md(&self.subject.email),
            self.kind.as_str()
        );
        if !self.complete() {
            out.push_str("**Incomplete:** some sources could not be searched (see Searches).\n\n");
        }
        out.push_str(&format!("## Records ({})\n\n", self.records.len()));
        for record in &self.records {
            out.push_str(&format!(
                "### {} / {} / {}\n\n{}\n\n| field | value |\n| --- | --- |\n",
                md(&record.source),
                md(&record.stream),
                md(&record.id),
                where_found(record)
            ));
            for (field, value) in fields(record) {
                out.push_str(&format!("| {} | {} |\n", md(&field), md(&value)));
            }
            out.push('\n');
        }
        out.push_str("## Searches\n\n| source | stream | by | pages | found | outcome |\n| --- | --- | --- | --- | --- | --- |\n");
        for lookup in &self.lookups {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                md(&lookup.source),
                md(&lookup.stream),
                lookup.by,
                lookup.pages,
                lookup.found,
                md(lookup.error.as_deref().unwrap_or("complete"))
            ));
        }
        out
    }

    /// The report as a standalone HTML page, every value escaped.
    pub fn html(&self) -> String {
        let mut out = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Data access report {id}</title>\
             <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}\
             table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left}}</style>\
             </head><body>\n<h1>Data access report {id}</h1>\n<p>Compiled {at} for {email} ({kind} request).</p>\n",
            id = html(&self.request),
            at = html(&self.compiled_at.to_rfc3339()),
            email = html(&self.subject.email),
            kind = self.kind.as_str()
        );
        if !self.complete() {
            out.push_str("<p><strong>Incomplete:</strong> some sources could not be searched (see Searches).</p>\n");
        }
        out.push_str(&format!("<h2>Records ({})</h2>\n", self.records.len()));
        for record in &self.records {
            out.push_str(&format!(
                "<h3>{} / {} / {}</h3>\n<p>{}</p>\n<table><tr><th>field</th><th>value</th></tr>\n",
                html(&record.source),
                html(&record.stream),
                html(&record.id),
                where_found(record)
            ));
            for (field, value) in fields(record) {
                out.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td></tr>\n",
                    html(&field),
                    html(&value)
                ));
            }
            out.push_str("</table>\n");
        }
        out.push_str("<h2>Searches</h2>\n<table><tr><th>source</th><th>stream</th><th>by</th><th>pages</th><th>found</th><th>outcome</th></tr>\n");
        for lookup in &self.lookups {
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                html(&lookup.source),
                html(&lookup.stream),
                html(&lookup.by),
                lookup.pages,
                lookup.found,
                html(lookup.error.as_deref().unwrap_or("complete"))
            ));
        }
        out.push_str("</table>\n</body></html>\n");
        out
    }
}

fn where_found(record: &ReportRecord) -> &'static str {
    match (record.at_vendor, record.in_warehouse) {
        (true, true) => "Held by the vendor and in our warehouse.",
        (true, false) => "Held by the vendor.",
        _ => "Held in our warehouse.",
    }
}

/// A record's top-level fields as text, in order.
fn fields(record: &ReportRecord) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Map<String, Value>>(record.fields.get()) {
        Ok(map) => map
            .into_iter()
            .map(|(field, value)| {
                let text = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                (field, text)
            })
            .collect(),
        Err(_) => vec![(String::new(), record.fields.get().to_owned())],
    }
}

/// Text safe inside HTML elements and attributes.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Text safe in a Markdown table cell or heading: markup characters escaped, HTML
/// escaped, line breaks flattened.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in html(text).chars() {
        match c {
            '|' | '*' | '_' | '`' | '[' | ']' | '#' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::{Finding, Report};
    use crate::dsr::{Kind, Subject};

    #[test]
    fn a_record_found_twice_is_one_and_hostile_values_are_escaped() {
        let raw = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        let subject = Subject {
            email: "ada@example.com".to_owned(),
            ids: Vec::new(),
        };
        let report = Report::compile(
            "dsr_1",
            Kind::Access,
            &subject,
            Vec::new(),
            vec![
                Finding::warehouse("crm", "contacts", "7".into(), raw(r#"{"old":1}"#)),
                Finding::vendor(
                    "crm",
                    "contacts",
                    "7".into(),
                    raw(r#"{"<script>alert(1)</script>":"a|b","n":2}"#),
                ),
            ],
        );
        assert_eq!(report.records.len(), 1);
        assert!(report.records[0].at_vendor && report.records[0].in_warehouse);
        let html = report.html();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        let markdown = report.markdown();
        assert!(
            markdown.contains("a\\|b") && !markdown.contains("<script>"),
            "{markdown}"
        );
    }
}
