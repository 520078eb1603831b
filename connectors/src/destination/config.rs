//! Loading a destination file: the `[destination]` table, described as a source's
//! connection is (the same fields, the same rules), and one table per stream that says
//! how a record is written.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::http::HttpConfig;
use crate::paginate::JsonPath;
use crate::rest::config::{
    ConfigError, Connection, Problem, checked_base_url, connection, load, path, problem, read,
};
use crate::rest::schema::ApiFile;

/// How a stream's records are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// `PUT {path}/{id}`: an upsert by id, safe to repeat.
    Put,
    /// `POST {path}` with an `Idempotency-Key` derived from the run, the step and the
    /// record, so a retry after a lost answer is recognised by the destination.
    Post,
    /// `PATCH {path}/{id}` with `If-Match` and the record's last-seen `ETag`; a `412`
    /// is settled by the stream's [`ConflictPolicy`].
    Patch,
}

impl WriteMode {
    /// The mode's name, as a file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Put => "put",
            WriteMode::Post => "post",
            WriteMode::Patch => "patch",
        }
    }
}

/// What a `patch` stream does when the destination's record changed since it was last
/// seen (`412 Precondition Failed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// Fetch the current record and apply the change over it.
    SourceWins,
    /// Leave the destination's record as it is and raise an alert.
    SkipAndAlert,
    /// Leave it, and put the record on the dead-letter list for a person to settle.
    #[default]
    DeadLetter,
}

impl ConflictPolicy {
    /// The policy's name, as a file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::SourceWins => "source_wins",
            ConflictPolicy::SkipAndAlert => "skip_and_alert",
            ConflictPolicy::DeadLetter => "dead_letter",
        }
    }
}

/// The most records one batch request carries, whatever the file says.
pub const MAX_BATCH_SIZE: usize = 1_000;

/// `[destination.streams.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DestStreamFile {
    path: String,
    mode: WriteMode,
    #[serde(default)]
    id_field: Option<String>,
    #[serde(default)]
    source_id_field: Option<String>,
    #[serde(default)]
    on_conflict: Option<ConflictPolicy>,
    #[serde(default)]
    batch_path: Option<String>,
    #[serde(default)]
    batch_size: Option<usize>,
}

/// The whole destination file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationFile {
    destination: ApiFile<DestStreamFile>,
}

/// A validated stream of a destination.
#[derive(Clone, Debug)]
pub struct StreamPlan {
    pub(crate) path: String,
    pub(crate) mode: WriteMode,
    pub(crate) id_field: JsonPath,
    pub(crate) source_id_field: Option<String>,
    pub(crate) on_conflict: ConflictPolicy,
    pub(crate) batch: Option<(String, usize)>,
}

impl StreamPlan {
    /// How its records are written.
    pub fn mode(&self) -> WriteMode {
        self.mode
    }

    /// What a `412` leads to.
    pub fn on_conflict(&self) -> ConflictPolicy {
        self.on_conflict
    }

    /// The batch endpoint and its size, when the stream declares one.
    pub fn batch(&self) -> Option<(&str, usize)> {
        self.batch
            .as_ref()
            .map(|(path, size)| (path.as_str(), *size))
    }
}

/// A validated REST destination, loaded from a TOML file:
///
/// ```toml
/// [destination]
/// name = "crm-b"                        # the connection fields of a source file:
/// base_url = "https://api.example.com"  # auth, rate_limit, headers, timeouts, ...
///
/// [destination.rate_limit]              # shared with any reads of the same vendor
/// requests_per_second = 20              # and credentials
///
/// [destination.streams.contacts]
/// path = "/v3/contacts"                 # PUT/PATCH {path}/{id}, POST {path}
/// mode = "patch"                        # put | post | patch
/// id_field = "id"                       # where a record's id is (default "id")
/// on_conflict = "source_wins"           # patch: source_wins | skip_and_alert | dead_letter
/// source_id_field = "external_id"       # post: the body field that carries the id
/// batch_path = "/v3/contacts/batch"     # put: {records: [...]} answered {results: [...]}
/// batch_size = 100
/// ```
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    pub(crate) file: String,
    pub(crate) name: String,
    pub(crate) http: HttpConfig,
    pub(crate) secret_params: Vec<String>,
    pub(crate) allow_insecure_http: bool,
    pub(crate) streams: BTreeMap<String, StreamPlan>,
}

impl DestinationConfig {
    /// Reads and validates the destination file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let (text, file) = read(path.as_ref())?;
        Self::parse(&text, &file)
    }

    /// Validates a destination file's `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        load(
            text,
            file,
            Some("destination"),
            |parsed: DestinationFile| {
                validate(parsed.destination, file).map_err(|problem| problem.within("destination"))
            },
        )
    }

    /// The same destination at another base URL (a sandbox on an ephemeral port), under
    /// the file's rule: plain http only to this machine unless the file allows it.
    pub fn with_base_url(mut self, base_url: &str) -> Result<Self, ConfigError> {
        self.http.base_url = checked_base_url(&self.file, base_url, self.allow_insecure_http)?;
        Ok(self)
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was loaded from, as given.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Its HTTP configuration.
    pub fn http(&self) -> &HttpConfig {
        &self.http
    }

    /// Its streams, by name.
    pub fn streams(&self) -> impl Iterator<Item = (&str, &StreamPlan)> {
        self.streams
            .iter()
            .map(|(name, plan)| (name.as_str(), plan))
    }

    /// The stream `name`, if declared.
    pub fn stream(&self, name: &str) -> Option<&StreamPlan> {
        self.streams.get(name)
    }
}

fn validate(file_table: ApiFile<DestStreamFile>, file: &str) -> Result<DestinationConfig, Problem> {
    let Connection {
        http,
        secret_params,
    } = connection(&file_table, "destination")?;
    if file_table.warehouse.schema.is_some() {
        return Err(problem(
            &["warehouse"],
            "a destination writes to its API, not to the warehouse: remove [warehouse]",
        ));
    }
    if file_table.streams.is_empty() {
        return Err(problem(
            &["streams"],
            "the destination needs at least one [destination.streams.<name>] table",
        ));
    }
    let streams = file_table
        .streams
        .into_iter()
        .map(|(name, stream)| Ok((name.clone(), stream_plan(&name, stream)?)))
        .collect::<Result<_, Problem>>()?;
    Ok(DestinationConfig {
        file: file.to_owned(),
        name: file_table.name,
        http,
        secret_params,
        allow_insecure_http: file_table.allow_insecure_http,
        streams,
    })
}

fn stream_plan(name: &str, stream: DestStreamFile) -> Result<StreamPlan, Problem> {
    let at = |field: &'static str| ["streams", name, field];
    if stream.path.trim().is_empty() {
        return Err(problem(&at("path"), "the stream's path is empty"));
    }
    let id_field = path(stream.id_field.as_deref().unwrap_or("id"), &at("id_field"))?;
    if id_field.is_root() {
        return Err(problem(
            &at("id_field"),
            "name the field that identifies a record, e.g. \"id\"",
        ));
    }
    let only_for = |field: &'static str, given: bool, mode: WriteMode| {
        if given && stream.mode != mode {
            Err(problem(
                &at(field),
                format!(
                    "`{field}` applies to `{}` streams; this one is `{}`",
                    mode.as_str(),
                    stream.mode.as_str()
                ),
            ))
        } else {
            Ok(())
        }
    };
    only_for(
        "on_conflict",
        stream.on_conflict.is_some(),
        WriteMode::Patch,
    )?;
    only_for(
        "source_id_field",
        stream.source_id_field.is_some(),
        WriteMode::Post,
    )?;
    only_for("batch_path", stream.batch_path.is_some(), WriteMode::Put)?;
    if let Some(field) = &stream.source_id_field
        && field.trim().is_empty()
    {
        return Err(problem(&at("source_id_field"), "the field name is empty"));
    }
    let batch = match (stream.batch_path, stream.batch_size) {
        (None, Some(_)) => {
            return Err(problem(
                &at("batch_size"),
                "`batch_size` needs `batch_path`, the endpoint that takes a batch",
            ));
        }
        (None, None) => None,
        (Some(path), size) => {
            let size = size.unwrap_or(100);
            if path.trim().is_empty() {
                return Err(problem(
                    &at("batch_path"),
                    "the batch endpoint's path is empty",
                ));
            }
            if size == 0 || size > MAX_BATCH_SIZE {
                return Err(problem(
                    &at("batch_size"),
                    format!("a batch holds 1 to {MAX_BATCH_SIZE} records"),
                ));
            }
            Some((path, size))
        }
    };
    Ok(StreamPlan {
        path: stream.path,
        mode: stream.mode,
        id_field,
        source_id_field: stream.source_id_field,
        on_conflict: stream.on_conflict.unwrap_or_default(),
        batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[destination]
name = "crm-b"
base_url = "http://127.0.0.1:9"

[destination.streams.contacts]
path = "/dest/contacts"
mode = "patch"
on_conflict = "source_wins"

[destination.streams.deals]
path = "/dest/deals"
mode = "post"
source_id_field = "external_id"
"#;

    #[test]
    fn a_destination_file_reads_its_streams() {
        let config = DestinationConfig::parse(FILE, "b.toml").unwrap();
        assert_eq!(config.name(), "crm-b");
        let contacts = config.stream("contacts").unwrap();
        assert_eq!(contacts.mode(), WriteMode::Patch);
        assert_eq!(contacts.on_conflict(), ConflictPolicy::SourceWins);
        assert_eq!(
            config.stream("deals").unwrap().on_conflict(),
            ConflictPolicy::DeadLetter
        );
    }

    #[test]
    fn mistakes_are_named_where_they_are() {
        let wrong = FILE.replace(
            "on_conflict = \"source_wins\"",
            "on_conflict = \"source_wins\"\nbatch_path = \"/b\"",
        );
        let err = DestinationConfig::parse(&wrong, "b.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("b.toml:") && err.contains("`destination.streams.contacts.batch_path`"),
            "{err}"
        );
        assert!(err.contains("applies to `put` streams"), "{err}");

        let secret = FILE.replace(
            "base_url = \"http://127.0.0.1:9\"",
            "base_url = \"http://127.0.0.1:9\"\n[destination.auth]\nkind = \"bearer\"\ntoken = \"s3cr3t-token\"",
        );
        let err = DestinationConfig::parse(&secret, "b.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("destination.auth.token"), "{err}");
        assert!(!err.contains("s3cr3t-token"), "{err}");

        let insecure = FILE.replace("http://127.0.0.1:9", "http://crm.example.com");
        let err = DestinationConfig::parse(&insecure, "b.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`destination.base_url`"), "{err}");
    }
}
