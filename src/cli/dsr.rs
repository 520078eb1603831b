//! `cairn dsr`: privacy requests. `open` starts one (its search, report and legal
//! clock run as durable workflows on the workers), `list` and `show` say where they
//! stand against their deadlines, `extend` moves a deadline with a recorded reason,
//! `export` writes a request's report, and `audit verify` recomputes the audit chain.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_runner::seal::Sealer;
use cairn_workflows::dsr::metrics::{self, MetricsError};
use cairn_workflows::dsr::report::Report;
use cairn_workflows::dsr::request::{self, DEFAULT_ALERTS, DsrError, OpenRequest};
use cairn_workflows::dsr::{AuditKey, Kind, Regulation, RequestSource, Subject, audit};
use chrono::TimeDelta;

use super::{Failure, Outcome, connect, print};

/// The subcommands of `cairn dsr`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DsrCommand {
    /// Open a request and print its id: the person's records are searched in every
    /// source (their lookups and the warehouse), a report is compiled and, for an
    /// erasure, the records are erased, ahead of other runs.
    Open(OpenArgs),
    /// Requests with their phase, deadline and time left, nearest deadline first.
    List {
        /// Only open requests past their deadline.
        #[arg(long)]
        overdue: bool,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// One request: phase, deadline, time left, extensions, progress, findings.
    Show {
        /// The request's id (`dsr_...`).
        id: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Extend a request's deadline, within what its regulation allows.
    Extend {
        /// The request's id.
        id: String,
        /// By how many days.
        #[arg(long)]
        days: u32,
        /// Why (recorded, and owed to the person).
        #[arg(long)]
        reason: String,
    },
    /// Write a request's report: JSON, HTML or Markdown by the file's extension (or
    /// `--format`).
    Export {
        /// The request's id.
        id: String,
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// json, html or md; by default from the file's extension.
        #[arg(long)]
        format: Option<String>,
    },
    /// Release compliance metrics (requests by kind, regulation and outcome; on-time
    /// share; median days to close) with differential privacy, spending `--epsilon` of
    /// the month's privacy budget; refused once the budget is spent.
    Metrics {
        /// The privacy cost of this release (smaller: more private, noisier).
        #[arg(long)]
        epsilon: f64,
        /// The month whose budget pays (YYYY-MM); the current one by default.
        #[arg(long)]
        period: Option<String>,
        /// The month's budget, set by its first release.
        #[arg(long, default_value_t = metrics::DEFAULT_BUDGET)]
        budget: f64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `cairn dsr audit ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Recompute the whole chain; exit 1 naming the first entry that does not verify.
    Verify {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// `cairn dsr open`.
#[derive(Debug, clap::Args)]
pub(crate) struct OpenArgs {
    /// The person's e-mail address.
    #[arg(long)]
    email: String,
    /// Their id at a source, as `source:value` (repeatable).
    #[arg(long = "id", value_name = "SOURCE:VALUE")]
    ids: Vec<String>,
    /// access or erasure.
    #[arg(long)]
    kind: Kind,
    /// gdpr (one month), ccpa (45 days), or a window in days (`30`).
    #[arg(long)]
    regulation: Regulation,
    /// A source file to search (repeatable); by default the files listed in
    /// CAIRN_DSR_SOURCES, separated by commas.
    #[arg(long = "source", value_name = "FILE")]
    sources: Vec<PathBuf>,
    /// Replace a source's base URL: `name=url` (a sandbox, a staging API).
    #[arg(long = "base-url", value_name = "NAME=URL")]
    base_urls: Vec<String>,
    /// The shares of the window at which the clock alerts, in percent.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_ALERTS.map(|s| (s * 100.0) as u32))]
    alert_at: Vec<u32>,
    /// How long the report is kept after the request closes (30d, 12h, ...).
    #[arg(long, default_value = "30d")]
    retention: String,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

fn failure(error: DsrError) -> Failure {
    match error {
        DsrError::Invalid(_) | DsrError::NotFound(_) => Failure::usage(error.to_string()),
        other => Failure::failed(other.to_string()),
    }
}

fn audit_key() -> Result<AuditKey, Failure> {
    AuditKey::from_env().map_err(|err| Failure::usage(err.to_string()))
}

pub(crate) async fn run(url: Option<&str>, command: DsrCommand) -> Outcome {
    match command {
        DsrCommand::Open(args) => open(url, args).await,
        DsrCommand::List { overdue, json } => {
            let pool = connect(url, 2).await?;
            let requests = request::list(&pool, overdue).await.map_err(failure)?;
            if json {
                print::json(&requests)?;
            } else if requests.is_empty() {
                outln!(
                    "no privacy requests{}",
                    if overdue { " overdue" } else { "" }
                );
            } else {
                outln!(
                    "{:<17} {:<8} {:<10} {:<12} {:<26} {:>12} {:>6}",
                    "ID",
                    "KIND",
                    "REGULATION",
                    "PHASE",
                    "DEADLINE",
                    "TIME LEFT",
                    "FOUND"
                );
                for r in &requests {
                    outln!(
                        "{:<17} {:<8} {:<10} {:<12} {:<26} {:>12} {:>6}",
                        r.id,
                        r.kind,
                        r.regulation,
                        r.phase.as_str(),
                        r.deadline
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        r.time_left_secs.map_or("closed".to_owned(), time_left),
                        r.found
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DsrCommand::Show { id, json } => {
            let pool = connect(url, 2).await?;
            let detail = request::show(&pool, &id).await.map_err(failure)?;
            if json {
                print::json(&detail)?;
                return Ok(ExitCode::SUCCESS);
            }
            let s = &detail.summary;
            outln!("request      {} ({}, {})", s.id, s.kind, s.regulation);
            outln!("phase        {}", s.phase.as_str());
            outln!("received     {}", s.received_at.to_rfc3339());
            outln!(
                "deadline     {} ({}, {:.0}% of the window used)",
                s.deadline.to_rfc3339(),
                s.time_left_secs.map_or("closed".to_owned(), time_left),
                s.elapsed_share * 100.0
            );
            for extension in &detail.extensions {
                outln!(
                    "extended     +{}d on {}: {}",
                    extension.days,
                    extension.extended_at.to_rfc3339(),
                    extension.reason
                );
            }
            if let Some(progress) = &detail.progress {
                outln!("progress     {progress}");
            }
            outln!(
                "records      {} found, {} erased, {} not erased",
                s.found,
                s.erased,
                s.unerased
            );
            if let Some(outcome) = &s.outcome {
                outln!("outcome      {outcome}");
            }
            outln!(
                "report       {}",
                if detail.report_available {
                    format!("cairn dsr export {} --out report.html", s.id)
                } else if s.closed_at.is_some() {
                    "purged".to_owned()
                } else {
                    "not compiled yet".to_owned()
                }
            );
            outln!("audit        {} entries", detail.audit_entries);
            Ok(ExitCode::SUCCESS)
        }
        DsrCommand::Extend { id, days, reason } => {
            let key = audit_key()?;
            let pool = connect(url, 2).await?;
            let deadline = request::extend(&pool, &key, &id, days, &reason)
                .await
                .map_err(failure)?;
            outln!("{id}: deadline extended to {}", deadline.to_rfc3339());
            Ok(ExitCode::SUCCESS)
        }
        DsrCommand::Export { id, out, format } => {
            let format = match format.as_deref() {
                Some(format) => format.to_owned(),
                None => out
                    .extension()
                    .and_then(|ext| ext.to_str())
                    .unwrap_or("json")
                    .to_ascii_lowercase(),
            };
            if !["json", "html", "htm", "md", "markdown"].contains(&format.as_str()) {
                return Err(Failure::usage(format!(
                    "--format {format:?}: write json, html or md"
                )));
            }
            let pool = connect(url, 2).await?;
            let text = request::report(&pool, &Sealer::process(), &id)
                .await
                .map_err(failure)?;
            let rendered = match format.as_str() {
                "json" => text,
                other => {
                    let report: Report = serde_json::from_str(&text)
                        .map_err(|err| Failure::failed(format!("{id}'s report: {err}")))?;
                    if other.starts_with("htm") {
                        report.html()
                    } else {
                        report.markdown()
                    }
                }
            };
            write_private(&out, rendered.as_bytes())?;
            outln!("wrote {id}'s report to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        DsrCommand::Metrics {
            epsilon,
            period,
            budget,
            json,
        } => {
            let period = period.unwrap_or_else(metrics::current_period);
            let valid = period.len() == 7
                && period.as_bytes()[4] == b'-'
                && period
                    .chars()
                    .enumerate()
                    .all(|(i, c)| i == 4 || c.is_ascii_digit());
            if !valid {
                return Err(Failure::usage(format!(
                    "--period {period:?}: write a month as YYYY-MM"
                )));
            }
            let pool = connect(url, 2).await?;
            let release = metrics::release(&pool, &period, epsilon, budget)
                .await
                .map_err(|err| match err {
                    MetricsError::Invalid(message) => Failure::usage(message),
                    other => Failure::failed(other.to_string()),
                })?;
            if json {
                print::json(&release)?;
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "privacy requests, {} (epsilon {}; budget {} of {} left)",
                release.period,
                release.epsilon,
                release.budget_left,
                release.budget_total
            );
            outln!(
                "every count carries discrete Laplace noise of scale {:.1}: within ±{} with 95% probability",
                release.noise_scale,
                release.error_95
            );
            outln!(
                "{:<8} {:<10} {:<10} {:>6}",
                "KIND",
                "REGULATION",
                "OUTCOME",
                "COUNT"
            );
            for cell in &release.requests {
                outln!(
                    "{:<8} {:<10} {:<10} {:>6}",
                    cell.kind,
                    cell.regulation,
                    cell.outcome,
                    cell.count
                );
            }
            outln!(
                "closed {}, on time {}{}",
                release.closed,
                release.closed_on_time,
                release
                    .on_time_share
                    .map(|share| format!(" ({:.0}%)", share * 100.0))
                    .unwrap_or_default()
            );
            if let Some(days) = release.median_days_to_close {
                outln!("median days to close: {days}");
            }
            Ok(ExitCode::SUCCESS)
        }
        DsrCommand::Audit {
            command: AuditCommand::Verify { json },
        } => {
            let key = audit_key()?;
            let pool = connect(url, 2).await?;
            let mut conn = pool
                .acquire()
                .await
                .map_err(|err| Failure::failed(err.to_string()))?;
            let verified = audit::verify(&mut conn, &key)
                .await
                .map_err(|err| Failure::failed(err.to_string()))?;
            if json {
                print::json(&verified)?;
            } else {
                match &verified.broken {
                    None => outln!("audit chain verified: {} entries", verified.entries),
                    Some(broken) => outln!(
                        "audit chain BROKEN at entry {} (request {}): {}; the {} entries before it verify",
                        broken.seq,
                        broken.request_id,
                        broken.problem,
                        verified.entries
                    ),
                }
            }
            Ok(if verified.broken.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn time_left(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let secs = secs.unsigned_abs();
    if secs >= 86_400 {
        format!("{sign}{}d {}h", secs / 86_400, secs % 86_400 / 3600)
    } else if secs >= 3600 {
        format!("{sign}{}h {}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{sign}{}m {}s", secs / 60, secs % 60)
    }
}

/// Writes a file only its owner can read: a report (or a credential) holds what others
/// must not read.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|err| Failure::failed(format!("cannot write {}: {err}", path.display())))
}

async fn open(url: Option<&str>, args: OpenArgs) -> Outcome {
    let key = audit_key()?;
    let mut ids = Vec::with_capacity(args.ids.len());
    for id in &args.ids {
        let (source, value) = id.split_once(':').ok_or_else(|| {
            Failure::usage(format!(
                "--id {id:?}: write source:value, e.g. sandbox-stripe:42"
            ))
        })?;
        ids.push((source.to_owned(), value.to_owned()));
    }
    let files: Vec<PathBuf> = if args.sources.is_empty() {
        std::env::var("CAIRN_DSR_SOURCES")
            .unwrap_or_default()
            .split(',')
            .filter(|path| !path.trim().is_empty())
            .map(|path| PathBuf::from(path.trim()))
            .collect()
    } else {
        args.sources
    };
    let mut base_urls = Vec::with_capacity(args.base_urls.len());
    for given in &args.base_urls {
        let (name, url) = given
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--base-url {given:?}: write name=url")))?;
        base_urls.push((name.to_owned(), url.to_owned()));
    }
    let mut sources = Vec::with_capacity(files.len());
    let mut names = Vec::new();
    for file in &files {
        let config = cairn_connectors::rest::RestConfig::from_file(file)
            .map_err(|err| Failure::usage(err.to_string()))?;
        let base_url = base_urls
            .iter()
            .find(|(name, _)| name == config.name())
            .map(|(_, url)| url.clone());
        if let Some(url) = &base_url {
            config
                .clone()
                .with_base_url(url)
                .map_err(|err| Failure::usage(err.to_string()))?;
        }
        names.push(config.name().to_owned());
        sources.push(RequestSource {
            toml: std::fs::read_to_string(file)
                .map_err(|err| Failure::usage(format!("cannot read {}: {err}", file.display())))?,
            file: file.display().to_string(),
            base_url,
        });
    }
    for (source, _) in ids
        .iter()
        .map(|(s, v)| (s, v))
        .chain(base_urls.iter().map(|(s, u)| (s, u)))
    {
        if !names.contains(source) {
            return Err(Failure::usage(format!(
                "{source:?} is not one of the sources given ({})",
                names.join(", ")
            )));
        }
    }
    let retention = cairn_connectors::watermark::parse_duration_secs(&args.retention)
        .map_err(|message| Failure::usage(format!("--retention: {message}")))?;
    let pool = connect(url, 4).await?;
    let opened = request::open(
        &pool,
        &Sealer::process(),
        &key,
        OpenRequest {
            subject: Subject {
                email: args.email.trim().to_owned(),
                ids,
            },
            kind: args.kind,
            regulation: args.regulation,
            sources,
            alerts: args
                .alert_at
                .iter()
                .map(|p| f64::from(*p) / 100.0)
                .collect(),
            retention: TimeDelta::seconds(i64::try_from(retention).unwrap_or(i64::MAX)),
        },
    )
    .await
    .map_err(failure)?;
    if args.json {
        print::json(&opened)?;
    } else {
        outln!("{}", opened.id);
        eprintln!(
            "opened {} ({}, {}): deadline {}; `cairn dsr show {}` follows it",
            opened.id,
            args.kind.as_str(),
            args.regulation.name(),
            opened.deadline.to_rfc3339(),
            opened.id
        );
    }
    Ok(ExitCode::SUCCESS)
}
