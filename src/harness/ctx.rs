//! What a stage works with: the program under test, connections to it, its
//! random data, and the journal its report is made from.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::harness::conn::Conn;
use crate::harness::failure::{Check, Failure};
use crate::harness::journal::Journal;
use crate::harness::lesson::Lesson;
use crate::harness::process::{self, Ending, Running};
use crate::harness::report::{Problem, Report};
use crate::harness::seed::Rng;
use crate::harness::setup::{test_name, Patience, Setup};

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
    /// Which of `processes` are servers: a server that exits on its own is
    /// always news, a client that exits is not.
    servers: Vec<ProcessId>,
    folders: Vec<std::path::PathBuf>,
    /// Failures of checks made with [`Ctx::soft`], reported together.
    soft_failures: Vec<Failure>,
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
    pub(crate) fn new(setup: &Setup, stage: usize) -> Ctx {
        Ctx {
            setup: setup.clone(),
            stage,
            journal: Journal::new(),
            rng: Rng::for_stage(setup.seed, stage),
            processes: Vec::new(),
            servers: Vec::new(),
            folders: Vec::new(),
            soft_failures: Vec::new(),
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

    /// The program under test and the words before its subcommand, for a
    /// stage that starts it through another program (`ip netns exec`).
    pub fn program(&self) -> &[String] {
        &self.setup.program
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

    /// Note what the stage measured (a delay, a rate) as a step of its
    /// report, and print it on stderr too when `COURSE_TIMES=1` asks for
    /// each stage's time and measurements.
    pub fn measured(&self, text: impl Into<String>) {
        let text = text.into();
        if crate::harness::progress::times_wanted() {
            eprintln!("  measured: {text}");
        }
        self.step(text);
    }

    /// Start the program under test with `args` after its own words, its
    /// output captured. It is ended when the stage ends.
    pub fn start(&mut self, args: &[&str]) -> Check<ProcessId> {
        let program = self.setup.program.clone();
        self.launch(&program, args)
            .map_err(|failure| failure.hint(NOT_STARTED_HINT))
    }

    /// Start the program under test once for each of `runs`, its words
    /// after the program's, noted as one step: the first command and the
    /// last. A fleet of fifty would otherwise fill the report with fifty
    /// lines that differ in a word, and push out the steps that matter.
    pub fn start_each(&mut self, runs: &[Vec<String>]) -> Check<Vec<ProcessId>> {
        let program = self.setup.program.clone();
        let mut started = Vec::new();
        for args in runs {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            started.push(
                self.spawn(&program, &args)
                    .map_err(|failure| failure.hint(NOT_STARTED_HINT))?,
            );
        }
        let shown = |id: &ProcessId| shown_command(&self.processes[id.0].command_line);
        match started.as_slice() {
            [] => {}
            [only] => self.step(format!("started `{}`", shown(only))),
            [first, .., last] => self.step(format!(
                "started {} copies of the program, the first `{}`, the last `{}`",
                started.len(),
                shown(first),
                shown(last)
            )),
        }
        Ok(started)
    }

    fn launch(&mut self, program: &[String], args: &[&str]) -> Check<ProcessId> {
        let id = self.spawn(program, args)?;
        self.step(format!(
            "started `{}`",
            shown_command(&self.processes[id.0].command_line)
        ));
        Ok(id)
    }

    /// Start `program` with `args`, kept to be ended with the stage; no step
    /// is noted unless it fails.
    fn spawn(&mut self, program: &[String], args: &[&str]) -> Check<ProcessId> {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let mut running = Running::start(program, &args).map_err(|error| {
            self.step("tried to start the program");
            Failure::new(error)
        })?;
        running.set_grace(self.grace());
        self.processes.push(running);
        Ok(ProcessId(self.processes.len() - 1))
    }

    /// Start another program that a stage uses as a real client, such as
    /// `curl` or a browser: its output captured, ended with the stage like
    /// the program under test. Where `program` is not installed, the stage
    /// is skipped, saying so and how to install it (`install`, such as `sudo
    /// apt-get install curl`); see [`Ctx::require_tool`].
    pub fn start_tool(&mut self, program: &str, args: &[&str], install: &str) -> Check<ProcessId> {
        self.require_tool(program, install)?;
        self.launch(&[program.to_string()], args)
    }

    /// Declare that this stage needs the outside client `program`. Where it
    /// is not installed, the stage stops here and is reported as skipped
    /// ("not checked: needs chromium", with `install`, the command that
    /// installs it), never as passed; with `COURSE_REQUIRE_CLIENTS=1` it
    /// fails instead. Call it first in a stage whose every check needs the
    /// client, so nothing is started for nothing.
    pub fn require_tool(&mut self, program: &str, install: &str) -> Check<()> {
        if installed(program) {
            return Ok(());
        }
        self.step(format!("looked for `{program}`: it is not installed"));
        Err(Failure::missing_tool(program, install))
    }

    /// Run a check that does not depend on the ones after it, and go on
    /// whatever it finds: its failure is kept, and reported with every other
    /// failure of the stage, so a student sees all of them in one round
    /// rather than one per run. A check that later checks depend on (the
    /// server started, the connection opened) stays a plain `?`.
    pub fn soft(&mut self, check: impl FnOnce(&mut Ctx) -> Check<()>) {
        if let Err(mut failure) = check(self) {
            // The bytes that show it, now: later checks may push them out
            // of the journal.
            if failure.connection.is_some() {
                failure.wire = Some(self.journal.wire_text(failure.connection));
            }
            self.soft_failures.push(failure);
        }
    }

    /// The failures [`Ctx::soft`] kept, in the order they happened.
    pub(crate) fn take_soft_failures(&mut self) -> Vec<Failure> {
        std::mem::take(&mut self.soft_failures)
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
        self.servers.push(id);
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
            Err(error) => Err(error.failure(self.setup.target == "command")),
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

    /// [`Ctx::start_tool`], then its whole input, to its end within the exit
    /// patience: `curl` fetching a page, `python3` running a client.
    pub fn run_tool(
        &mut self,
        program: &str,
        args: &[&str],
        stdin: &[u8],
        install: &str,
    ) -> Check<Finished> {
        let id = self.start_tool(program, args, install)?;
        self.finish(id, stdin)
    }

    /// Give a started program its whole input and wait for it to exit.
    pub fn finish(&mut self, id: ProcessId, stdin: &[u8]) -> Check<Finished> {
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
            .detail(output_block(
                "the end of its stdout so far",
                &running.stdout().last_lines(8),
            ))
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
                 return from its accept loop?",
            )
            .stderr_note("Its stderr, above, may say.")),
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
            Ending::Killed => Err(ignored_sigterm(self.grace())),
        }
    }

    /// After a failure, give each server a moment to show that it exited: a
    /// server that quits after one client fails the check an instant before
    /// its exit can be seen, and a report that says "exited" explains more.
    pub(crate) fn let_exits_show(&mut self) {
        let moment = Instant::now() + std::time::Duration::from_millis(100);
        for id in &self.servers {
            self.processes[id.0].wait_exit(moment);
        }
    }

    /// Check how a program that should fail did: as a user's mistake
    /// deserves, with a non-zero exit and one line on stderr that names
    /// `naming`, not a panic. `what` says what it was asked to do.
    pub fn expect_one_line_error(
        &self,
        finished: &Finished,
        naming: &str,
        what: &str,
    ) -> Check<()> {
        let lines: Vec<&str> = finished
            .stderr
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        let one_clear_line = lines.len() == 1 && lines[0].contains(naming);
        if finished.status.success() {
            return Err(
                Failure::new(format!("{what}, the program exited with status 0"))
                    .hint("A program that failed must say so with a non-zero exit status."),
            );
        }
        if finished.stderr.contains("panicked") || !one_clear_line {
            let printed = match lines.len() {
                _ if finished.stderr.contains("panicked") => "it panicked".to_string(),
                0 => "it printed nothing there".to_string(),
                1 => format!("its one line does not name {naming}"),
                many => format!("it printed {many} lines"),
            };
            return Err(Failure::new(format!(
                "{what}, the program should print one line on stderr naming {naming}; \
                 {printed}"
            ))
            .hint(
                "A user's mistake deserves one clear line, such as `error: address \
                 127.0.0.1:7001 is already in use`, not a panic or a backtrace.",
            ));
        }
        Ok(())
    }

    /// Mark how far every program's output had got when the check ended.
    pub(crate) fn mark_output(&mut self) {
        for running in &mut self.processes {
            running.mark_output();
        }
    }

    /// End every program still running; a failure if one ignored SIGTERM.
    pub(crate) fn stop_all(&mut self) -> Option<Failure> {
        let mut failure = None;
        let grace = self.grace();
        for running in &mut self.processes {
            if running.exit_status().is_none() && running.stop() == Ending::Killed {
                failure = Some(ignored_sigterm(grace));
            }
        }
        failure
    }

    /// How long a program has after SIGTERM: [`process::GRACE`], stretched
    /// by the patience as every other wait.
    fn grace(&self) -> Duration {
        self.setup.patience.seconds(process::GRACE.as_secs_f64())
    }

    /// `COURSE_CMD="…" ` when the program under test is a command given with
    /// `--cmd`, so that the replay runs that program again; empty otherwise.
    fn replayed_command(&self) -> String {
        if self.setup.target != "command" {
            return String::new();
        }
        let words: Vec<String> = self
            .setup
            .program
            .iter()
            .map(|word| {
                if word.contains(char::is_whitespace) {
                    format!("'{word}'")
                } else {
                    word.clone()
                }
            })
            .collect();
        format!("COURSE_CMD=\"{}\" ", words.join(" "))
    }

    /// The full report for the failures of this stage: one, or several
    /// found by [`Ctx::soft`] checks. `slug`, `title` and `slide` are the
    /// stage's own (see [`crate::harness::stage::Stage`]); a failure may name
    /// another slide.
    pub(crate) fn report(
        &mut self,
        slug: &str,
        title: &str,
        slide: &str,
        failures: &[Failure],
    ) -> String {
        let mut details = Vec::new();
        let mut shown_stderr = false;
        for (index, running) in self.processes.iter_mut().enumerate() {
            let is_server = self.servers.contains(&ProcessId(index));
            let command = shown_command(&running.command_line);
            let stderr = if running.ended_by_test() {
                running.stderr_for_report(12)
            } else {
                running.stderr().last_lines(12)
            };
            match running.exit_status() {
                // It exited by itself and not quietly: how, and its last words.
                Some(status)
                    if !running.ended_by_test()
                        && (is_server || !status.success() || !stderr.is_empty()) =>
                {
                    shown_stderr |= !stderr.trim().is_empty();
                    details.push(output_block(
                        &format!(
                            "`{command}` exited ({}); the end of its stderr",
                            process::describe(&status)
                        ),
                        &stderr,
                    ))
                }
                // Still running (or ended by the test): its stderr, if any.
                _ if !stderr.trim().is_empty() => {
                    shown_stderr = true;
                    details.push(output_block(
                        &format!("`{command}` printed on stderr"),
                        &stderr,
                    ))
                }
                _ => {}
            }
        }
        if self.setup.target == "command" {
            details.push(crate::harness::report::wrap(
                "This program was given with --cmd: where a hint names a TODO in lessons/, \
                 look at the part of your program that does the same.",
                "",
            ));
        }
        let several = failures.len() > 1;
        let lesson = self.setup.lesson;
        let slide_of = |heading: &str| format!("{}, \"{}\"", lesson.slides(), heading);
        let problems = failures
            .iter()
            .map(|failure| {
                let wire = match (&failure.wire, several, failure.connection) {
                    (Some(wire), _, _) => wire.clone(),
                    // Among several, the whole wire would repeat under each.
                    (None, true, None) => String::new(),
                    (None, _, only) => self.journal.wire_text(only),
                };
                let hint = match (&failure.hint, &failure.stderr_note) {
                    (Some(hint), Some(note)) if shown_stderr => Some(format!("{hint} {note}")),
                    (None, Some(note)) if shown_stderr => Some(note.clone()),
                    (hint, _) => hint.clone(),
                };
                Problem {
                    what: failure.what.clone(),
                    wire,
                    comparison: failure.comparison(),
                    details: failure.details.clone(),
                    hint,
                    slide: failure
                        .slide
                        .as_deref()
                        .filter(|own| *own != slide)
                        .map(slide_of),
                }
            })
            .collect();
        // One problem: its own slide, if it names one, is the one to read.
        // Several: each names its own, and the stage's is read for the whole.
        let slide = match failures {
            [one] => one.slide.as_deref().unwrap_or(slide),
            _ => slide,
        };
        Report {
            heading: format!(
                "stage {} of {}: {} ({})",
                self.stage, self.setup.total, title, slug
            ),
            steps: self.journal.steps(),
            problems,
            details,
            slide: slide_of(slide),
            replay: format!(
                "{}COURSE_SEED={} cargo test --test {} {}",
                self.replayed_command(),
                self.setup.seed,
                lesson.test_target(),
                test_name(self.stage, slug)
            ),
        }
        .render()
    }
}

/// Whether `program` names a file to run: a path, or a name found on `PATH`.
fn installed(program: &str) -> bool {
    let path = std::path::Path::new(program);
    if path.components().count() > 1 {
        return path.is_file();
    }
    // Windows finds `curl` as `curl.exe`.
    let names = [
        program.to_string(),
        format!("{program}{}", std::env::consts::EXE_SUFFIX),
    ];
    std::env::var_os("PATH").is_some_and(|folders| {
        std::env::split_paths(&folders)
            .any(|folder| names.iter().any(|name| folder.join(name).is_file()))
    })
}

fn ignored_sigterm(grace: Duration) -> Failure {
    Failure::new(format!(
        "the program did not exit within {}s of SIGTERM, and was killed",
        // Whole seconds print as `2`, not `2.0`.
        grace.as_secs_f64()
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

/// A command line as a student would type it: every path inside the project
/// (the program's, a folder it serves) relative to the project.
/// The hint when the program under test could not be started at all.
const NOT_STARTED_HINT: &str =
    "The program could not be started. Does it build? Run `cargo build` and read the first error.";

fn shown_command(command_line: &str) -> String {
    let Ok(here) = std::env::current_dir() else {
        return command_line.to_string();
    };
    let prefix = format!("{}{}", here.display(), std::path::MAIN_SEPARATOR);
    command_line.replace(&prefix, "")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn ctx() -> Ctx {
        let setup = Setup {
            lesson: &crate::harness::lesson::LESSONS[0],
            program: vec!["server".into()],
            target: "lessons".into(),
            seed: 1,
            patience: Patience::from_env(),
            total: 1,
        };
        Ctx::new(&setup, 1)
    }

    fn error_exit(stderr: &str) -> Finished {
        Finished {
            status: ExitStatus::from_raw(1 << 8),
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn a_one_line_error_is_counted_in_words() {
        let ctx = ctx();
        let what = |stderr: &str| {
            ctx.expect_one_line_error(&error_exit(stderr), "7001", "asked to bind a taken port")
                .map_err(|failure| failure.what.clone())
        };
        assert_eq!(what("error: address 127.0.0.1:7001 is in use\n"), Ok(()));
        let said = what("error: it failed\n").unwrap_err();
        assert!(
            said.ends_with("; its one line does not name 7001"),
            "{said}"
        );
        let said = what("").unwrap_err();
        assert!(said.ends_with("; it printed nothing there"), "{said}");
        let said = what("one\ntwo\n").unwrap_err();
        assert!(said.ends_with("; it printed 2 lines"), "{said}");
        let said = what("thread 'main' panicked at 7001\nnote: ...\n").unwrap_err();
        assert!(said.ends_with("; it panicked"), "{said}");
    }

    #[test]
    fn a_fleet_started_at_once_is_one_step() {
        let mut ctx = ctx();
        ctx.setup.program = vec!["true".into()];
        let runs: Vec<Vec<String>> = (0..3).map(|n| vec![format!("d{n:03}")]).collect();
        let started = ctx.start_each(&runs).expect("`true` starts");
        assert_eq!(started.len(), 3);
        let steps = ctx.journal().steps();
        assert_eq!(steps.lines().count(), 1, "{steps}");
        assert!(
            steps.contains(
                "started 3 copies of the program, the first `true d000`, the last `true d002`"
            ),
            "{steps}"
        );
    }

    #[test]
    fn a_failure_without_wire_leaves_the_stages_other_traffic_out() {
        let mut ctx = ctx();
        let id = ctx.journal().new_connection();
        let sent = b"SEND unrelated".to_vec();
        ctx.journal().wire(
            id,
            crate::harness::journal::Wire::Sent {
                total: sent.len(),
                bytes: sent,
            },
        );
        let report =
            |ctx: &mut Ctx, failure: Failure| ctx.report("slug", "title", "slide", &[failure]);
        let with = report(&mut ctx, Failure::new("it did not say so"));
        assert!(
            with.contains("On the wire") && with.contains("SEND unrelated"),
            "{with}"
        );
        let without = report(&mut ctx, Failure::new("it did not say so").without_wire());
        assert!(!without.contains("On the wire"), "{without}");
        assert!(!without.contains("SEND unrelated"), "{without}");
    }
}
