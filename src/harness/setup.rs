//! What one run of a lesson's stages works with: the lesson, the program
//! under test, the seed and the deadlines. The same for every stage of a run.

use std::time::Duration;

use crate::harness::lesson::Lesson;

/// Whether the environment variable `name` is `1`: how each of the course's
/// switches (`COURSE_TIMES=1`, `COURSE_PROGRESS=1`, ...) is turned on.
pub fn switched_on(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|value| value == "1")
}

/// The two builds of a lesson's binary, as cargo built them for the tests
/// (`env!("CARGO_BIN_EXE_01-echo")`).
#[derive(Debug, Clone, Copy)]
pub struct Programs {
    pub lessons: &'static str,
    /// `option_env!("CARGO_BIN_EXE_01-echo-solution")`: a student's handout
    /// (`course handout`) has no solutions/, and its stages must still build.
    pub solutions: Option<&'static str>,
}

/// What `COURSE_TARGET=solutions` says in a copy of the course without them.
pub const NO_SOLUTIONS: &str = "this copy of the course has no solutions/ (it is a student's \
     handout): COURSE_TARGET=solutions has nothing to run; grade your own code in lessons/";

/// How long each kind of wait may take. `COURSE_PATIENCE=3` triples them all,
/// for a slow machine; a correct program never comes near them.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// From starting a server to its `listening on` line.
    pub start: Duration,
    /// For any one read or write on a connection.
    pub reply: Duration,
    /// For a program that should exit by itself.
    pub exit: Duration,
}

impl Patience {
    pub fn from_env() -> Patience {
        let scale = std::env::var("COURSE_PATIENCE")
            .ok()
            .and_then(|text| text.parse::<f64>().ok())
            .filter(|scale| *scale > 0.0)
            .unwrap_or(1.0);
        Patience {
            start: Duration::from_secs_f64(5.0 * scale),
            reply: Duration::from_secs_f64(2.0 * scale),
            exit: Duration::from_secs_f64(5.0 * scale),
        }
    }

    /// How much longer than normal every wait may be: 1 unless
    /// `COURSE_PATIENCE` says otherwise.
    pub fn scale(&self) -> f64 {
        self.reply.as_secs_f64() / 2.0
    }

    /// `seconds`, stretched by [`Patience::scale`]: for a wait a stage
    /// chooses itself.
    pub fn seconds(&self, seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds * self.scale())
    }
}

/// The test name of stage `number`: `stage_02_echoes_a_line`.
pub fn test_name(number: usize, slug: &str) -> String {
    format!("stage_{number:02}_{}", slug.replace('-', "_"))
}

/// What is run and how, the same for every stage of one run.
#[derive(Debug, Clone)]
pub struct Setup {
    pub lesson: &'static Lesson,
    /// The program and the words before its subcommand.
    pub program: Vec<String>,
    /// `lessons`, `solutions` or `command`, for the records.
    pub target: String,
    pub seed: u64,
    pub patience: Patience,
    /// How many stages the lesson has.
    pub total: usize,
}
