//! What a gradebook needs beyond the stages' results: whose work was graded,
//! which commit of it, when, and the points each lesson earned.
//!
//! `course grade --json` writes every stage's record with the run's facts
//! added; `course grade --csv` writes one row per student and lesson.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::harness::stage::StageRecord;

/// Whose work a grading run graded, which commit of it, and when: the same
/// for every record of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// `--student`, or the checkout's git `user.name <user.email>` (with
    /// `grade --checkout`, the name of the checkout's folder).
    pub student: String,
    /// The checkout's HEAD; none outside a git checkout.
    pub commit: Option<String>,
    /// Whether the graded files differ from that commit (changed or new
    /// files): then the commit alone does not reproduce the grade.
    pub dirty: Option<bool>,
    /// When the run started, RFC 3339 in UTC: `2026-11-30T15:04:05Z`.
    pub started_at: String,
}

impl Run {
    /// The facts of a run starting now, for the checkout in `checkout`.
    pub fn starting_now(checkout: &Path, student: Option<String>) -> Run {
        let student = student
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| git_student(checkout));
        let commit = git(checkout, &["rev-parse", "HEAD"]);
        // Untracked files count: a student's new file is part of what ran.
        let dirty = commit
            .as_ref()
            .and_then(|_| git(checkout, &["status", "--porcelain"]))
            .map(|changes| !changes.is_empty())
            .or(commit.as_ref().map(|_| false));
        Run {
            student,
            commit,
            dirty,
            started_at: rfc3339(SystemTime::now()),
        }
    }
}

/// A stage's record as a gradebook takes it: the stage's fields and the
/// run's, in one JSON object.
#[derive(Serialize)]
pub struct GradeRecord<'a> {
    #[serde(flatten)]
    pub stage: &'a StageRecord,
    #[serde(flatten)]
    pub run: &'a Run,
}

/// A lesson's points: its stages that count (`StageRecord::counted`), each
/// one that passed when every stage before it passed too. A later stage that
/// passes on its own builds on earlier ones that do not work, and the board
/// does not count it either.
pub fn points(records: &[StageRecord]) -> usize {
    records.iter().filter(|record| record.counted).count()
}

/// The first line of `--csv`.
pub const CSV_HEADER: &str = "student,lesson,points,max_points,commit,dirty,started_at,target";

/// One row of `--csv`: a lesson's points and its maximum (its number of
/// stages).
pub fn csv_row(run: &Run, lesson: &str, target: &str, points: usize, max_points: usize) -> String {
    let fields = [
        run.student.clone(),
        lesson.to_string(),
        points.to_string(),
        max_points.to_string(),
        run.commit.clone().unwrap_or_default(),
        run.dirty.map(|dirty| dirty.to_string()).unwrap_or_default(),
        run.started_at.clone(),
        target.to_string(),
    ];
    let quoted: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
    quoted.join(",")
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line
/// break, its quotes doubled.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// `Ada Lovelace <ada@example.org>` from the checkout's git settings, or
/// whichever half is set, or `unknown`.
fn git_student(checkout: &Path) -> String {
    let name = git(checkout, &["config", "user.name"]);
    let email = git(checkout, &["config", "user.email"]);
    match (name, email) {
        (Some(name), Some(email)) => format!("{name} <{email}>"),
        (Some(name), None) => name,
        (None, Some(email)) => format!("<{email}>"),
        (None, None) => "unknown".to_string(),
    }
}

/// What `git ARGS` prints in `checkout`, trimmed; none if git is missing,
/// fails, or prints nothing.
fn git(checkout: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(checkout)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    // `status --porcelain` prints nothing for a clean tree: that is an answer.
    if text.is_empty() && args.first() != Some(&"status") {
        return None;
    }
    Some(text)
}

/// `time` as RFC 3339 in UTC, to the second: `2026-11-30T15:04:05Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The Gregorian date `days` after 1970-01-01. The calendar repeats every
/// 400 years (146 097 days); counting from 1 March puts the leap day last
/// in its year, so month lengths follow a fixed pattern.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468; // from 0000-03-01 instead of 1970-01-01
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_rfc3339_dates_in_utc() {
        let at = |seconds: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn quotes_csv_fields_that_need_it() {
        let run = Run {
            student: "Ada, \"the\" first".into(),
            commit: Some("abc".into()),
            dirty: Some(false),
            started_at: "2026-11-30T15:04:05Z".into(),
        };
        assert_eq!(
            csv_row(&run, "01-echo", "/course/lessons/01-echo", 1, 8),
            "\"Ada, \"\"the\"\" first\",01-echo,1,8,abc,false,2026-11-30T15:04:05Z,\
             /course/lessons/01-echo"
        );
    }
}
