//! Timestamps as the audit log writes them (RFC 3339, UTC, nanoseconds) and as
//! `moat events` shows them (local time, milliseconds).

use jiff::{tz::TimeZone, Timestamp};

/// Formats nanoseconds since the Unix epoch as RFC 3339 in UTC with nine
/// fractional digits, e.g. `2026-05-20T10:11:12.000000001Z`. Out-of-range values
/// (beyond year 9999) are clamped to the range jiff supports.
pub fn rfc3339_nanos(unix_ns: i128) -> String {
    let timestamp = Timestamp::from_nanosecond(unix_ns).unwrap_or(if unix_ns < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    timestamp.strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// An RFC 3339 timestamp as local time (the `TZ` variable, else
/// `/etc/localtime`), to the millisecond (truncated), with the local offset:
/// `2026-05-20T12:11:12.123+02:00`. `None` if it does not parse.
pub fn local_time(timestamp: &str, zone: &TimeZone) -> Option<String> {
    let timestamp: Timestamp = timestamp.parse().ok()?;
    // Truncate, not round, to the millisecond, as the display has always done.
    let millis = timestamp.as_millisecond();
    let timestamp = Timestamp::from_millisecond(millis).ok()?;
    Some(
        timestamp
            .to_zoned_datetime(zone.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
    )
}

/// The system's time zone (`TZ`, else `/etc/localtime`), UTC if neither says.
pub fn system_zone() -> TimeZone {
    TimeZone::try_system().unwrap_or(TimeZone::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_nanoseconds() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_779_271_872_123_456_789),
            "2026-05-20T10:11:12.123456789Z"
        );
        assert_eq!(
            rfc3339_nanos(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn shows_local_time_to_the_millisecond() {
        let zone = TimeZone::posix("EET-2").unwrap();
        assert_eq!(
            local_time("2026-05-20T10:11:12.123456789Z", &zone).as_deref(),
            Some("2026-05-20T12:11:12.123+02:00")
        );
        assert_eq!(
            local_time("2026-05-20T23:59:59.9999Z", &zone).as_deref(),
            Some("2026-05-21T01:59:59.999+02:00")
        );
        assert_eq!(
            local_time("2026-05-20T12:11:12.5+02:00", &TimeZone::UTC).as_deref(),
            Some("2026-05-20T10:11:12.500+00:00")
        );
        assert_eq!(local_time("2026-05-20T10:11:12", &zone), None);
        assert_eq!(local_time("2026-13-20T10:11:12Z", &zone), None);
        assert_eq!(local_time("yesterday", &zone), None);
    }
}
