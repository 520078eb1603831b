//! Source files with mistakes: every error names the file, the line and
//! column, and the field.

use cairn_connectors::rest::{ConfigError, RestConfig};

use crate::common::{PROFILES, profile_path};

/// A valid file; each case below breaks one thing in it.
const VALID: &str = r#"name = "crm"
base_url = "http://127.0.0.1:8787"

[streams.contacts]
path = "/crm/v3/objects/contacts"
query = { limit = 100 }
records_path = "results"
primary_key = "id"
cursor_field = "updated_at"

[streams.contacts.incremental]
client_filter = true

[streams.contacts.paginator]
kind = "cursor"
param = "after"
next_path = "paging.next.after"
"#;

/// Writes `text` to a file and loads it, expecting an error.
fn load(case: &str, text: &str) -> ConfigError {
    let dir = std::env::temp_dir().join(format!("cairn-rest-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{case}.toml"));
    std::fs::write(&path, text).unwrap();
    let error = RestConfig::from_file(&path).expect_err(case);
    std::fs::remove_file(&path).unwrap();
    error
}

/// Asserts the error's place and field, and that its message says `words`.
fn assert_at(error: &ConfigError, case: &str, at: (usize, usize), field: &str, words: &str) {
    let text = error.to_string();
    let ConfigError::Invalid {
        file,
        line,
        column,
        field: named,
        message,
    } = error
    else {
        panic!("{case}: {text}");
    };
    assert!(file.ends_with(&format!("{case}.toml")), "{text}");
    assert_eq!((*line, *column), at, "{text}");
    assert_eq!(named, field, "{text}");
    assert!(message.contains(words), "{text}");
    assert!(
        text.starts_with(&format!("{file}:{}:{}: ", at.0, at.1)),
        "{text}"
    );
}

#[test]
fn the_valid_file_and_every_profile_load() {
    let config = RestConfig::parse(VALID, "valid.toml").unwrap();
    assert_eq!(config.name(), "crm");
    for name in PROFILES {
        let config = RestConfig::from_file(profile_path(name)).unwrap();
        assert_eq!(config.name(), name);
        assert_eq!(
            config.stream_names().collect::<Vec<_>>(),
            ["companies", "contacts", "deals"]
        );
    }
}

#[test]
fn http_settings_reach_the_client_config() {
    let text = VALID.replace(
        "\n[streams.contacts]",
        "\n[rate_limit]\nrequests_per_second = 5.0\n\n[headers]\n\"X-Tenant\" = \"acme\"\n\n[streams.contacts]",
    );
    let config = RestConfig::parse(&text, "http.toml")
        .unwrap()
        .with_base_url("https://eu.example.com/")
        .unwrap();
    let http = config.http();
    assert_eq!(http.base_url, "https://eu.example.com");
    assert_eq!(
        http.rate_limit.as_ref().map(|r| r.requests_per_second),
        Some(5.0)
    );
    assert_eq!(http.headers["X-Tenant"], "acme".into());
}

#[test]
fn a_syntax_error_names_its_line() {
    let text = VALID.replace("primary_key = \"id\"", "primary_key = \"id");
    let error = load("syntax", &text);
    let ConfigError::Invalid { line, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(*line, 8, "{error}");
    assert!(error.to_string().contains("syntax.toml:8:"), "{error}");
}

#[test]
fn an_unknown_field_is_named_where_it_is() {
    let text = VALID.replace("records_path =", "record_path =");
    let error = load("unknown", &text);
    assert_at(
        &error,
        "unknown",
        (7, 1),
        "streams.contacts.record_path",
        "unknown field `record_path`",
    );
}

#[test]
fn a_missing_field_is_named_at_its_table() {
    let text = VALID.replace("primary_key = \"id\"\n", "");
    let error = load("missing", &text);
    assert_at(
        &error,
        "missing",
        (4, 1),
        "streams.contacts.primary_key",
        "missing field `primary_key`",
    );
}

#[test]
fn a_missing_top_level_field_is_named() {
    let text = VALID.replace("name = \"crm\"\n", "");
    let error = load("toplevel", &text);
    let ConfigError::Invalid { field, line, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!((field.as_str(), *line), ("name", 1), "{error}");
    assert!(
        error.to_string().contains("missing field `name`"),
        "{error}"
    );
}

#[test]
fn a_paginator_without_the_fields_its_kind_needs() {
    let text = VALID.replace("next_path = \"paging.next.after\"\n", "");
    let error = load("paginator", &text);
    assert_at(
        &error,
        "paginator",
        (14, 1),
        "streams.contacts.paginator.next_path",
        "a `cursor` paginator needs `next_path`",
    );

    let text = VALID.replace("kind = \"cursor\"", "kind = \"link_header\"");
    let error = load("extra", &text);
    assert_at(
        &error,
        "extra",
        (16, 1),
        "streams.contacts.paginator.param",
        "does not read `param`",
    );

    let text = VALID.replace("kind = \"cursor\"", "kind = \"cursr\"");
    let error = load("kind", &text);
    assert_at(
        &error,
        "kind",
        (15, 8),
        "streams.contacts.paginator.kind",
        "unknown variant `cursr`",
    );
}

#[test]
fn rules_across_fields_are_checked_with_the_same_precision() {
    let text = VALID.replace("cursor_field = \"updated_at\"\n", "");
    let error = load("incremental", &text);
    assert_at(
        &error,
        "incremental",
        (10, 1),
        "streams.contacts.incremental",
        "need the stream's `cursor_field`",
    );

    let text = VALID.replace(
        "base_url = \"http://127.0.0.1:8787\"",
        "base_url = \"ftp://x\"",
    );
    let error = load("base", &text);
    assert_at(&error, "base", (2, 1), "base_url", "only http and https");

    let text = VALID.replace("records_path = \"results\"", "records_path = \"results.\"");
    let error = load("path", &text);
    assert_at(
        &error,
        "path",
        (7, 1),
        "streams.contacts.records_path",
        "is not a path",
    );
}

#[test]
fn wrong_types_and_unknown_auth_kinds_are_located() {
    let text = VALID.replace("primary_key = \"id\"", "primary_key = 7");
    let error = load("type", &text);
    assert_at(
        &error,
        "type",
        (8, 15),
        "streams.contacts.primary_key",
        "invalid type",
    );

    let text = VALID.replace(
        "\n[streams.contacts]",
        "\n[auth]\nkind = \"kerberos\"\n\n[streams.contacts]",
    );
    let error = load("auth", &text);
    let ConfigError::Invalid { line, field, .. } = &error else {
        panic!("{error}");
    };
    assert!(field.starts_with("auth"), "{error}");
    assert!((4..=5).contains(line), "{error}");
}

#[test]
fn an_unreadable_file_is_named() {
    let error = RestConfig::from_file("/nonexistent/cairn/source.toml").unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(
        error.to_string().contains("/nonexistent/cairn/source.toml"),
        "{error}"
    );
    let error = RestConfig::parse(VALID, "valid.toml")
        .unwrap()
        .with_base_url("not a url")
        .unwrap_err();
    assert!(error.to_string().contains("valid.toml"), "{error}");
}

/// The 1-based line of `text` where `needle` first is.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).expect("the needle is in the text");
    text[..at].lines().count() + usize::from(text[..at].ends_with('\n'))
}

#[test]
fn request_bodies_are_checked_where_written() {
    let post = VALID.replace(
        "records_path = \"results\"",
        "method = \"post\"\nbody = { limit = 100 }\nrecords_path = \"results\"",
    );
    assert!(
        RestConfig::parse(&post, "post.toml").is_ok(),
        "a post listing with a body loads"
    );
    let cases: [(&str, String, &str, &str, &str); 6] = [
        (
            "get-body",
            VALID.replace(
                "records_path = \"results\"",
                "body = { limit = 100 }\nrecords_path = \"results\"",
            ),
            "body = {",
            "streams.contacts.body",
            "sends no body",
        ),
        (
            "post-link",
            post.replace(
                "kind = \"cursor\"\nparam = \"after\"\nnext_path = \"paging.next.after\"",
                "kind = \"link_header\"",
            ),
            "kind = \"link_header\"",
            "streams.contacts.paginator.kind",
            "lose its body",
        ),
        (
            "two-filters",
            post.replace(
                "client_filter = true",
                "param = \"since\"\nbody = { q = \"{since}\" }",
            ),
            "body = { q",
            "streams.contacts.incremental.body",
            "not two",
        ),
        (
            "no-since",
            post.replace("client_filter = true", "body = { q = \"all\" }"),
            "body = { q",
            "streams.contacts.incremental.body",
            "contains {since}",
        ),
        (
            "date",
            post.replace(
                "body = { limit = 100 }",
                "body = { from = 2026-01-01T00:00:00Z }",
            ),
            "body = { from",
            "streams.contacts.body",
            "JSON has no dates",
        ),
        (
            "graphql",
            post.replace(
                "kind = \"cursor\"\nparam = \"after\"\nnext_path = \"paging.next.after\"",
                "kind = \"graphql\"\nnext_path = \"data.c.pageInfo.endCursor\"",
            ),
            "kind = \"graphql\"",
            "streams.contacts.paginator.has_more_path",
            "needs `has_more_path`",
        ),
    ];
    for (case, text, needle, field, words) in cases {
        let error = load(case, &text);
        let ConfigError::Invalid { line, .. } = &error else {
            panic!("{case}: {error}");
        };
        // A missing field is named at its table, which starts on the line above.
        let expected = line_of(&text, needle);
        assert!(
            *line == expected || *line + 1 == expected,
            "{case}: {error} (expected line {expected})"
        );
        assert_at(&error, case, (*line, 1), field, words);
    }
}

#[test]
fn lookups_are_checked_where_written() {
    let lookup = "\n[streams.contacts.lookup]\npath = \"/search\"\nquery = { email = \"{email}\" }\nrecords_path = \"results\"\n";
    let identity = "\n[streams.contacts.identity]\nemail = [\"email\"]\n";
    let valid = format!("{VALID}{identity}{lookup}");
    assert!(RestConfig::parse(&valid, "lookup.toml").is_ok());
    let cases = [
        (
            "no-identity",
            format!("{VALID}{lookup}"),
            "streams.contacts.lookup",
            "needs [streams.contacts.identity]",
        ),
        (
            "no-placeholder",
            valid.replace("{ email = \"{email}\" }", "{ email = \"x\" }"),
            "streams.contacts.lookup",
            "put {email} in the lookup's path",
        ),
        (
            "wrong-placeholder",
            valid.replace("path = \"/search\"", "path = \"/search/{id}\""),
            "streams.contacts.lookup",
            "cannot use {id}",
        ),
        (
            "root-identity",
            valid.replace("email = [\"email\"]", "email = [\"\"]"),
            "streams.contacts.identity.email",
            "holds an e-mail address",
        ),
    ];
    for (case, text, field, words) in cases {
        let error = load(case, &text);
        let ConfigError::Invalid {
            field: named,
            message,
            ..
        } = &error
        else {
            panic!("{case}: {error}");
        };
        assert_eq!(named, field, "{case}: {error}");
        assert!(message.contains(words), "{case}: {error}");
    }
}
