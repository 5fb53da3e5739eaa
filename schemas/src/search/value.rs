//! Value rules shared by indexing and searching: string normalisation and
//! FHIR date precision ranges.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The instants a date value covers at its precision: `[lo, hi)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateRange {
    pub lo: DateTime<Utc>,
    pub hi: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("'{0}' is not a FHIR date, dateTime or instant")]
    BadDate(String),
}

/// The lower bound standing in for "no start" (a Period without `start`):
/// 0001-01-01T00:00:00Z, the first instant a FHIR date can name.
pub fn far_past() -> DateTime<Utc> {
    // Year 1 is always representable; the fallback only satisfies the types.
    NaiveDate::from_ymd_opt(1, 1, 1)
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The upper bound standing in for "no end" (a Period without `end`):
/// 10000-01-01T00:00:00Z, i.e. the exclusive end of year 9999, the last
/// year a FHIR date can name.
pub fn far_future() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(10000, 1, 1)
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Lower case with accents removed, for case- and accent-insensitive
/// string search.
pub fn normalize(s: &str) -> String {
    // Lower-casing first: it can itself produce combining marks ('İ' becomes
    // 'i' + U+0307), which the decomposition step then drops.
    s.to_lowercase().nfd().filter(|c| !is_combining_mark(*c)).collect()
}

/// Parses `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a dateTime with optional
/// seconds, fraction and zone (no zone means UTC) into its range.
///
/// The range is the value's precision: a year, a month, a day (UTC midnight
/// to midnight), a minute, a second, or the unit of the last fraction digit
/// (nanoseconds at most; further digits are truncated, which keeps the true
/// instant inside the range). Leap seconds (`:60`) are refused.
pub fn parse_date_range(s: &str) -> Result<DateRange, ValueError> {
    parse(s).ok_or_else(|| ValueError::BadDate(crate::resource::truncate(s)))
}

fn parse(s: &str) -> Option<DateRange> {
    let mut c = Cursor { b: s.as_bytes(), i: 0 };
    let year = c.number(4)? as i32;
    if year == 0 {
        return None; // FHIR years start at 0001
    }
    if c.done() {
        return Some(DateRange { lo: midnight(year, 1, 1)?, hi: midnight(year + 1, 1, 1)? });
    }
    c.expect(b'-')?;
    let month = c.number(2)?;
    if c.done() {
        let lo = midnight(year, month, 1)?;
        let hi = if month == 12 { midnight(year + 1, 1, 1)? } else { midnight(year, month + 1, 1)? };
        return Some(DateRange { lo, hi });
    }
    c.expect(b'-')?;
    let day = c.number(2)?;
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    if c.done() {
        let lo = midnight(year, month, day)?;
        return Some(DateRange { lo, hi: lo.checked_add_signed(TimeDelta::days(1))? });
    }
    c.expect(b'T')?;
    let hour = c.number(2)?;
    c.expect(b':')?;
    let minute = c.number(2)?;
    let (second, nanos, step) = if c.eat(b':') {
        let second = c.number(2)?;
        if c.eat(b'.') {
            let (nanos, step) = c.fraction()?;
            (second, nanos, step)
        } else {
            (second, 0, TimeDelta::seconds(1))
        }
    } else {
        (0, 0, TimeDelta::minutes(1))
    };
    let offset = c.zone()?;
    if !c.done() {
        return None;
    }
    // `and_hms_nano_opt` would read nanos >= 1e9 as a leap second; `fraction`
    // never yields those, and second 60 is refused here.
    if second > 59 {
        return None;
    }
    let local = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    let lo = local.checked_sub_signed(offset)?.and_utc();
    Some(DateRange { lo, hi: lo.checked_add_signed(step)? })
}

fn midnight(year: i32, month: u32, day: u32) -> Option<DateTime<Utc>> {
    Some(NaiveDate::from_ymd_opt(year, month, day)?.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// A strict left-to-right reader: every part has a fixed width, so nothing
/// lenient (signs, spaces, short fields) slips through.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.i == self.b.len()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.b.get(self.i) == Some(&byte);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// Exactly `width` ASCII digits.
    fn number(&mut self, width: usize) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + width)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += width;
        Some(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    }

    /// One or more fraction digits: the nanoseconds and the unit of the
    /// last digit kept.
    fn fraction(&mut self) -> Option<(u32, TimeDelta)> {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        if digits.is_empty() {
            return None;
        }
        let kept = &digits[..digits.len().min(9)];
        let unit = 10u32.pow(9 - kept.len() as u32);
        let value = kept.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        Some((value * unit, TimeDelta::nanoseconds(i64::from(unit))))
    }

    /// `Z`, `+hh:mm`, `-hh:mm` (up to 14:00, as FHIR allows) or nothing (UTC).
    fn zone(&mut self) -> Option<TimeDelta> {
        if self.eat(b'Z') {
            return Some(TimeDelta::zero());
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return Some(TimeDelta::zero());
        };
        let hours = self.number(2)?;
        self.expect(b':')?;
        let minutes = self.number(2)?;
        if minutes > 59 || hours > 14 || (hours == 14 && minutes > 0) {
            return None;
        }
        Some(TimeDelta::minutes(sign * i64::from(hours * 60 + minutes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn range(s: &str) -> (DateTime<Utc>, DateTime<Utc>) {
        let r = parse_date_range(s).unwrap();
        (r.lo, r.hi)
    }

    #[test]
    fn normalizing_lowers_case_and_drops_accents() {
        assert_eq!(normalize("Zoë Ångström"), "zoe angstrom");
        assert_eq!(normalize("José MÜLLER-Lüdenscheidt"), "jose muller-ludenscheidt");
        assert_eq!(normalize("İstanbul"), "istanbul");
        assert_eq!(normalize("Ærøskøbing"), "ærøskøbing", "letters that are not base + accent stay");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn a_year_covers_the_whole_year() {
        assert_eq!(range("2021"), (at("2021-01-01T00:00:00Z"), at("2022-01-01T00:00:00Z")));
    }

    #[test]
    fn a_month_covers_the_whole_month_including_december_and_february() {
        assert_eq!(range("2021-03"), (at("2021-03-01T00:00:00Z"), at("2021-04-01T00:00:00Z")));
        assert_eq!(range("2021-12"), (at("2021-12-01T00:00:00Z"), at("2022-01-01T00:00:00Z")));
        assert_eq!(range("2024-02"), (at("2024-02-01T00:00:00Z"), at("2024-03-01T00:00:00Z")));
    }

    #[test]
    fn a_day_covers_utc_midnight_to_midnight() {
        assert_eq!(range("2021-03-04"), (at("2021-03-04T00:00:00Z"), at("2021-03-05T00:00:00Z")));
    }

    #[test]
    fn a_leap_day_exists_only_in_leap_years() {
        assert_eq!(range("2024-02-29"), (at("2024-02-29T00:00:00Z"), at("2024-03-01T00:00:00Z")));
        assert!(parse_date_range("2023-02-29").is_err());
        assert!(parse_date_range("1900-02-29").is_err());
        assert!(parse_date_range("2000-02-29").is_ok());
    }

    #[test]
    fn minutes_seconds_and_fractions_cover_their_unit() {
        assert_eq!(range("2021-03-04T10:20Z"), (at("2021-03-04T10:20:00Z"), at("2021-03-04T10:21:00Z")));
        assert_eq!(range("2021-03-04T10:20:30Z"), (at("2021-03-04T10:20:30Z"), at("2021-03-04T10:20:31Z")));
        assert_eq!(range("2021-03-04T10:20:30.123Z"), (at("2021-03-04T10:20:30.123Z"), at("2021-03-04T10:20:30.124Z")));
        assert_eq!(range("2021-03-04T10:20:30.5Z"), (at("2021-03-04T10:20:30.5Z"), at("2021-03-04T10:20:30.6Z")));
        let (lo, hi) = range("2021-03-04T10:20:30.1234567891Z");
        assert_eq!((lo, hi - lo), (at("2021-03-04T10:20:30.123456789Z"), TimeDelta::nanoseconds(1)));
    }

    #[test]
    fn a_zone_shifts_the_range_to_utc_and_no_zone_means_utc() {
        assert_eq!(range("2021-03-04T10:20:30+02:00").0, at("2021-03-04T08:20:30Z"));
        assert_eq!(range("2021-03-04T23:30:00-05:30").0, at("2021-03-05T05:00:00Z"));
        assert_eq!(range("2021-03-04T10:20:30").0, at("2021-03-04T10:20:30Z"));
        assert_eq!(range("2021-03-04T10:20+14:00").0, at("2021-03-03T20:20:00Z"));
    }

    #[test]
    fn the_extreme_years_have_ranges() {
        assert_eq!(range("0001").0, far_past());
        assert_eq!(range("9999").1, far_future());
        assert_eq!(range("9999-12-31T23:59:59.999Z").1, far_future());
    }

    #[test]
    fn garbage_and_out_of_range_values_are_refused() {
        for bad in [
            "",
            "garbage",
            "202",
            "20211",
            "0000",
            "-2021",
            "+2021",
            "2021-",
            "2021-1",
            "2021-00",
            "2021-13",
            "2021-04-31",
            "2021-03-00",
            "2021-03-04T",
            "2021-03-04T10",
            "2021-03-04T24:00",
            "2021-03-04T10:60",
            "2021-03-04T10:20:60",
            "2021-03-04T10:20:30.",
            "2021-03-04T10:20:30.x",
            "2021-03-04T10:20:30Zjunk",
            "2021-03-04 10:20:30",
            "2021-03-04T10:20:30+0200",
            "2021-03-04T10:20:30+15:00",
            "2021-03-04T10:20:30+02:60",
            "2021-03-04Z",
            "2021Z",
            " 2021",
            "2021 ",
            "２０２１",
            "2021-03-04T10:20:30+02:00:00",
        ] {
            assert_eq!(parse_date_range(bad), Err(ValueError::BadDate(bad.to_string())), "{bad:?}");
        }
    }

    #[test]
    fn errors_echo_only_a_prefix_of_long_input() {
        let long = "9".repeat(500);
        let Err(ValueError::BadDate(echo)) = parse_date_range(&long) else { panic!("accepted") };
        assert!(echo.len() < 80);
    }
}
