//! Wall-clock timestamps in the one format the contract uses: RFC 3339, UTC, milliseconds.

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// RFC 3339 in UTC with exactly three fraction digits: stored timestamps are compared as text
/// (`ORDER BY created_at`), and variable-length fractions would sort `…:01.1Z` after `…:01.12Z`.
const RFC3339_MILLIS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Now, as an RFC 3339 UTC string with millisecond precision (`2026-11-26T15:06:19.123Z`).
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub fn format_rfc3339(t: OffsetDateTime) -> String {
    // Milliseconds: clients (JS `Date`) keep no more, and equal strings sort equally.
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(RFC3339_MILLIS)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Seconds since the Unix epoch, as JWT `exp` is written.
pub fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(format_rfc3339(t), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn later_times_sort_later_as_text() {
        let at = |ms: i128| {
            format_rfc3339(OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap())
        };
        let base = 1_700_000_000_000;
        let texts: Vec<String> = [0, 5, 50, 100, 120, 999, 1000]
            .iter()
            .map(|d| at(base + d))
            .collect();
        assert_eq!(texts[0], "2023-11-14T22:13:20.000Z");
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
    }
}
