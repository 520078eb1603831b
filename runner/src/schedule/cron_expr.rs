//! Cron expressions read in a time zone, with errors that name the bad part.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A validated cron expression and the time zone it is read in.
///
/// Five fields (`min hour day-of-month month day-of-week`) fire at second 0; six or
/// seven fields start with seconds (and may end with a year), as the `cron` crate reads
/// them. Day-of-week numbers run 1-7 from Sunday; names (`Mon-Fri`) are clearer.
#[derive(Clone)]
pub struct Cron {
    expression: String,
    timezone: Tz,
    schedule: cron::Schedule,
}

/// A cron expression or time zone that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// The expression has the wrong number of fields.
    #[error(
        "cron expression `{expression}` has {found} fields; expected 5 (min hour day month \
         weekday), 6 (with seconds first) or 7 (with a year last)"
    )]
    FieldCount {
        /// The expression.
        expression: String,
        /// How many fields it has.
        found: usize,
    },
    /// One field is not valid.
    #[error("cron expression `{expression}`: the {field} field `{value}` is invalid ({reason})")]
    Field {
        /// The expression.
        expression: String,
        /// Which field (`second`, `minute`, `hour`, `day-of-month`, `month`,
        /// `day-of-week`, `year`).
        field: &'static str,
        /// What the field holds.
        value: String,
        /// What the parser said.
        reason: String,
    },
    /// The fields are each valid but not together (or never fire).
    #[error("cron expression `{expression}` is invalid: {reason}")]
    Expression {
        /// The expression.
        expression: String,
        /// What the parser said.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error("unknown time zone `{0}`; use an IANA name such as UTC or Europe/Berlin")]
    TimeZone(String),
}

const FIELDS: [&str; 7] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
    "year",
];

impl Cron {
    /// Parses `expression` read in `timezone` (an IANA name such as `UTC` or
    /// `Europe/Berlin`).
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, CronError> {
        let timezone =
            Tz::from_str(timezone.trim()).map_err(|_| CronError::TimeZone(timezone.to_owned()))?;
        let expression = expression.trim().to_owned();
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let full: Vec<&str> = match fields.len() {
            5 => std::iter::once("0").chain(fields.iter().copied()).collect(),
            6 | 7 => fields.clone(),
            found => return Err(CronError::FieldCount { expression, found }),
        };
        let schedule = match cron::Schedule::from_str(&full.join(" ")) {
            Ok(schedule) => schedule,
            Err(err) => return Err(Self::blame(&expression, &full, fields.len(), &err)),
        };
        let cron = Self {
            expression,
            timezone,
            schedule,
        };
        if cron.next_after(Utc::now()).is_none() {
            return Err(CronError::Expression {
                expression: cron.expression,
                reason: "it never fires again".to_owned(),
            });
        }
        Ok(cron)
    }

    /// Finds the field the parser refuses by parsing each alone among wildcards.
    fn blame(
        expression: &str,
        full: &[&str],
        written: usize,
        err: &cron::error::Error,
    ) -> CronError {
        for (i, value) in full.iter().enumerate() {
            let mut probe = vec!["*"; full.len()];
            probe[i] = value;
            if let Err(field_err) = cron::Schedule::from_str(&probe.join(" ")) {
                // A five-field expression has no seconds field of its own.
                if written == 5 && i == 0 {
                    break;
                }
                return CronError::Field {
                    expression: expression.to_owned(),
                    field: FIELDS[i],
                    value: (*value).to_owned(),
                    reason: last_line(&field_err),
                };
            }
        }
        CronError::Expression {
            expression: expression.to_owned(),
            reason: last_line(err),
        }
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's IANA name.
    pub fn timezone(&self) -> &str {
        self.timezone.name()
    }

    /// The first fire time strictly after `at`.
    pub fn next_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&at.with_timezone(&self.timezone))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Fire times from `from` (inclusive) up to `until` (inclusive), in order.
    pub fn between(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        // `after` is exclusive; start a hair before `from` so `from` itself counts.
        let start = from - chrono::Duration::milliseconds(1);
        self.schedule
            .after(&start.with_timezone(&self.timezone))
            .map(|t| t.with_timezone(&Utc))
            .take_while(move |t| *t <= until)
    }
}

/// The parser's explanation without the copy of the expression and the caret it
/// draws above it, so the message stays on one line.
fn last_line(err: &cron::error::Error) -> String {
    let text = err.to_string();
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(&text)
        .trim()
        .to_owned()
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cron")
            .field("expression", &self.expression)
            .field("timezone", &self.timezone.name())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_fire_at_second_zero() {
        let cron = Cron::parse("*/5 * * * *", "UTC").unwrap();
        let at = DateTime::parse_from_rfc3339("2026-01-01T10:02:30Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            cron.next_after(at).unwrap().to_rfc3339(),
            "2026-01-01T10:05:00+00:00"
        );
    }

    #[test]
    fn seconds_and_time_zones() {
        let cron = Cron::parse("30 0 9 * * *", "Europe/Berlin").unwrap();
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            cron.next_after(at).unwrap().to_rfc3339(),
            "2026-01-01T08:00:30+00:00"
        );
    }

    #[test]
    fn errors_name_the_bad_part() {
        let err = Cron::parse("0 25 * * *", "UTC").unwrap_err();
        assert!(
            matches!(&err, CronError::Field { field: "hour", value, .. } if value == "25"),
            "{err}"
        );
        let err = Cron::parse("* * *", "UTC").unwrap_err();
        assert!(
            matches!(err, CronError::FieldCount { found: 3, .. }),
            "{err}"
        );
        let err = Cron::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(err, CronError::TimeZone("Mars/Olympus".to_owned()));
    }
}
