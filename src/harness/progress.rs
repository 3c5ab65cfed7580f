//! Progress for a grader who watches: with `COURSE_PROGRESS=1`, each stage's
//! result goes to stderr as soon as it is known, and a stage that runs long
//! says so, with the step it is at. `course grade` sets it and shows these
//! lines while a lesson runs, which under load can take minutes.
//!
//! Each line starts with [`PREFIX`], so a reader of the stderr can tell them
//! from anything else written there.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::harness::escape;
use crate::harness::journal::Journal;
use crate::harness::setup::switched_on;

/// The start of every progress line.
pub const PREFIX: &str = "progress: ";

/// How long a stage runs before it is said to be still running, and how
/// often after that.
const FIRST_NOTICE: Duration = Duration::from_secs(5);
const NEXT_NOTICE: Duration = Duration::from_secs(10);

/// [`FIRST_NOTICE`], or the seconds `COURSE_NOTICE_AFTER` gives: the
/// harness's own test sees the notice come without waiting seconds for it.
fn first_notice() -> Duration {
    std::env::var("COURSE_NOTICE_AFTER")
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .filter(|after| !after.is_zero())
        .unwrap_or(FIRST_NOTICE)
}

fn enabled() -> bool {
    switched_on("COURSE_PROGRESS")
}

/// Whether each stage's time is wanted (`COURSE_TIMES=1`), as when the
/// slowest stages of a suite are looked for: the lines [`finished`] prints.
pub fn times_wanted() -> bool {
    switched_on("COURSE_TIMES")
}

/// `mark` is `pass`, `FAIL` or `skip`. Printed with `COURSE_PROGRESS=1`,
/// and with `COURSE_TIMES=1` for each stage's time.
pub fn finished(number: usize, slug: &str, mark: &str, took: Duration) {
    if enabled() || times_wanted() {
        eprintln!(
            "{PREFIX}{mark}  stage {number}  {slug} ({} ms)",
            took.as_millis()
        );
    }
}

/// Watches one stage until dropped.
pub struct Watch {
    _stop: Option<mpsc::Sender<()>>,
}

/// Say, after `first_notice` and then every `NEXT_NOTICE`, that stage
/// `number` is still running and what its last step was, until the returned
/// [`Watch`] is dropped.
pub fn watch(number: usize, slug: &'static str, journal: Journal) -> Watch {
    if !enabled() {
        return Watch { _stop: None };
    }
    let (stop, stopped) = mpsc::channel::<()>();
    thread::spawn(move || {
        let mut waited = Duration::ZERO;
        let mut next = first_notice();
        // Dropping the sender ends the wait with `Disconnected`.
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(next) {
            waited += next;
            next = NEXT_NOTICE;
            let step = journal
                .last_step()
                .map(|step| format!("; its last step: {}", escape::visible(&step)))
                .unwrap_or_default();
            eprintln!(
                "{PREFIX}      stage {number} ({slug}) still running after {} s{step}",
                // Whole seconds print as `5`, not `5.0`.
                waited.as_secs_f64()
            );
        }
    });
    Watch { _stop: Some(stop) }
}
