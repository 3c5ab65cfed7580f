//! What a stage is, and the record of its result.
//!
//! A lesson's test file (`tests/NN_name.rs`) lists its [`Stage`]s in order
//! and hands them to [`crate::harness::runner::run_stages`]. Each stage is one
//! observable behaviour, checked from outside over real sockets with a fresh
//! program and its own [`Ctx`]: a stage never depends on what an earlier one
//! left behind.

use serde::{Deserialize, Serialize};

use crate::harness::ctx::Ctx;
use crate::harness::failure::Check;

/// One observable behaviour, checked from outside over real sockets.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    /// A short name, used in the test's name: `echoes-a-line`.
    pub slug: &'static str,
    /// One line: what the program does when it passes.
    pub title: &'static str,
    /// The heading, in the lesson's slide file, to read when it fails.
    pub slide: &'static str,
    /// The check. It fails by returning a [`Failure`](crate::harness::failure::Failure).
    pub check: fn(&mut Ctx) -> Check<()>,
    /// Whether the stage must run with no other stage beside it. A
    /// lesson's stages run at the same time as each other, because most of
    /// a stage is waiting on sockets. A stage whose check holds a bound
    /// tight enough that the others' load could break it (lesson 06's held
    /// poll must answer within 20 ms) runs alone, so that it fails only for
    /// a fault of the program. Loading the machine is not reason enough:
    /// lessons 05 and 08 run a full room and a reconnect storm with the
    /// others, as their bounds hold beside them and two busy loops.
    pub runs_alone: bool,
}

/// One stage's result, as `course grade --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub lesson: String,
    pub stage: usize,
    pub slug: String,
    pub title: String,
    /// The heading to read in the lesson's slides.
    pub slide: String,
    /// What became of the stage.
    pub status: Status,
    /// Whether the stage counts towards the lesson's grade: it passed, and
    /// so did every stage before it (a stage builds on the ones before).
    /// The board's count and a gradebook's points are the counted stages.
    pub counted: bool,
    /// `status` is `passed`; kept for the readers of older records.
    pub passed: bool,
    pub duration_ms: u64,
    /// The failure report, or the one line that says why the stage was not
    /// run or was skipped; empty when the stage passed.
    pub message: String,
    pub target: String,
    pub seed: u64,
}

/// What became of a stage in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    /// Not run, because an earlier stage failed first (a student's run stops
    /// there; `COURSE_ALL_STAGES=1` runs every stage).
    NotRun,
    /// Not checked, because an outside client it needs (curl, a browser,
    /// python3) is not installed. Never counted as passed.
    Skipped,
}
