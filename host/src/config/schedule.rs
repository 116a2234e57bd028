//! `schedule`: when a scheduled function runs. Standard 5-field cron, in UTC unless
//! `schedule_tz` names an IANA zone (`minute hour day-of-month month day-of-week`), and the
//! nicknames `@yearly @monthly @weekly @daily @hourly`, as Netlify accepts; a 6-field form with
//! a leading seconds field is fnhost's extension. Parsed and walked by the `croner` crate (POSIX
//! weekdays: 0 and 7 are Sunday), zones from `chrono-tz`. In a zone, a time the clocks skip
//! (02:30 on the spring-forward night) runs at the first time after the gap, and a time they
//! repeat (02:30 on the fall-back night) runs once, at its first occurrence (croner's rules):
//! every wall-clock time that matches runs once, so `*/30 * * * *` skips the repeated hour.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule, in UTC or a zone.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
    zone: Option<chrono_tz::Tz>,
}

impl Schedule {
    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// This schedule read in `zone` (its wall clock, DST included).
    pub fn in_zone(mut self, zone: chrono_tz::Tz) -> Schedule {
        self.zone = Some(zone);
        self
    }

    /// Its zone, when not UTC.
    pub fn zone(&self) -> Option<chrono_tz::Tz> {
        self.zone
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.trunc_subsecs(0);
        match self.zone {
            None => self.cron.find_next_occurrence(&t, false).ok(),
            Some(zone) => (self.cron)
                .find_next_occurrence(&t.with_timezone(&zone), false)
                .ok()
                .map(|z| z.with_timezone(&Utc)),
        }
    }

    /// The last tick at or before `t`, as [`Schedule::next_after`] would have found it (a
    /// search backwards into a DST gap lands on the second before it; the forward search, which
    /// names the ticks, snaps to the first time after it — the one kept here).
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.trunc_subsecs(0);
        let back = match self.zone {
            None => self.cron.find_previous_occurrence(&t, true).ok(),
            Some(zone) => (self.cron)
                .find_previous_occurrence(&t.with_timezone(&zone), true)
                .ok()
                .map(|z| z.with_timezone(&Utc)),
        }?;
        let mut latest = back;
        let mut from = back - chrono::Duration::seconds(1);
        // At most a step or two: past the gap, forward and backward agree.
        for _ in 0..4 {
            match self.next_after(from) {
                Some(tick) if tick <= t && tick >= latest => {
                    latest = tick;
                    from = tick;
                }
                _ => break,
            }
        }
        Some(latest)
    }

    /// The next `n` ticks after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        std::iter::successors(self.next_after(t), |&tick| self.next_after(tick))
            .take(n)
            .collect()
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
            zone: None,
        })
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?}, {:?})", self.text, self.zone)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.text == other.text && self.zone == other.zone
    }
}

impl Eq for Schedule {}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `schedule_tz`: an IANA time zone (`"Europe/Paris"`, `"America/New_York"`, `"UTC"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(pub chrono_tz::Tz);

impl<'de> serde::Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<chrono_tz::Tz>().map(Zone).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown time zone {s:?}: expected an IANA name such as \"Europe/Paris\", \
                 \"America/New_York\" or \"UTC\""
            ))
        })
    }
}

/// `overlap`: what a tick does while the function's previous run is still unfinished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// The tick is skipped (logged and counted), not run [default].
    #[default]
    Skip,
    /// The tick runs anyway, beside the previous run.
    Allow,
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

    fn paris(schedule: &str) -> Schedule {
        schedule
            .parse::<Schedule>()
            .unwrap()
            .in_zone(chrono_tz::Europe::Paris)
    }

    /// 02:30 in Paris on the nights the clocks change (2027-03-28: 02:00 → 03:00; 2027-10-31:
    /// 03:00 → 02:00), on a fixed clock.
    #[test]
    fn a_zone_s_dst_gap_and_repeat_are_each_run_once() {
        let s = paris("30 2 * * *");
        // A winter day: 02:30 CET is 01:30 UTC.
        assert_eq!(
            s.next_after(at("2027-01-10T00:00:00Z"))
                .unwrap()
                .to_rfc3339(),
            "2027-01-10T01:30:00+00:00"
        );
        // Spring forward: 02:30 does not exist; it runs at 03:00 CEST (01:00 UTC), once.
        let gap = s.upcoming(at("2027-03-27T12:00:00Z"), 2);
        let gap: Vec<String> = gap.iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            gap,
            ["2027-03-28T01:00:00+00:00", "2027-03-29T00:30:00+00:00"]
        );
        // Fall back: 02:30 happens twice (CEST then CET); it runs at the first only.
        let repeat = s.upcoming(at("2027-10-30T12:00:00Z"), 2);
        let repeat: Vec<String> = repeat.iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            repeat,
            ["2027-10-31T00:30:00+00:00", "2027-11-01T01:30:00+00:00"]
        );
        // Looking back works in the zone too.
        assert_eq!(
            s.latest_at_or_before(at("2027-03-28T05:00:00Z"))
                .unwrap()
                .to_rfc3339(),
            "2027-03-28T01:00:00+00:00"
        );
        // Every matching wall-clock time runs once: the repeated hour's 02:00 and 02:30 (CET)
        // ran already as CEST, so `*/30` skips from 00:30 to 02:00 UTC that night.
        let every = paris("*/30 * * * *").upcoming(at("2027-10-30T23:50:00Z"), 4);
        let every: Vec<String> = every.iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            every,
            [
                "2027-10-31T00:00:00+00:00",
                "2027-10-31T00:30:00+00:00",
                "2027-10-31T02:00:00+00:00",
                "2027-10-31T02:30:00+00:00"
            ]
        );
    }

    #[test]
    fn zones_and_overlap_are_checked_at_load() {
        let load = |toml: &str| {
            crate::config::Config::from_str(toml, std::path::Path::new("fnhost.toml"))
                .map_err(|e| e.to_string())
        };
        let e = load("[functions.a]\nschedule = \"@daily\"\nschedule_tz = \"Mars/Olympus\"\n")
            .unwrap_err();
        assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
        let e = load("[functions.a]\noverlap = \"queue\"\n").unwrap_err();
        assert!(e.contains("unknown variant `queue`"), "{e}");
        let c =
            load("[functions.a]\nschedule_tz = \"Europe/Paris\"\noverlap = \"allow\"\n").unwrap();
        let a = &c.functions["a"];
        assert_eq!(a.schedule_tz, Some(Zone(chrono_tz::Europe::Paris)));
        assert_eq!(a.overlap, Some(Overlap::Allow));
    }

    #[test]
    fn bad_schedules_quote_the_value_and_say_why() {
        for bad in ["61 * * * *", "* * *", "@sometimes", "0 0 * * * * 2027", ""] {
            let e = bad.parse::<Schedule>().unwrap_err();
            assert!(e.starts_with(&format!("invalid schedule {bad:?}")), "{e}");
        }
    }
}
