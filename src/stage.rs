//! Stages and the runner that grades them.
//!
//! A lesson's test file (`tests/NN_name.rs`) lists its stages in order and
//! hands them to [`run_stages`]. Each stage becomes one test named
//! `stage_NN_slug`, so `cargo test --test 01_echo listens` runs one stage and
//! the list reads in the order a student builds them. Stages run one at a
//! time, each with a fresh program and its own [`Ctx`]: a stage never depends
//! on what an earlier one left behind.
//!
//! When `COURSE_REPORT` names a file, each stage also appends one JSON line to
//! it; that is how `course grade` and the board learn the results.

use std::io::Write as _;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use serde::{Deserialize, Serialize};

use crate::conn::Conn;
use crate::failure::{Check, Failure};
use crate::journal::Journal;
use crate::lesson::{self, Lesson};
use crate::process::{self, Ending, Running};
use crate::report::Report;
use crate::seed::{self, Rng};
use crate::target::{split_command, Target};

/// One observable behaviour, checked from outside over real sockets.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    /// A short name, used in the test's name: `echoes-a-line`.
    pub slug: &'static str,
    /// One line: what the program does when it passes.
    pub title: &'static str,
    /// The heading, in the lesson's slide file, to read when it fails.
    pub slide: &'static str,
    /// The check. It fails by returning a [`Failure`].
    pub check: fn(&mut Ctx) -> Check<()>,
}

/// The two builds of a lesson's binary, as cargo built them for the tests
/// (`env!("CARGO_BIN_EXE_01-echo")`).
#[derive(Debug, Clone, Copy)]
pub struct Programs {
    pub lessons: &'static str,
    pub solutions: &'static str,
}

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
}

/// One stage's result, as `course grade --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub lesson: String,
    pub stage: usize,
    pub slug: String,
    pub title: String,
    pub passed: bool,
    pub duration_ms: u64,
    /// The failure report; empty when the stage passed.
    pub message: String,
    pub target: String,
    pub seed: u64,
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

/// Run a lesson's stages as a test binary: libtest's command line (filters,
/// `--list`, `--exact`), its output, its summary line and its exit status.
pub fn run_stages(lesson_number: &str, programs: Programs, stages: &[Stage]) -> ! {
    let setup = match setup(lesson_number, programs, stages.len()) {
        Ok(setup) => setup,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    let mut arguments = Arguments::from_args();
    // One stage at a time, in order: stages start servers and measure time,
    // and a student reads the results top to bottom.
    arguments.test_threads = Some(1);
    let trials = stages
        .iter()
        .enumerate()
        .map(|(index, stage)| {
            let stage = *stage;
            let setup = setup.clone();
            Trial::test(test_name(index + 1, stage.slug), move || {
                run_one(&setup, index + 1, &stage).map_err(Failed::from)
            })
        })
        .collect();
    libtest_mimic::run(&arguments, trials).exit()
}

fn setup(lesson_number: &str, programs: Programs, total: usize) -> Result<Setup, String> {
    let lesson = lesson::find(lesson_number)
        .ok_or_else(|| format!("lesson {lesson_number} is not in src/lesson.rs"))?;
    let target = Target::from_env()?;
    let (program, target) = match std::env::var("COURSE_CMD") {
        Ok(command) if !command.trim().is_empty() => {
            (split_command(&command)?, "command".to_string())
        }
        _ => {
            let path = match target {
                Target::Lessons => programs.lessons,
                Target::Solutions => programs.solutions,
            };
            (vec![path.to_string()], target.name().to_string())
        }
    };
    Ok(Setup {
        lesson,
        program,
        target,
        seed: seed::run_seed()?,
        patience: Patience::from_env(),
        total,
    })
}

/// Run one stage and turn its failure, if any, into the report.
pub fn run_one(setup: &Setup, number: usize, stage: &Stage) -> Result<(), String> {
    let started = Instant::now();
    let mut ctx = Ctx::new(setup, number);
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (stage.check)(&mut ctx)));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(failure)) => Some(failure),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Some(
                Failure::new(format!("the test itself failed: {message}")).hint(
                    "This is a bug in the course's tests, not in your program. Please report \
                     it with the replay command below.",
                ),
            )
        }
    };
    let stopped = ctx.stop_all();
    let failure = failure.or(stopped);
    let report = failure.as_ref().map(|failure| ctx.report(stage, failure));
    write_record(setup, number, stage, started.elapsed(), report.as_deref());
    let (Some(failure), Some(report)) = (failure, report) else {
        return Ok(());
    };
    // The first failure gets the full report. Later stages usually fail for
    // the same reason, so they say what went wrong in short and point back.
    match FIRST_FAILED.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => Err(report),
        Err(first) => Err(format!(
            "stage {number} of {}: {} ({})\n{}\n\n{}",
            setup.total,
            stage.title,
            stage.slug,
            crate::report::wrap(&failure.what, "  "),
            crate::report::wrap(
                &format!(
                    "Stage {first} failed too, and its full report is above: fix it first, as \
                     later stages build on it. For this stage's full report, run it alone: \
                     cargo test --test {} {}",
                    setup.lesson.test_target(),
                    test_name(number, stage.slug)
                ),
                "  "
            )
        )),
    }
}

/// The number of the first stage that failed in this run, 0 while none has.
static FIRST_FAILED: AtomicUsize = AtomicUsize::new(0);

fn write_record(
    setup: &Setup,
    number: usize,
    stage: &Stage,
    took: Duration,
    message: Option<&str>,
) {
    let Ok(path) = std::env::var("COURSE_REPORT") else {
        return;
    };
    let record = StageRecord {
        lesson: setup.lesson.number.to_string(),
        stage: number,
        slug: stage.slug.to_string(),
        title: stage.title.to_string(),
        passed: message.is_none(),
        duration_ms: took.as_millis() as u64,
        message: message.unwrap_or_default().to_string(),
        target: setup.target.clone(),
        seed: setup.seed,
    };
    let line = serde_json::to_string(&record).expect("a record is plain data");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(error) = written {
        eprintln!("warning: could not write the stage record to {path}: {error}");
    }
}

/// A program the stage started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId(usize);

/// A server the stage started, and the address it printed.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pub addr: SocketAddr,
    pub id: ProcessId,
}

/// A program that ran to its end.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// What a stage works with: the program under test, connections to it, its
/// random data, and the journal its report is made from.
///
/// A `Ctx` stays on the stage's thread (it is neither `Send` nor `Sync`):
/// programs are started from there, and on Linux the kernel ties their life to
/// that thread. Connections ([`Conn`]) may move to other threads.
pub struct Ctx {
    setup: Setup,
    stage: usize,
    journal: Journal,
    rng: Rng,
    processes: Vec<Running>,
    folders: Vec<std::path::PathBuf>,
    _same_thread: PhantomData<*const ()>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // Programs first: they may still be writing into the folders.
        self.processes.clear();
        for folder in &self.folders {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
}

impl Ctx {
    fn new(setup: &Setup, stage: usize) -> Ctx {
        Ctx {
            setup: setup.clone(),
            stage,
            journal: Journal::new(),
            rng: Rng::for_stage(setup.seed, stage),
            processes: Vec::new(),
            folders: Vec::new(),
            _same_thread: PhantomData,
        }
    }

    /// The lesson being graded.
    pub fn lesson(&self) -> &'static Lesson {
        self.setup.lesson
    }

    /// This stage's random data: the same for the same `COURSE_SEED`.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn patience(&self) -> Patience {
        self.setup.patience
    }

    /// A new, empty folder for this stage (a server's files, its data), removed
    /// when the stage ends.
    pub fn temp_dir(&mut self) -> Check<std::path::PathBuf> {
        let folder = std::env::temp_dir().join(format!(
            "course-{}-{}-stage{}-{}",
            std::process::id(),
            self.setup.lesson.number,
            self.stage,
            self.folders.len() + 1
        ));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).map_err(|error| {
            Failure::new(format!(
                "the test could not make a temporary folder: {error}"
            ))
        })?;
        self.folders.push(folder.clone());
        Ok(folder)
    }

    /// Note a step, in words a student would use.
    pub fn step(&self, text: impl Into<String>) {
        self.journal.step(text);
    }

    /// Start the program under test with `args` after its own words, its
    /// output captured. It is ended when the stage ends.
    pub fn start(&mut self, args: &[&str]) -> Check<ProcessId> {
        let program = self.setup.program.clone();
        self.launch(&program, args).map_err(|failure| {
            failure.hint(
                "The program could not be started. Does it build? Run `cargo build` and \
                 read the first error.",
            )
        })
    }

    /// Start another program than the one under test (`python3` and a
    /// client script, say), its output captured and its life bounded the
    /// same way. `command` is the program and its arguments.
    pub fn start_command(&mut self, command: &[&str]) -> Check<ProcessId> {
        let (program, args) = command
            .split_first()
            .expect("a command names at least its program");
        self.launch(&[program.to_string()], args)
    }

    fn launch(&mut self, program: &[String], args: &[&str]) -> Check<ProcessId> {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let running = Running::start(program, &args).map_err(Failure::new)?;
        self.step(format!(
            "started `{}`",
            shown_command(&running.command_line)
        ));
        self.processes.push(running);
        Ok(ProcessId(self.processes.len() - 1))
    }

    /// Start `server --bind 127.0.0.1:0` and the `extra` words, and wait for
    /// the address it prints.
    pub fn start_server(&mut self, extra: &[&str]) -> Check<Server> {
        let mut args = vec!["server", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        self.start_server_with(&args)
    }

    /// Start the program with `args` (a server), and wait for its address.
    pub fn start_server_with(&mut self, args: &[&str]) -> Check<Server> {
        let id = self.start(args)?;
        let deadline = Instant::now() + self.setup.patience.start;
        let running = &mut self.processes[id.0];
        match running.wait_for_address(deadline) {
            Ok(addr) => {
                self.step(format!("it printed `listening on {addr}`"));
                if addr.port() == 0 {
                    return Err(Failure::new(
                        "the server printed port 0, the port it was asked to bind, not the \
                         port it got",
                    )
                    .hint(
                        "Port 0 asks the operating system for any free port. Print \
                         `listener.local_addr()`, which holds the port it chose.",
                    ));
                }
                Ok(Server { addr, id })
            }
            Err(error) => {
                let (what, hint) = error.explain();
                Err(Failure::new(what).hint(hint))
            }
        }
    }

    /// A started program, to write to its input or read its output.
    pub fn process(&mut self, id: ProcessId) -> &mut Running {
        &mut self.processes[id.0]
    }

    /// Connect to `addr`; every read and write on it has a deadline.
    pub fn connect(&self, addr: SocketAddr) -> Check<Conn> {
        Conn::connect(addr, &self.journal, self.setup.patience.reply)
    }

    /// Run the program with `args` to its end, `stdin` as its input. It must
    /// exit within the exit patience.
    pub fn run(&mut self, args: &[&str], stdin: &[u8]) -> Check<Finished> {
        let id = self.start(args)?;
        self.finish(id, stdin)
    }

    /// [`Ctx::run`] for another program: [`Ctx::start_command`], to its end.
    pub fn run_command(&mut self, command: &[&str], stdin: &[u8]) -> Check<Finished> {
        let id = self.start_command(command)?;
        self.finish(id, stdin)
    }

    /// Give a started program its whole input and wait for it to exit.
    fn finish(&mut self, id: ProcessId, stdin: &[u8]) -> Check<Finished> {
        let patience = self.setup.patience.exit;
        let running = &mut self.processes[id.0];
        // The input goes in whole and is closed: the program sees its end.
        let written = running.write_stdin(stdin);
        running.close_stdin();
        if let Err(error) = written {
            self.step(format!("its input could not be written whole: {error}"));
        }
        let running = &mut self.processes[id.0];
        match running.wait_exit(Instant::now() + patience) {
            Some(status) => {
                let finished = Finished {
                    status,
                    stdout: running.stdout().text(),
                    stderr: running.stderr().text(),
                };
                self.step(format!("it exited ({})", process::describe(&status)));
                Ok(finished)
            }
            None => Err(Failure::new(format!(
                "the program was still running {:.0}s after its input ended",
                patience.as_secs_f64()
            ))
            .detail(output_block("its stdout so far", &running.stdout().text()))
            .hint(
                "When its input ends, the program should finish what it owes and exit. \
                 Is it waiting for something that never comes?",
            )),
        }
    }

    /// Fail if the program has exited: a server must keep running.
    pub fn expect_running(&mut self, id: ProcessId) -> Check<()> {
        match self.processes[id.0].exit_status() {
            None => Ok(()),
            Some(status) => Err(Failure::new(format!(
                "the server exited ({}) when it should still be serving",
                process::describe(&status)
            ))
            .hint(
                "A server keeps accepting connections until it is stopped. What made it \
                 return from its accept loop? Its stderr, below, may say.",
            )),
        }
    }

    /// Kill a program at once (SIGKILL), as a crash or a power cut would.
    pub fn kill(&mut self, id: ProcessId) {
        self.step("killed it (SIGKILL)");
        self.processes[id.0].kill();
    }

    /// Ask a program to stop (SIGTERM) and wait for it, as the stage's end
    /// does; a program that ignores SIGTERM fails the stage.
    pub fn stop(&mut self, id: ProcessId) -> Check<ExitStatus> {
        self.step("asked it to stop (SIGTERM)");
        match self.processes[id.0].stop() {
            Ending::Exited(status) => Ok(status),
            Ending::Killed => Err(ignored_sigterm()),
        }
    }

    /// End every program still running; a failure if one ignored SIGTERM.
    fn stop_all(&mut self) -> Option<Failure> {
        let mut failure = None;
        for running in &mut self.processes {
            if running.exit_status().is_none() && running.stop() == Ending::Killed {
                failure = Some(ignored_sigterm());
            }
        }
        failure
    }

    /// The full report for a failure in this stage.
    fn report(&mut self, stage: &Stage, failure: &Failure) -> String {
        let mut details = failure.details.clone();
        for running in &mut self.processes {
            let stderr = running.stderr().last_lines(12);
            match running.exit_status() {
                Some(status) if !status.success() || !stderr.is_empty() => {
                    details.push(output_block(
                        &format!(
                            "`{}` exited ({}); the end of its stderr",
                            shown_command(&running.command_line),
                            process::describe(&status)
                        ),
                        &stderr,
                    ));
                }
                _ => {}
            }
        }
        let lesson = self.setup.lesson;
        let slide = failure.slide.as_deref().unwrap_or(stage.slide);
        Report {
            heading: format!(
                "stage {} of {}: {} ({})",
                self.stage, self.setup.total, stage.title, stage.slug
            ),
            steps: self.journal.steps(),
            what: &failure.what,
            wire: self.journal.wire_text(failure.connection),
            comparison: failure.comparison(),
            details,
            hint: failure.hint.as_deref(),
            slide: format!("{}, \"{}\"", lesson.slides(), slide),
            replay: format!(
                "COURSE_SEED={} cargo test --test {} {}",
                self.setup.seed,
                lesson.test_target(),
                test_name(self.stage, stage.slug)
            ),
        }
        .render()
    }
}

fn ignored_sigterm() -> Failure {
    Failure::new(format!(
        "the program did not exit within {}s of SIGTERM, and was killed",
        process::GRACE.as_secs()
    ))
    .hint(
        "A server must stop when asked. Leave SIGTERM's default action alone, or, if you \
         handle it, finish quickly and exit.",
    )
}

/// A block of a program's output for a report, or a note that it was empty.
pub fn output_block(title: &str, output: &str) -> String {
    if output.trim().is_empty() {
        format!("{title}: (nothing)")
    } else {
        let indented: Vec<String> = output.lines().map(|line| format!("| {line}")).collect();
        format!("{title}:\n{}", indented.join("\n"))
    }
}

/// A command line as a student would type it: the program's path relative to
/// the project, where it lies inside it.
fn shown_command(command_line: &str) -> String {
    let Ok(here) = std::env::current_dir() else {
        return command_line.to_string();
    };
    let prefix = format!("{}{}", here.display(), std::path::MAIN_SEPARATOR);
    command_line.replacen(&prefix, "", 1)
}
