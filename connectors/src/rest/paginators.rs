//! The `[...paginator]` tables of a source file: each kind with the fields it reads,
//! required ones present and no field it does not read.

use super::config::{Problem, path, problem};
use super::schema::{PaginatorFile, PaginatorKind, RequestMethod};
use crate::paginate::{JsonPath, Paginator};

/// The paginator of one listing, with its kind's required fields present and
/// no field its kind does not read. A `POST` listing's `param` is a path in its body,
/// and it cannot follow next URLs (they are fetched with `GET`, without the body).
pub(super) fn paginator(
    file: &PaginatorFile,
    at: &[&str],
    id_field: &JsonPath,
    method: RequestMethod,
) -> Result<Paginator, Problem> {
    let kind = file.kind;
    let field_at = |field: &'static str| -> Vec<&str> {
        let mut path = at.to_vec();
        path.push(field);
        path
    };
    let reads: &[&str] = match kind {
        PaginatorKind::None | PaginatorKind::LinkHeader => &[],
        PaginatorKind::Cursor | PaginatorKind::PageToken => &["param", "next_path"],
        PaginatorKind::Offset => &["param"],
        PaginatorKind::NextUrl => &["next_path"],
        PaginatorKind::Stripe => &["param", "has_more_path", "id_field"],
        PaginatorKind::Graphql => &["param", "next_path", "has_more_path"],
    };
    if method == RequestMethod::Post {
        if matches!(kind, PaginatorKind::LinkHeader | PaginatorKind::NextUrl) {
            return Err(problem(
                &field_at("kind"),
                format!(
                    "a `{}` paginator follows URLs the vendor gives, which a `POST` listing \
                     cannot (the next page would lose its body); page it by a token or an offset",
                    kind.name()
                ),
            ));
        }
        if let Some(param) = &file.param {
            path(param, &field_at("param"))?;
        }
    }
    for (field, present) in [
        ("param", file.param.is_some()),
        ("next_path", file.next_path.is_some()),
        ("has_more_path", file.has_more_path.is_some()),
        ("id_field", file.id_field.is_some()),
    ] {
        if present && !reads.contains(&field) {
            let reads = if reads.is_empty() {
                "no other field".to_owned()
            } else {
                reads
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(problem(
                &field_at(field),
                format!(
                    "a `{}` paginator does not read `{field}` (it reads {reads})",
                    kind.name()
                ),
            ));
        }
    }
    let required = |value: &Option<String>, field: &'static str, what: &str| {
        value.clone().ok_or_else(|| {
            problem(
                &field_at(field),
                format!("a `{}` paginator needs `{field}`: {what}", kind.name()),
            )
        })
    };
    let param = |default: &str| file.param.clone().unwrap_or_else(|| default.to_owned());
    let next_path = |default: &str| {
        path(
            file.next_path.as_deref().unwrap_or(default),
            &field_at("next_path"),
        )
    };
    Ok(match kind {
        PaginatorKind::None => Paginator::Single,
        PaginatorKind::LinkHeader => Paginator::LinkHeader,
        PaginatorKind::Cursor => {
            let param = required(
                &file.param,
                "param",
                "the query parameter the token goes back in",
            )?;
            let next = required(
                &file.next_path,
                "next_path",
                "where the next token is in the body, e.g. \"paging.next.after\"",
            )?;
            Paginator::Token {
                param,
                next_path: path(&next, &field_at("next_path"))?,
            }
        }
        PaginatorKind::PageToken => Paginator::Token {
            param: param("pageToken"),
            next_path: next_path("nextPageToken")?,
        },
        PaginatorKind::Offset => Paginator::Offset {
            param: param("offset"),
        },
        PaginatorKind::NextUrl => {
            let next = required(
                &file.next_path,
                "next_path",
                "where the next page's URL is in the body, e.g. \"nextRecordsUrl\"",
            )?;
            Paginator::NextUrl {
                next_path: path(&next, &field_at("next_path"))?,
            }
        }
        PaginatorKind::Graphql => Paginator::Connection {
            param: param("variables.after"),
            end_cursor_path: path(
                &required(
                    &file.next_path,
                    "next_path",
                    "where the end cursor is, e.g. \"data.contacts.pageInfo.endCursor\"",
                )?,
                &field_at("next_path"),
            )?,
            has_next_path: path(
                &required(
                    &file.has_more_path,
                    "has_more_path",
                    "where the next-page flag is, e.g. \"data.contacts.pageInfo.hasNextPage\"",
                )?,
                &field_at("has_more_path"),
            )?,
        },
        PaginatorKind::Stripe => Paginator::Stripe {
            param: param("starting_after"),
            has_more_path: path(
                file.has_more_path.as_deref().unwrap_or("has_more"),
                &field_at("has_more_path"),
            )?,
            id_field: match &file.id_field {
                Some(field) => path(field, &field_at("id_field"))?,
                None => id_field.clone(),
            },
        },
    })
}
