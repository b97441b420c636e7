//! Wall-clock timestamps in the one format the contract uses: RFC 3339, UTC, milliseconds.

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Now, as an RFC 3339 UTC string with millisecond precision (`2026-11-26T15:06:19.123Z`).
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    // Truncate to milliseconds: clients (JS `Date`) keep no more, and equal strings sort equally.
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339)
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
}
