//! `schedule`: when a scheduled function runs. Standard 5-field cron in UTC
//! (`minute hour day-of-month month day-of-week`) and the nicknames `@yearly @monthly @weekly
//! @daily @hourly`, as Netlify accepts; a 6-field form with a leading seconds field is fnhost's
//! extension. Parsed by the `croner` crate (POSIX weekdays: 0 and 7 are Sunday).

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

impl Schedule {
    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.trunc_subsecs(0), false)
            .ok()
    }

    /// The last tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.trunc_subsecs(0), true)
            .ok()
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let fields = text.split_whitespace().count();
        if !text.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid schedule {s:?}: expected 5 cron fields (minute hour day month weekday, \
                 UTC), 6 with leading seconds, or @yearly, @monthly, @weekly, @daily, @hourly"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(text)
            .map_err(|e| format!("invalid schedule {s:?}: {e}"))?;
        // `0 0 30 2 *` parses but names no date: refused here rather than warned of at run time.
        if cron.find_next_occurrence(&Utc::now(), false).is_err() {
            return Err(format!(
                "invalid schedule {s:?}: it never fires (no date matches every field)"
            ));
        }
        Ok(Schedule {
            text: text.to_string(),
            cron,
        })
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.text == other.text
    }
}

impl Eq for Schedule {}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (security item 4): a schedule naming no date was accepted, with only a
    /// runtime warning that it had no next run.
    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        for text in ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 31 11 *"] {
            let e = text.parse::<Schedule>().unwrap_err();
            assert!(e.contains("never fires"), "{text}: {e}");
        }
        assert!(
            "0 0 29 2 *".parse::<Schedule>().is_ok(),
            "leap days do come"
        );
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        let s: Schedule = schedule.parse().unwrap();
        s.next_after(at(after)).unwrap().to_rfc3339()
    }

    #[test]
    fn five_fields_nicknames_and_seconds() {
        assert_eq!(
            next("30 9 * * 1", "2026-12-01T10:00:00Z"),
            "2026-12-07T09:30:00+00:00",
            "Monday 09:30 UTC, POSIX weekdays"
        );
        assert_eq!(
            next("@hourly", "2026-12-01T10:00:00Z"),
            "2026-12-01T11:00:00+00:00"
        );
        assert_eq!(
            next("@daily", "2026-12-01T10:00:00Z"),
            "2026-12-02T00:00:00+00:00"
        );
        assert_eq!(
            next("@weekly", "2026-12-01T10:00:00Z"),
            "2026-12-06T00:00:00+00:00"
        );
        assert_eq!(
            next("@yearly", "2026-12-01T10:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("*/2 * * * * *", "2026-12-01T10:00:00.500Z"),
            "2026-12-01T10:00:02+00:00"
        );
        assert_eq!(
            next("0 0 * * 0", "2026-12-01T00:00:00Z"),
            next("0 0 * * 7", "2026-12-01T00:00:00Z")
        );
    }

    #[test]
    fn month_ends_and_leap_days() {
        assert_eq!(
            next("@monthly", "2026-01-31T12:00:00Z"),
            "2026-02-01T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 31 * *", "2026-04-01T00:00:00Z"),
            "2026-05-31T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        let daily: Schedule = "@daily".parse().unwrap();
        assert_eq!(
            daily
                .latest_at_or_before(at("2028-03-01T05:00:00Z"))
                .unwrap()
                .to_rfc3339(),
            "2028-03-01T00:00:00+00:00"
        );
        assert_eq!(
            daily
                .latest_at_or_before(at("2028-03-01T00:00:00Z"))
                .unwrap()
                .to_rfc3339(),
            "2028-03-01T00:00:00+00:00",
            "a tick is its own latest"
        );
    }

    #[test]
    fn bad_schedules_quote_the_value_and_say_why() {
        for bad in ["61 * * * *", "* * *", "@sometimes", "0 0 * * * * 2027", ""] {
            let e = bad.parse::<Schedule>().unwrap_err();
            assert!(e.starts_with(&format!("invalid schedule {bad:?}")), "{e}");
        }
    }
}
