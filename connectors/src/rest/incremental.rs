//! Writing a `since` watermark into a request in the form the vendor wants.

use chrono::SecondsFormat;

use super::schema::SinceFormat;
use crate::source::parse_instant;

/// `since` as the vendor's filter wants it, or why it cannot be.
pub(crate) fn render(since: &str, format: SinceFormat) -> Result<String, String> {
    if format == SinceFormat::Raw {
        return Ok(since.to_owned());
    }
    let instant = parse_instant(since).ok_or_else(|| {
        format!("the watermark {since:?} is not an instant, so it cannot be written as {format:?}")
    })?;
    Ok(match format {
        SinceFormat::Raw => since.to_owned(),
        SinceFormat::Rfc3339 => instant.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        SinceFormat::UnixSeconds => instant.timestamp().to_string(),
        SinceFormat::UnixMillis => instant.timestamp_millis().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::render;
    use crate::rest::SinceFormat;

    #[test]
    fn watermarks_render_in_the_vendor_form_rounding_down() {
        let since = "2026-01-01T00:00:01.900Z";
        assert_eq!(render(since, SinceFormat::Raw).as_deref(), Ok(since));
        assert_eq!(
            render(since, SinceFormat::UnixSeconds).as_deref(),
            Ok("1767225601")
        );
        assert_eq!(
            render(since, SinceFormat::UnixMillis).as_deref(),
            Ok("1767225601900")
        );
        assert_eq!(
            render("1767225601", SinceFormat::Rfc3339).as_deref(),
            Ok("2026-01-01T00:00:01Z")
        );
        assert!(render("later", SinceFormat::UnixSeconds).is_err());
    }
}
