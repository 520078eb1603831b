//! The `[streams.<name>.lookup]`, `[streams.<name>.lookup_by_id]` and
//! `[streams.<name>.erase]` tables of a source file, and its
//! `[streams.<name>.identity]`: how one person's records are searched for, how a record
//! found is proven to be theirs, and how it is erased.

use super::config::{Listing, Problem, mentions, path, problem, request_body};
use super::paginators::paginator;
use super::schema::{
    EraseFile, EraseModeFile, Escape, IdentityFile, LookupFile, PaginatorFile, PaginatorKind,
};
use crate::destination::{EraseMode, ErasePlan};
use crate::paginate::JsonPath;

/// What a lookup searches by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// An e-mail address, compared without regard to case.
    Email,
    /// The record's id at this source.
    Id,
}

impl IdentityKind {
    /// The placeholder its value fills in a lookup's templates.
    pub fn placeholder(self) -> &'static str {
        match self {
            IdentityKind::Email => "{email}",
            IdentityKind::Id => "{id}",
        }
    }

    /// The table of a stream that declares a lookup by it.
    pub fn table(self) -> &'static str {
        match self {
            IdentityKind::Email => "lookup",
            IdentityKind::Id => "lookup_by_id",
        }
    }

    /// Its name, as `--json` and the audit trail write it.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Email => "email",
            IdentityKind::Id => "id",
        }
    }
}

/// A validated lookup.
#[derive(Clone, Debug)]
pub(crate) struct Lookup {
    pub(crate) kind: IdentityKind,
    pub(crate) listing: Listing,
    pub(crate) escape: Escape,
}

/// The fields of a stream's records that hold a person's e-mail address.
pub(crate) fn identity_fields(
    stream: &str,
    identity: Option<IdentityFile>,
) -> Result<Vec<JsonPath>, Problem> {
    identity
        .unwrap_or_default()
        .email
        .iter()
        .map(|field| {
            let at = ["streams", stream, "identity", "email"];
            let parsed = path(field, &at)?;
            if parsed.is_root() {
                return Err(problem(&at, "name the field that holds an e-mail address"));
            }
            Ok(parsed)
        })
        .collect()
}

/// Checks a lookup table and makes its plan. A lookup by e-mail needs the stream's
/// identity fields: a vendor's search can be fuzzy, and what it answers is kept only
/// where a record holds the address itself.
pub(crate) fn lookup_plan(
    stream: &str,
    kind: IdentityKind,
    file: LookupFile,
    emails: &[JsonPath],
    primary_key: &JsonPath,
) -> Result<Lookup, Problem> {
    let table = kind.table();
    let at = |field: &'static str| ["streams", stream, table, field];
    if file.path.trim().is_empty() {
        return Err(problem(&at("path"), "the lookup's path is empty"));
    }
    if kind == IdentityKind::Email && emails.is_empty() {
        return Err(problem(
            &["streams", stream, table],
            format!(
                "a lookup by e-mail needs [streams.{stream}.identity] email = [\"...\"]: the \
                 fields a record found must hold the address in, so that nobody else's \
                 record is taken for the subject's"
            ),
        ));
    }
    let body = request_body(file.method, file.body, &at("body"))?;
    let placeholder = kind.placeholder();
    let other = match kind {
        IdentityKind::Email => IdentityKind::Id,
        IdentityKind::Id => IdentityKind::Email,
    }
    .placeholder();
    let uses = |needle: &str| {
        file.path.contains(needle)
            || file.query.values().any(|value| value.0.contains(needle))
            || body.as_ref().is_some_and(|body| mentions(body, needle))
    };
    if !uses(placeholder) {
        return Err(problem(
            &["streams", stream, table],
            format!(
                "put {placeholder} in the lookup's path, query or body: where the value searched for goes"
            ),
        ));
    }
    if uses(other) {
        return Err(problem(
            &["streams", stream, table],
            format!(
                "a `{table}` searches by {}, so it cannot use {other}",
                kind.as_str()
            ),
        ));
    }
    let single = PaginatorFile {
        kind: PaginatorKind::None,
        param: None,
        next_path: None,
        has_more_path: None,
        id_field: None,
    };
    let paginator = paginator(
        file.paginator.as_ref().unwrap_or(&single),
        &["streams", stream, table, "paginator"],
        primary_key,
        file.method,
    )?;
    let items_path = path(&file.records_path, &at("records_path"))?;
    Ok(Lookup {
        kind,
        escape: file.escape,
        listing: Listing {
            one_record: kind == IdentityKind::Id && items_path.is_root(),
            items_path,
            path: file.path,
            method: file.method,
            query: file
                .query
                .into_iter()
                .map(|(name, value)| (name, value.0))
                .collect(),
            body,
            total_path: file
                .total_path
                .map(|total| path(&total, &at("total_path")))
                .transpose()?,
            paginator,
        },
    })
}

/// Checks an erase table and makes its plan.
pub(crate) fn erase_plan(stream: &str, file: EraseFile) -> Result<ErasePlan, Problem> {
    let at = |field: &'static str| ["streams", stream, "erase", field];
    if !file.path.contains("{id}") {
        return Err(problem(
            &at("path"),
            "put {id} in the erase path: where the record's id goes, e.g. \"/v3/contacts/{id}\"",
        ));
    }
    let mode = match (file.mode, file.anonymize) {
        (EraseModeFile::Delete, None) => EraseMode::Delete,
        (EraseModeFile::Delete, Some(_)) => {
            return Err(problem(
                &at("anonymize"),
                "`anonymize` is what mode = \"anonymize\" writes; a delete writes nothing",
            ));
        }
        (EraseModeFile::Anonymize, Some(fields))
            if fields.as_object().is_some_and(|f| !f.is_empty()) =>
        {
            EraseMode::Anonymize(fields)
        }
        (EraseModeFile::Anonymize, _) => {
            return Err(problem(
                &at("anonymize"),
                "mode = \"anonymize\" needs `anonymize = { field = value, ... }`: the values that \
                 replace the person's",
            ));
        }
    };
    Ok(ErasePlan {
        path: file.path,
        mode,
    })
}
