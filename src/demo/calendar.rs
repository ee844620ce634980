//! Calendar arithmetic for the generated dates, with no date crate: the
//! dataset only needs "days since 1970" turned into ISO 8601 text.

/// Seconds in a day.
pub const DAY_SECS: u64 = 86_400;

/// Days from 1970-01-01 to the civil date `y-m-d` (proleptic Gregorian),
/// after Howard Hinnant's `days_from_civil`.
pub const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day count since 1970-01-01,
/// after Howard Hinnant's `civil_from_days`.
pub const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = era * 400 + yoe + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// `YYYY-MM-DD` for a day count since 1970-01-01.
pub fn date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since 1970-01-01T00:00:00Z.
pub fn timestamp(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / DAY_SECS) as i64);
    let s = secs % DAY_SECS;
    let (hh, mm, ss) = (s / 3600, s / 60 % 60, s % 60);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 1, 1), 19_723);
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(days_from_civil(2024, 2, 29)), "2024-02-29");
        assert_eq!(date(days_from_civil(2024, 3, 1) - 1), "2024-02-29");
        assert_eq!(timestamp(1_709_164_800 + 3_723), "2024-02-29T01:02:03Z");
    }

    #[test]
    fn round_trips_every_day_of_several_years() {
        for days in days_from_civil(2017, 1, 1)..days_from_civil(2026, 1, 1) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
