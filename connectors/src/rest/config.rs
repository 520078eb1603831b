//! Loading a source file: parse, deserialize, check the rules serde cannot,
//! and say exactly where anything is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use super::locate::{Document, line_column};
use super::lookups::{IdentityKind, Lookup, erase_plan, identity_fields, lookup_plan};
use super::paginators::paginator;
use super::schema::{
    ApiFile, IdsFile, IncrementalFile, RequestMethod, SinceFormat, SourceFile, StreamFile,
};
use super::secrets::{field_on_line, literal_secret};
use crate::auth::{AuthConfig, KeyLocation, OauthGrant};
use crate::headers::{literal_credential_problem, looks_like_credential};
use crate::http::HttpConfig;
use crate::http::origin::url_problem;
use crate::http::waits::Waits;
use crate::paginate::{JsonPath, Paginator};
use crate::warehouse::ident::{derived_schema_name, schema_name_problem};
use crate::watermark::{CursorType, DEFAULT_MAX_FUTURE_SKEW_SECS, parse_duration_secs};

/// The placeholder an incremental query template puts the watermark in.
pub(crate) const SINCE_PLACEHOLDER: &str = "{since}";

/// Why a source file cannot be used. Every variant names the file; problems
/// in its content also give the line, column and dotted field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the source file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A field is missing, unknown, of the wrong type or inconsistent with
    /// another, or the TOML itself does not parse (then `field` is the table
    /// being read, empty at top level).
    #[error("{file}:{line}:{column}: {}{message}", field_prefix(field))]
    Invalid {
        /// The file, as given to the loader.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// The dotted path of the field, e.g. `streams.contacts.paginator.param`.
        field: String,
        /// What is wrong, and what is expected instead.
        message: String,
    },
    /// A schema given to [`RestConfig::with_schema`] cannot hold warehouse tables.
    #[error("{file}: warehouse schema {schema:?} overriding the file's is not usable: {reason}")]
    Schema {
        /// The file whose schema was being replaced.
        file: String,
        /// The schema given.
        schema: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A base URL given to [`RestConfig::with_base_url`] cannot be used.
    #[error("{file}: the base URL overriding the file's cannot be used: {reason}")]
    BaseUrl {
        /// The file whose base URL was being replaced.
        file: String,
        /// Why (the URL is named, credentials removed).
        reason: String,
    },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("`{field}`: ")
    }
}

/// One listing: where it is, and how to read and page it.
#[derive(Clone, Debug)]
pub(crate) struct Listing {
    pub(crate) path: String,
    pub(crate) method: RequestMethod,
    pub(crate) query: Vec<(String, String)>,
    /// A `POST` listing's JSON body (an object); `None` for `GET`.
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) items_path: JsonPath,
    pub(crate) total_path: Option<JsonPath>,
    pub(crate) paginator: Paginator,
    /// Whether a body that is one object (at the root records path) is one record, as a
    /// lookup by id may answer.
    pub(crate) one_record: bool,
}

/// How a stream reads only what changed.
#[derive(Clone, Debug)]
pub(crate) struct Incremental {
    pub(crate) param: Option<String>,
    pub(crate) query: Vec<(String, String)>,
    /// A `POST` listing's body when reading since a watermark, with `{since}` in it.
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) format: SinceFormat,
    pub(crate) client_filter: bool,
}

/// A validated stream.
#[derive(Clone, Debug)]
pub(crate) struct StreamPlan {
    pub(crate) listing: Listing,
    pub(crate) primary_key: JsonPath,
    pub(crate) cursor_field: Option<JsonPath>,
    pub(crate) cursor_type: CursorType,
    pub(crate) max_future_skew_secs: u64,
    pub(crate) incremental: Option<Incremental>,
    /// The most pages one run reads of this stream's listing.
    pub(crate) max_pages: Option<u64>,
    /// The ids-only listing and where an id is in its items (`None`: the items
    /// are the ids); absent, ids come from the records listing.
    pub(crate) ids: Option<(Listing, Option<JsonPath>)>,
    /// Where a record holds a person's e-mail address.
    pub(crate) identity_emails: Vec<JsonPath>,
    /// Searches for one person's records: by e-mail, by id.
    pub(crate) lookups: Vec<Lookup>,
    /// How one of a person's records is erased.
    pub(crate) erase: Option<crate::destination::ErasePlan>,
}

/// A validated declarative REST source, loaded from a TOML file (see the
/// [module docs](super) for the schema).
///
/// Only [`from_file`](Self::from_file) and [`parse`](Self::parse) make one, so
/// a `RestConfig` always satisfies every rule of the schema.
#[derive(Clone, Debug)]
pub struct RestConfig {
    pub(crate) file: String,
    pub(crate) name: String,
    pub(crate) http: HttpConfig,
    pub(crate) secret_params: Vec<String>,
    pub(crate) allow_insecure_http: bool,
    pub(crate) schema: String,
    pub(crate) streams: BTreeMap<String, StreamPlan>,
}

impl RestConfig {
    /// Reads and validates the source file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let (text, file) = read(path.as_ref())?;
        Self::parse(&text, &file)
    }

    /// Validates a source file's `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        load(text, file, None, |source: SourceFile| {
            validate(source, file)
        })
    }

    /// The same source against another base URL — a sandbox on an ephemeral
    /// port, a vendor's EU instance. Paths, next links and token URLs resolve
    /// against it.
    ///
    /// The same rule as the file's holds: http or https, and plain http only to this
    /// machine unless the file says `allow_insecure_http = true`.
    pub fn with_base_url(mut self, base_url: &str) -> Result<Self, ConfigError> {
        self.http.base_url = checked_base_url(&self.file, base_url, self.allow_insecure_http)?;
        Ok(self)
    }

    /// The same source landing in the warehouse schema `schema` instead of the file's
    /// (`cairn sync --schema`).
    pub fn with_schema(mut self, schema: &str) -> Result<Self, ConfigError> {
        if let Some(reason) = schema_name_problem(schema) {
            return Err(ConfigError::Schema {
                file: self.file,
                schema: schema.to_owned(),
                reason,
            });
        }
        schema.clone_into(&mut self.schema);
        Ok(self)
    }

    /// The same source whose requests go ahead of others' on its shared rate budget: a
    /// privacy request's lookups overtake running syncs of the same vendor.
    #[must_use]
    pub fn urgent(mut self) -> Self {
        self.http.urgent = true;
        self
    }

    /// The warehouse schema its tables land in: `[warehouse] schema`, or else one
    /// derived from its name (see [`derived_schema_name`]).
    pub fn warehouse_schema(&self) -> &str {
        &self.schema
    }

    /// The source's name, e.g. `sandbox-hubspot`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was loaded from, as given.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// How its HTTP client is configured.
    pub fn http(&self) -> &HttpConfig {
        &self.http
    }

    /// Its streams' names, in order.
    pub fn stream_names(&self) -> impl Iterator<Item = &str> {
        self.streams.keys().map(String::as_str)
    }
}

/// A file's text, and its path as errors name it.
pub(crate) fn read(path: &Path) -> Result<(String, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok((text, path.display().to_string()))
}

/// `base_url` as a file's own would be used (http or https, and plain http only to this
/// machine unless `allow_insecure_http`), or why it cannot replace file `file`'s.
pub(crate) fn checked_base_url(
    file: &str,
    base_url: &str,
    allow_insecure_http: bool,
) -> Result<String, ConfigError> {
    match url_problem(base_url, allow_insecure_http) {
        Some(reason) => Err(ConfigError::BaseUrl {
            file: file.to_owned(),
            reason,
        }),
        None => Ok(base_url.trim_end_matches('/').to_owned()),
    }
}

/// Reads a file's `text` as a `T` and then through `validate`, with every problem
/// located: the file, line, column and dotted field. `file` names it in errors; `api`
/// is the table that describes the API (`None`: the file's root), where credentials
/// must come from secret sources.
pub(crate) fn load<T: serde::de::DeserializeOwned, R>(
    text: &str,
    file: &str,
    api: Option<&str>,
    validate: impl FnOnce(T) -> Result<R, Problem>,
) -> Result<R, ConfigError> {
    let invalid = |span: std::ops::Range<usize>, field: String, message: String| {
        let (line, column) = line_column(text, span.start);
        ConfigError::Invalid {
            file: file.to_owned(),
            line,
            column,
            field,
            message,
        }
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    let document = Document::new(&root);
    if let Some(error) = syntax.first() {
        let span = error.span().unwrap_or(0..0);
        let mut field = document.path_at(span.start).join(".");
        if field.is_empty() {
            field = field_on_line(text, span.start);
        }
        return Err(invalid(span, field, error.message().to_owned()));
    }
    let api_table = match api {
        None => Some(root.get_ref()),
        Some(name) => match root.get_ref().get(name).map(toml::Spanned::get_ref) {
            Some(toml::de::DeValue::Table(table)) => Some(table),
            _ => None,
        },
    };
    let prefix = api.map(|name| format!("{name}.")).unwrap_or_default();
    if let Some((span, field, message)) = api_table.and_then(|table| literal_secret(table, &prefix))
    {
        return Err(invalid(span, field, message));
    }
    let parsed = T::deserialize(toml::de::Deserializer::from(root.clone())).map_err(|error| {
        let span = error.span().unwrap_or(0..0);
        // A missing field's span is its table's.
        let field = match missing_field(error.message()) {
            Some(missing) => {
                let mut table = document.table_at(&span);
                table.push(missing.to_owned());
                table
            }
            None => document.path_at(span.start),
        };
        invalid(span, field.join("."), error.message().to_owned())
    })?;
    validate(parsed).map_err(|problem| {
        let path: Vec<&str> = problem.field.iter().map(String::as_str).collect();
        invalid(
            document.span_of(&path),
            problem.field.join("."),
            problem.message,
        )
    })
}

/// The field named by serde's "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// A rule broken, at a dotted field.
pub(crate) struct Problem {
    field: Vec<String>,
    message: String,
}

impl Problem {
    /// The same problem in the table `table` of a larger file.
    pub(crate) fn within(mut self, table: &str) -> Self {
        self.field.insert(0, table.to_owned());
        self
    }
}

pub(crate) fn problem(at: &[&str], message: impl Into<String>) -> Problem {
    Problem {
        field: at.iter().map(|s| (*s).to_owned()).collect(),
        message: message.into(),
    }
}

pub(crate) fn path(text: &str, at: &[&str]) -> Result<JsonPath, Problem> {
    text.parse()
        .map_err(|error| problem(at, format!("{error}")))
}

/// How to reach an API, as a file's connection fields say once checked.
pub(crate) struct Connection {
    pub(crate) http: HttpConfig,
    pub(crate) secret_params: Vec<String>,
}

/// Checks the fields of `source` that say how to reach the API (everything but its
/// streams and warehouse) and builds its HTTP configuration.
pub(crate) fn connection<S>(source: &ApiFile<S>, what: &str) -> Result<Connection, Problem> {
    if source.name.trim().is_empty() {
        return Err(problem(&["name"], format!("the {what} needs a name")));
    }
    if let Some(why) = url_problem(&source.base_url, source.allow_insecure_http) {
        return Err(problem(&["base_url"], why));
    }
    if let AuthConfig::Oauth2 { token_url, .. } = &source.auth {
        let absolute = crate::http::join_url(&source.base_url, token_url);
        if let Some(why) = url_problem(&absolute, source.allow_insecure_http) {
            return Err(problem(&["auth", "token_url"], why));
        }
    }
    for (name, setting) in &source.headers {
        if !setting.is_secret() && looks_like_credential(name) {
            return Err(problem(
                &["headers", name],
                literal_credential_problem(name),
            ));
        }
    }
    for (at, host) in source.allow_redirect_hosts.iter().enumerate() {
        if host.is_empty() || host.contains(['/', ':', '@', ' ']) {
            return Err(problem(
                &["allow_redirect_hosts"],
                format!(
                    "entry {} ({host:?}) is not a host name: write it without scheme, port or path",
                    at + 1
                ),
            ));
        }
    }
    if source.max_response_bytes == Some(0) {
        return Err(problem(
            &["max_response_bytes"],
            "a response of at most 0 bytes holds no page",
        ));
    }
    let t = source.timeouts;
    for (field, value) in [
        ("connect_secs", t.connect_secs),
        ("read_secs", t.read_secs),
        ("total_secs", t.total_secs),
    ] {
        if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
            return Err(problem(
                &["timeouts", field],
                "a timeout is a number of seconds above 0 and at most a day",
            ));
        }
    }
    let mut waits = Waits::default();
    for (field, given, slot) in [
        (
            "max_rate_limit_wait",
            &source.max_rate_limit_wait,
            &mut waits.max_rate_limit_wait_secs,
        ),
        (
            "max_quota_wait",
            &source.max_quota_wait,
            &mut waits.max_quota_wait_secs,
        ),
    ] {
        if let Some(text) = given {
            *slot = parse_duration_secs(&text.0).map_err(|message| problem(&[field], message))?;
            if *slot == 0 || *slot > 7 * 86_400 {
                return Err(problem(&[field], "give a wait between 1s and 7d"));
            }
        }
    }
    let mut secret_params = source.secret_params.clone();
    if let AuthConfig::ApiKey {
        name,
        location: KeyLocation::Query,
        ..
    } = &source.auth
    {
        secret_params.push(name.clone());
    }
    let mut auth = source.auth.clone();
    if let AuthConfig::Oauth2 {
        grant: OauthGrant::RefreshToken,
        credential: credential @ None,
        ..
    } = &mut auth
    {
        *credential = Some(source.name.clone());
    }
    Ok(Connection {
        http: HttpConfig {
            base_url: source.base_url.trim_end_matches('/').to_owned(),
            auth,
            rate_limit: source.rate_limit.clone(),
            headers: source.headers.clone(),
            timeouts: source.timeouts,
            allow_redirect_hosts: source.allow_redirect_hosts.clone(),
            max_response_bytes: source
                .max_response_bytes
                .unwrap_or(crate::http::DEFAULT_MAX_RESPONSE_BYTES),
            waits,
            signer: None,
            urgent: false,
        },
        secret_params,
    })
}

fn validate(source: SourceFile, file: &str) -> Result<RestConfig, Problem> {
    let Connection {
        http,
        secret_params,
    } = connection(&source, "source")?;
    if source.streams.is_empty() {
        return Err(problem(
            &["streams"],
            "the source needs at least one [streams.<name>] table",
        ));
    }
    let schema = match &source.warehouse.schema {
        Some(schema) => {
            if let Some(why) = schema_name_problem(schema) {
                return Err(problem(
                    &["warehouse", "schema"],
                    format!("{schema:?} cannot be a warehouse schema: {why}"),
                ));
            }
            schema.clone()
        }
        None => {
            let derived = derived_schema_name(&source.name);
            if let Some(why) = schema_name_problem(&derived) {
                return Err(problem(
                    &["name"],
                    format!(
                        "the warehouse schema derived from the name, {derived:?}, is not usable \
                         ({why}); name the source differently or set [warehouse] schema = \"...\""
                    ),
                ));
            }
            derived
        }
    };
    let streams = source
        .streams
        .into_iter()
        .map(|(name, stream)| Ok((name.clone(), stream_plan(&name, stream)?)))
        .collect::<Result<_, Problem>>()?;
    Ok(RestConfig {
        file: file.to_owned(),
        name: source.name,
        http,
        secret_params,
        allow_insecure_http: source.allow_insecure_http,
        schema,
        streams,
    })
}

fn stream_plan(name: &str, stream: StreamFile) -> Result<StreamPlan, Problem> {
    let at = |field: &'static str| ["streams", name, field];
    if stream.path.trim().is_empty() {
        return Err(problem(&at("path"), "the listing's path is empty"));
    }
    let primary_key = path(&stream.primary_key, &at("primary_key"))?;
    if primary_key.is_root() {
        return Err(problem(
            &at("primary_key"),
            "name the field that identifies a record, e.g. \"id\"",
        ));
    }
    let cursor_field = match &stream.cursor_field {
        Some(field) => Some(path(field, &at("cursor_field"))?).filter(|p| !p.is_root()),
        None => None,
    };
    if cursor_field.is_none() {
        for (field, given) in [
            ("cursor_type", stream.cursor_type.is_some()),
            ("max_future_skew", stream.max_future_skew.is_some()),
        ] {
            if given {
                return Err(problem(
                    &at(field),
                    format!(
                        "`{field}` describes the cursor field, and the stream has no `cursor_field`"
                    ),
                ));
            }
        }
    }
    if stream.max_pages == Some(0) {
        return Err(problem(
            &at("max_pages"),
            "a run that may read no page reads nothing",
        ));
    }
    let max_future_skew_secs = match &stream.max_future_skew {
        Some(text) => parse_duration_secs(&text.0)
            .map_err(|message| problem(&at("max_future_skew"), message))?,
        None => DEFAULT_MAX_FUTURE_SKEW_SECS,
    };
    let incremental = match stream.incremental {
        Some(incremental) => Some(incremental_plan(
            name,
            incremental,
            cursor_field.is_some(),
            stream.method,
        )?),
        None => None,
    };
    let paginator = paginator(
        &stream.paginator,
        &["streams", name, "paginator"],
        &primary_key,
        stream.method,
    )?;
    let listing = Listing {
        path: stream.path,
        method: stream.method,
        body: request_body(stream.method, stream.body, &at("body"))?,
        query: stream
            .query
            .into_iter()
            .map(|(name, value)| (name, value.0))
            .collect(),
        items_path: path(&stream.records_path, &at("records_path"))?,
        total_path: stream
            .total_path
            .map(|total| path(&total, &at("total_path")))
            .transpose()?,
        paginator,
        one_record: false,
    };
    let ids = match stream.ids {
        Some(ids) => Some(ids_plan(name, ids)?),
        None => None,
    };
    let identity_emails = identity_fields(name, stream.identity)?;
    let lookups = [
        (IdentityKind::Email, stream.lookup),
        (IdentityKind::Id, stream.lookup_by_id),
    ]
    .into_iter()
    .filter_map(|(kind, file)| Some((kind, file?)))
    .map(|(kind, file)| lookup_plan(name, kind, file, &identity_emails, &primary_key))
    .collect::<Result<_, _>>()?;
    let erase = stream
        .erase
        .map(|file| erase_plan(name, file))
        .transpose()?;
    Ok(StreamPlan {
        listing,
        primary_key,
        cursor_field,
        cursor_type: stream.cursor_type.unwrap_or_default(),
        max_future_skew_secs,
        incremental,
        max_pages: stream.max_pages,
        ids,
        identity_emails,
        lookups,
        erase,
    })
}

fn incremental_plan(
    name: &str,
    incremental: IncrementalFile,
    has_cursor_field: bool,
    method: RequestMethod,
) -> Result<Incremental, Problem> {
    let at = |field: &'static str| ["streams", name, "incremental", field];
    if !has_cursor_field {
        return Err(problem(
            &["streams", name, "incremental"],
            "incremental reads need the stream's `cursor_field`, the field the watermark is read from",
        ));
    }
    let given = [
        ("param", incremental.param.is_some()),
        ("query", incremental.query.is_some()),
        ("body", incremental.body.is_some()),
    ];
    let named: Vec<&'static str> = given
        .iter()
        .filter(|(_, given)| *given)
        .map(|(field, _)| *field)
        .collect();
    if let Some(second) = named.get(1) {
        return Err(problem(
            &at(second),
            "give one of `param` (one parameter set to the watermark), `query` or `body` \
             (templates with {since}), not two",
        ));
    }
    if given.iter().all(|(_, given)| !given) && !incremental.client_filter {
        return Err(problem(
            &["streams", name, "incremental"],
            "say how to filter by the watermark: `param`, `query` or `body` (templates with {since}), or `client_filter = true` for a listing that cannot filter",
        ));
    }
    if let Some(param) = &incremental.param {
        if param.is_empty() {
            return Err(problem(&at("param"), "the parameter name is empty"));
        }
        if method == RequestMethod::Post {
            path(param, &at("param"))?;
        }
    }
    let body = match incremental.body {
        Some(body) => request_body(method, Some(body), &at("body"))?,
        None => None,
    };
    if let Some(body) = &body
        && !mentions(body, SINCE_PLACEHOLDER)
    {
        return Err(problem(
            &at("body"),
            "no string in the body contains {since}, where the watermark goes",
        ));
    }
    let query: Vec<(String, String)> = incremental.query.unwrap_or_default().into_iter().collect();
    if !query.is_empty()
        && !query
            .iter()
            .any(|(_, value)| value.contains(SINCE_PLACEHOLDER))
    {
        return Err(problem(
            &at("query"),
            "no template contains {since}, where the watermark goes",
        ));
    }
    Ok(Incremental {
        param: incremental.param,
        query,
        body,
        format: incremental.format,
        client_filter: incremental.client_filter,
    })
}

fn ids_plan(name: &str, ids: IdsFile) -> Result<(Listing, Option<JsonPath>), Problem> {
    let at = |field: &'static str| ["streams", name, "ids", field];
    if ids.path.trim().is_empty() {
        return Err(problem(&at("path"), "the ids listing's path is empty"));
    }
    let id_field = ids
        .id_field
        .map(|field| path(&field, &at("id_field")))
        .transpose()?
        .filter(|field| !field.is_root());
    let paginator = paginator(
        &ids.paginator,
        &["streams", name, "ids", "paginator"],
        &id_field.clone().unwrap_or_default(),
        ids.method,
    )?;
    let listing = Listing {
        path: ids.path,
        method: ids.method,
        body: request_body(ids.method, ids.body, &at("body"))?,
        query: ids
            .query
            .into_iter()
            .map(|(name, value)| (name, value.0))
            .collect(),
        items_path: path(&ids.ids_path, &at("ids_path"))?,
        total_path: ids
            .total_path
            .map(|total| path(&total, &at("total_path")))
            .transpose()?,
        paginator,
        one_record: false,
    };
    Ok((listing, id_field))
}

/// A listing's checked body: an object for `POST` (an empty one when the file gives
/// none), nothing for `GET`. TOML dates have no JSON form, so they are refused.
pub(crate) fn request_body(
    method: RequestMethod,
    body: Option<serde_json::Value>,
    at: &[&str],
) -> Result<Option<serde_json::Value>, Problem> {
    match (method, body) {
        (RequestMethod::Get, None) => Ok(None),
        (RequestMethod::Get, Some(_)) => Err(problem(
            at,
            "a `GET` listing sends no body: set `method = \"post\"` on the listing",
        )),
        (RequestMethod::Post, None) => Ok(Some(serde_json::Value::Object(Default::default()))),
        (RequestMethod::Post, Some(body)) => {
            if !body.is_object() {
                return Err(problem(at, "the body is a table (a JSON object)"));
            }
            if mentions_key(&body, TOML_DATE_KEY) {
                return Err(problem(
                    at,
                    "JSON has no dates: write the date as a string, e.g. \"2026-01-01T00:00:00Z\"",
                ));
            }
            Ok(Some(body))
        }
    }
}

/// The key the TOML reader gives a date read into a JSON value.
const TOML_DATE_KEY: &str = "$__toml_private_datetime";

/// Whether some string in `value` contains `needle`.
pub(crate) fn mentions(value: &serde_json::Value, needle: &str) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains(needle),
        serde_json::Value::Array(items) => items.iter().any(|item| mentions(item, needle)),
        serde_json::Value::Object(fields) => fields.values().any(|item| mentions(item, needle)),
        _ => false,
    }
}

fn mentions_key(value: &serde_json::Value, key: &str) -> bool {
    match value {
        serde_json::Value::Array(items) => items.iter().any(|item| mentions_key(item, key)),
        serde_json::Value::Object(fields) => fields
            .iter()
            .any(|(name, item)| name == key || mentions_key(item, key)),
        _ => false,
    }
}
