//! The harness's own tests: programs that misbehave in each way a student's
//! might, and the report the harness must give for each, within its deadline,
//! leaving no process behind. The reports are kept as golden files in
//! tests/golden/; `COURSE_BLESS=1 cargo test --test harness` rewrites them
//! after an intended change (then read the diff).
//!
//! The misbehaving programs are this test binary itself, started again as
//! `harness --fake KIND server --bind ADDR`: portable, and nothing to install.
//! The same fakes, given to `course grade --cmd`, test the course command.

use std::io::{BufRead, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use course::harness::lesson::LESSONS;
use course::harness::runner::{run_one, Completed, StageFailure};
use course::harness::setup::{Patience, Setup};
use course::harness::stage::{StageRecord, Status};
use course::{Check, Ctx, Failure, Programs, Stage};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `harness --fake KIND --pids FILE server --bind ADDR`
    if args.get(1).map(String::as_str) == Some("--fake") {
        fake::run(&args[2], &args[4], &args[5..]);
        return;
    }
    // A stage suite of its own, run as `cargo test --test NN_name` runs a
    // lesson's: the runner's choices (stop at the first failure, skip a
    // stage whose client is missing) are tested from outside.
    if std::env::var_os("COURSE_HARNESS_SUITE").is_some() {
        let exe: &'static str = Box::leak(exe().into_boxed_str());
        let programs = Programs {
            lessons: exe,
            solutions: Some(exe),
        };
        course::run_stages("01", programs, &suite::STAGES);
    }
    // A suite whose one stage never ends: the runner's own limit must stop
    // the run (COURSE_PATIENCE makes that limit seconds, not minutes).
    if std::env::var_os("COURSE_HARNESS_STUCK").is_some() {
        let exe: &'static str = Box::leak(exe().into_boxed_str());
        let programs = Programs {
            lessons: exe,
            solutions: Some(exe),
        };
        course::run_stages("01", programs, &[suite::STUCK]);
    }
    let mut trials = vec![];
    for case in CASES {
        trials.push(Trial::test(
            format!("report_when_{}", case.fake),
            move || check_case(case).map_err(Failed::from),
        ));
    }
    trials.extend([
        Trial::test("a_correct_program_passes", || {
            run_fake("echo", &Patience::from_env())
                .0
                .map_err(|failure| Failed::from(failure.report))
        }),
        Trial::test(
            "report_when_several_checks_fail",
            suite::several_checks_fail,
        ),
        Trial::test(
            "report_when_stderr_holds_terminal_commands",
            hostile_stderr_is_escaped,
        ),
        Trial::test("no_setsid_grandchild_outlives_the_stage", || {
            let (result, pids) = run_fake("starts_a_daemon", &QUICK);
            result.map_err(|failure| Failed::from(failure.report))?;
            if pids.len() != 2 {
                return Err(format!("expected the server and its daemon, got {pids:?}").into());
            }
            left_behind(&pids).map_err(Failed::from)
        }),
        Trial::test(
            "a_stage_whose_client_is_missing_is_skipped",
            suite::skips_a_missing_client,
        ),
        Trial::test(
            "a_missing_client_fails_where_clients_are_required",
            suite::requires_clients,
        ),
        Trial::test(
            "a_long_stage_says_it_is_still_running",
            suite::says_a_long_stage_is_running,
        ),
        Trial::test("no_program_a_server_started_outlives_the_stage", || {
            let (result, pids) = run_fake("starts_a_helper", &QUICK);
            result.map_err(|failure| Failed::from(failure.report))?;
            if pids.len() != 2 {
                return Err(
                    format!("expected the server and its helper, got pids {pids:?}").into(),
                );
            }
            left_behind(&pids).map_err(Failed::from)
        }),
        Trial::test(
            "a_stuck_stage_stops_the_run",
            suite::stuck_stage_stops_the_run,
        ),
        Trial::test(
            "another_checkouts_build_runs_no_stage",
            suite::refuses_another_checkouts_build,
        ),
        Trial::test("course_board_lists_every_lesson", cli::board),
        Trial::test("course_grade_json_has_a_record_per_stage", cli::grade_json),
        Trial::test("course_grade_csv_has_a_row_per_lesson", cli::grade_csv),
        Trial::test(
            "course_grade_builds_in_the_checkouts_own_target",
            cli::grade_own_build_folder,
        ),
        Trial::test("course_grade_cmd_grades_any_program", cli::grade_cmd_silent),
        Trial::test(
            "course_grade_cmd_leaves_no_setsid_grandchild",
            cli::grade_cmd_daemon,
        ),
        Trial::test(
            "course_grade_names_the_lessons_for_a_wrong_one",
            cli::unknown_lesson,
        ),
    ]);
    // Almost every check waits: for a deadline to pass, a program to exit,
    // a suite to finish. Each has its own programs, ports and files, so all
    // of them run at once, unless `--test-threads` says otherwise.
    let mut arguments = Arguments::from_args();
    arguments.test_threads = arguments.test_threads.or(Some(trials.len()));
    libtest_mimic::run(&arguments, trials).exit()
}

/// A misbehaviour, and how long its report may take.
#[derive(Clone, Copy)]
struct Case {
    fake: &'static str,
    /// The report must come within this many seconds.
    within: u64,
    /// The deadlines it is graded with: [`QUICK`], or shorter still for the
    /// one deadline that the fake lets pass.
    patience: Patience,
}

const CASES: [Case; 9] = [
    Case {
        fake: "exits_at_once",
        within: 2,
        patience: QUICK,
    },
    // Its hint must not point at a stderr that the report does not show.
    Case {
        fake: "exits_quietly",
        within: 2,
        patience: QUICK,
    },
    Case {
        fake: "never_prints_its_address",
        within: 4,
        patience: SHORT_START,
    },
    Case {
        fake: "prints_another_first_line",
        within: 2,
        patience: QUICK,
    },
    Case {
        fake: "never_ends_the_line",
        within: 4,
        patience: SHORT_START,
    },
    Case {
        fake: "floods_its_output",
        within: 2,
        patience: QUICK,
    },
    Case {
        fake: "accepts_and_never_answers",
        within: 4,
        patience: SHORT_REPLY,
    },
    Case {
        fake: "answers_wrong_bytes",
        within: 2,
        patience: QUICK,
    },
    Case {
        fake: "ignores_sigterm",
        within: 5,
        patience: SHORT_REPLY,
    },
];

/// Short deadlines, so the whole file runs in seconds.
const QUICK: Patience = Patience {
    start: Duration::from_millis(1500),
    reply: Duration::from_millis(1000),
    exit: Duration::from_millis(1500),
};

/// For a fake that never prints a whole first line: only the wait for it
/// is shorter, and nothing needs to happen before it passes but the start.
const SHORT_START: Patience = Patience {
    start: Duration::from_millis(400),
    ..QUICK
};

/// For a fake that starts, then never answers or never exits: a wait for a
/// reply, and the grace after SIGTERM (a fifth of the usual 2 s at this
/// reply), pass sooner. Its start has all of [`QUICK`]'s time.
const SHORT_REPLY: Patience = Patience {
    reply: Duration::from_millis(400),
    ..QUICK
};

/// The one stage every fake is graded by: echo a line.
const ECHO_A_LINE: Stage = Stage {
    slug: "echoes-a-line",
    title: "sends `hello\\n` back byte for byte",
    slide: "A read is not a message",
    check: echo_a_line,
    runs_alone: false,
};

fn echo_a_line(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let mut conn = ctx.connect(server.addr)?;
    conn.send(b"hello\n")?;
    conn.expect(b"hello\n")
}

/// Grade the fake `kind` with the one stage; the pids it started.
fn run_fake(kind: &str, patience: &Patience) -> (Result<(), StageFailure>, Vec<u32>) {
    run_fake_with(kind, kind, patience, &ECHO_A_LINE)
}

/// Grade the fake `kind` with `stage`; the pids it started, kept in the
/// pid file of `test` (tests run at once: each has its own file).
fn run_fake_with(
    test: &str,
    kind: &str,
    patience: &Patience,
    stage: &Stage,
) -> (Result<(), StageFailure>, Vec<u32>) {
    let pids = pid_file(test);
    let setup = Setup {
        lesson: &LESSONS[0],
        program: vec![
            exe(),
            "--fake".into(),
            kind.into(),
            "--pids".into(),
            pids.display().to_string(),
        ],
        target: "command".into(),
        seed: 7,
        patience: *patience,
        total: 1,
    };
    let result = run_one(&setup, 1, stage).and_then(|completed| match completed {
        Completed::Passed => Ok(()),
        Completed::Skipped(missing) => Err(StageFailure {
            report: missing.reason(),
            what: missing.reason(),
        }),
    });
    (result, read_pids(&pids))
}

/// A program whose stderr tries to act on the grader's terminal: clear the
/// screen, set the window title, overwrite a line with a fake pass. The
/// report shows each of those bytes escaped, never raw.
fn hostile_stderr_is_escaped() -> Result<(), Failed> {
    let (result, pids) = run_fake("writes_terminal_commands", &QUICK);
    let Err(failure) = result else {
        return Err("a server that exits at once passed".into());
    };
    left_behind(&pids)?;
    let raw: Vec<char> = failure
        .report
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    if !raw.is_empty() {
        return Err(format!("the report holds raw control characters {raw:?}").into());
    }
    for escaped in [r"\x1b[2J", r"\x1b]0;", r"\x07", r"\r"] {
        if !failure.report.contains(escaped) {
            return Err(format!("the report does not show {escaped}:\n{}", failure.report).into());
        }
    }
    let report = normalize(&failure.report).replace(
        &pid_file("writes_terminal_commands").display().to_string(),
        "PIDS",
    );
    compare_golden("writes_terminal_commands", &report).map_err(Failed::from)
}

fn check_case(case: Case) -> Result<(), String> {
    let started = Instant::now();
    let (result, pids) = run_fake(case.fake, &case.patience);
    let took = started.elapsed();
    let report = match result {
        Ok(()) => return Err(format!("the fake `{}` passed the stage", case.fake)),
        Err(failure) => {
            normalize(&failure.report).replace(&pid_file(case.fake).display().to_string(), "PIDS")
        }
    };
    if took > Duration::from_secs(case.within) {
        return Err(format!(
            "the report took {:.1}s, more than {}s:\n{report}",
            took.as_secs_f64(),
            case.within
        ));
    }
    left_behind(&pids)?;
    compare_golden(case.fake, &report)
}

/// The report with what changes from run to run (ports, the path of this
/// binary) replaced by fixed words.
fn normalize(report: &str) -> String {
    let exe = exe();
    let relative = std::env::current_dir()
        .ok()
        .and_then(|here| {
            Path::new(&exe)
                .strip_prefix(here)
                .ok()
                .map(Path::to_path_buf)
        })
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| exe.clone());
    let text = report.replace(&exe, "FAKE").replace(&relative, "FAKE");
    let mut normalized = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("127.0.0.1:") {
        let (before, after) = rest.split_at(at + "127.0.0.1:".len());
        normalized.push_str(before);
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        normalized.push_str(if digits > 0 { "PORT" } else { "" });
        rest = &after[digits..];
    }
    normalized.push_str(rest);
    normalized
}

fn compare_golden(name: &str, report: &str) -> Result<(), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("COURSE_BLESS").is_some() {
        std::fs::write(&path, report).map_err(|error| error.to_string())?;
        return Ok(());
    }
    let golden = std::fs::read_to_string(&path).map_err(|_| {
        format!(
            "tests/golden/{name}.txt is missing; COURSE_BLESS=1 writes it. The report:\n{report}"
        )
    })?;
    if golden == report {
        return Ok(());
    }
    let line = golden
        .lines()
        .zip(report.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| golden.lines().count().min(report.lines().count()));
    Err(format!(
        "the report differs from tests/golden/{name}.txt at line {}:\n  golden: {:?}\n  now:    {:?}\n\nThe report now:\n{report}\nIf the change is intended, rerun with COURSE_BLESS=1 and read the diff.",
        line + 1,
        golden.lines().nth(line).unwrap_or("(end)"),
        report.lines().nth(line).unwrap_or("(end)")
    ))
}

fn exe() -> String {
    std::env::current_exe()
        .expect("the test binary knows its path")
        .display()
        .to_string()
}

/// A fresh file for the fakes of one test to write their pids in.
fn pid_file(test: &str) -> std::path::PathBuf {
    let file = std::env::temp_dir().join(format!("course-fake-pids-{}-{test}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    file
}

fn read_pids(file: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let _ = std::fs::remove_file(file);
    text.lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Fail if any of `pids` still runs a moment after the stage: a program
/// whose parent died is reaped by the system, not at once.
fn left_behind(pids: &[u32]) -> Result<(), String> {
    if pids.is_empty() {
        return Err("no fake recorded its pid: the test cannot tell what was left behind".into());
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let alive: Vec<&u32> = pids.iter().filter(|pid| is_alive(**pid)).collect();
        if alive.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("processes left behind: {alive:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is a running process: it exists and is not a zombie (one
/// that has exited and waits to be reaped).
#[cfg(unix)]
fn is_alive(pid: u32) -> bool {
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        return !state.starts_with('Z');
    }
    // SAFETY: signal 0 checks that the process exists; nothing is sent.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[cfg(not(unix))]
fn is_alive(_pid: u32) -> bool {
    false
}

/// The misbehaving programs. Each keeps the command line of the contract.
mod fake {
    use super::*;

    pub fn run(kind: &str, pid_file: &str, args: &[String]) {
        if let Ok(mut pids) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(pid_file)
        {
            let _ = writeln!(pids, "{}", std::process::id());
        }
        let bind = args
            .iter()
            .position(|arg| arg == "--bind")
            .and_then(|at| args.get(at + 1))
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:0".into());
        match kind {
            "exits_at_once" => {
                eprintln!("fake: giving up before binding anything");
                std::process::exit(3);
            }
            "exits_quietly" => std::process::exit(3),
            "never_prints_its_address" => {
                let _listener = TcpListener::bind(&bind).unwrap();
                idle();
            }
            "prints_another_first_line" => {
                let _listener = TcpListener::bind(&bind).unwrap();
                println!("Server started!");
                idle();
            }
            "never_ends_the_line" => {
                let listener = TcpListener::bind(&bind).unwrap();
                print!("listening on {}", listener.local_addr().unwrap());
                std::io::stdout().flush().unwrap();
                idle();
            }
            "floods_its_output" => {
                let mut out = std::io::stdout().lock();
                while out.write_all(&[b'x'; 1024]).is_ok() {}
            }
            "accepts_and_never_answers" => {
                let listener = listen(&bind);
                let mut held = Vec::new();
                for stream in listener.incoming().flatten() {
                    held.push(stream);
                }
            }
            "answers_wrong_bytes" => serve(&bind, |line| line.replace("ll", "l")),
            "ignores_sigterm" => {
                #[cfg(unix)]
                // SAFETY: setting a signal to be ignored, before any thread starts.
                unsafe {
                    libc::signal(libc::SIGTERM, libc::SIG_IGN);
                }
                serve(&bind, str::to_string)
            }
            "echo" => serve(&bind, str::to_string),
            // Right, but slower than a grader watching would like.
            "answers_late" => serve(&bind, |line| {
                std::thread::sleep(Duration::from_millis(650));
                line.to_string()
            }),
            // A server that starts a program of its own, as a wrapper script
            // or `npm start` does; that program must end with the stage too.
            "starts_a_helper" => {
                start_helper(pid_file, false);
                serve(&bind, str::to_string)
            }
            "idle_helper" => {
                println!("ready");
                idle()
            }
            "writes_terminal_commands" => {
                eprint!("\x1b[2J\x1b]0;graded: all stages pass\x07");
                eprintln!("working...\rtest stage_01_echoes_a_line ... ok");
                std::process::exit(1);
            }
            // A server whose child leaves its process group and session, as
            // a daemon does, and would outlive it.
            "starts_a_daemon" => {
                start_helper(pid_file, true);
                serve(&bind, str::to_string)
            }
            other => panic!("no fake named {other}"),
        }
    }

    /// Start an idle helper program, in a session of its own if
    /// `leave_session`, and return once it has recorded its pid.
    fn start_helper(pid_file: &str, leave_session: bool) {
        let mut command = std::process::Command::new(exe());
        command
            .args(["--fake", "idle_helper", "--pids", pid_file])
            .stdout(std::process::Stdio::piped());
        #[cfg(unix)]
        if leave_session {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid is async-signal-safe, as pre_exec requires.
            unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        #[cfg(not(unix))]
        let _ = leave_session;
        let ready = command.spawn().ok().and_then(|mut helper| {
            let mut line = String::new();
            std::io::BufReader::new(helper.stdout.take()?)
                .read_line(&mut line)
                .ok()
        });
        if ready.is_none() {
            eprintln!("fake: its helper did not start");
            std::process::exit(1);
        }
    }

    fn listen(bind: &str) -> TcpListener {
        match TcpListener::bind(bind) {
            Ok(listener) => {
                println!("listening on {}", listener.local_addr().unwrap());
                listener
            }
            Err(error) => {
                eprintln!("error: address {bind}: {error}");
                std::process::exit(1);
            }
        }
    }

    /// Serve lines, answering each with `answer(line)`, one client at a time.
    fn serve(bind: &str, answer: impl Fn(&str) -> String) {
        let listener = listen(bind);
        for stream in listener.incoming().flatten() {
            let mut writer = stream.try_clone().unwrap();
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if writer
                    .write_all(format!("{}\n", answer(&line)).as_bytes())
                    .is_err()
                {
                    break;
                }
            }
        }
    }

    /// Do nothing until killed; the harness ends this process.
    fn idle() -> ! {
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

/// A suite of stages of its own, to test the runner: a stage that passes,
/// one whose client is missing, one with several independent failures, and
/// one after them.
mod suite {
    use super::*;

    pub const STAGES: [Stage; 4] = [
        ECHO_A_LINE,
        Stage {
            slug: "needs-a-client",
            title: "a stage that uses a client this machine lacks",
            slide: "connect",
            check: needs_a_missing_client,
            runs_alone: false,
        },
        Stage {
            slug: "finds-three-problems",
            title: "three independent checks, each failing",
            slide: "A read is not a message",
            check: three_problems,
            runs_alone: false,
        },
        Stage {
            slug: "comes-after",
            title: "sends `hello\\n` back again",
            slide: "A read is not a message",
            check: echo_a_line,
            runs_alone: false,
        },
    ];

    const MISSING: &str = "course-test-no-such-client";

    /// A stage whose own loop never ends, as a bug in a stage's code would.
    pub const STUCK: Stage = Stage {
        slug: "never-ends",
        title: "a stage stuck in a loop of its own",
        slide: "connect",
        check: |_ctx| loop {
            std::thread::sleep(Duration::from_millis(50));
        },
        runs_alone: false,
    };

    /// The run stops by itself, says which stage was stuck, and fails.
    pub fn stuck_stage_stops_the_run() -> Result<(), Failed> {
        let started = Instant::now();
        let output = assert_cmd::Command::new(exe())
            .env("COURSE_HARNESS_STUCK", "1")
            // 300 s at a scale of 0.0015: stuck for 0.45 s.
            .env("COURSE_PATIENCE", "0.0015")
            .env_remove("COURSE_HARNESS_SUITE")
            .timeout(Duration::from_secs(60))
            .output()
            .map_err(|error| Failed::from(error.to_string()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() != Some(101)
            || !stderr.contains("stage 1 (never-ends) is still running after 0.45 s")
        {
            return Err(format!(
                "expected exit 101 and the stuck stage named; got {:?} after {:?}:\n{stderr}",
                output.status.code(),
                started.elapsed()
            )
            .into());
        }
        Ok(())
    }

    fn needs_a_missing_client(ctx: &mut Ctx) -> Check<()> {
        ctx.require_tool(MISSING, "sudo apt-get install course-test-no-such-client")?;
        Err(Failure::new("a stage ran although its client is missing"))
    }

    /// Three checks that do not depend on each other: all three are run and
    /// reported, in one report.
    fn three_problems(ctx: &mut Ctx) -> Check<()> {
        let server = ctx.start_server(&[])?;
        for word in ["one", "two"] {
            ctx.soft(|ctx| {
                ctx.step(format!("sent `{word}`, expecting it in capitals"));
                let mut conn = ctx.connect(server.addr)?;
                conn.send(format!("{word}\n").as_bytes())?;
                conn.expect(format!("{}\n", word.to_uppercase()).as_bytes())
                    .map_err(|failure| failure.hint(format!("Shout `{word}`.")))
            });
        }
        ctx.soft(|_| Err(Failure::new("a third problem, with no bytes to show")));
        ctx.step("and a line is still echoed");
        let mut conn = ctx.connect(server.addr)?;
        conn.send(b"hello\n")?;
        conn.expect(b"hello\n")
    }

    pub fn several_checks_fail() -> Result<(), Failed> {
        let test = "several_checks_fail";
        let (result, pids) = run_fake_with(test, "echo", &QUICK, &STAGES[2]);
        let Err(failure) = result else {
            return Err("three failing checks passed".into());
        };
        left_behind(&pids)?;
        let report =
            normalize(&failure.report).replace(&pid_file(test).display().to_string(), "PIDS");
        compare_golden("several_checks_fail", &report).map_err(Failed::from)
    }

    /// Run the suite against the echo fake, as a student's `cargo test`
    /// would; it must fail, as libtest does (101). Its stdout, stderr and
    /// records.
    fn run_failing_suite(
        test: &str,
        env: &[(&str, &str)],
    ) -> Result<(String, String, Vec<StageRecord>), Failed> {
        let (code, stdout, stderr, records) = run_suite(test, "echo", &[], env);
        if code != Some(101) {
            return Err(format!("exit {code:?}, expected 101:\n{stdout}").into());
        }
        Ok((stdout, stderr, records))
    }

    /// Run the suite's stages picked by `filter` against the fake `kind`:
    /// its exit code, stdout, stderr and records. `test` names the files of
    /// this run (tests run at once: each has its own).
    fn run_suite(
        test: &str,
        kind: &str,
        filter: &[&str],
        env: &[(&str, &str)],
    ) -> (Option<i32>, String, String, Vec<StageRecord>) {
        let pids = pid_file(&format!("suite-{test}"));
        let report = std::env::temp_dir().join(format!(
            "course-suite-report-{}-{test}.jsonl",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&report);
        let mut command = std::process::Command::new(exe());
        command
            .env("COURSE_HARNESS_SUITE", "1")
            .env(
                "COURSE_CMD",
                format!("\"{}\" --fake {kind} --pids \"{}\"", exe(), pids.display()),
            )
            .env("COURSE_REPORT", &report)
            .env("COURSE_PROGRESS", "1")
            .env("COURSE_PATIENCE", "0.5")
            .env_remove("COURSE_ALL_STAGES")
            .env_remove("COURSE_FAIL_FAST")
            .env_remove("COURSE_REQUIRE_CLIENTS")
            .envs(env.iter().copied())
            .args(filter);
        let output = command.output().expect("the suite runs");
        let records = std::fs::read_to_string(&report)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let _ = std::fs::remove_file(&report);
        let _ = read_pids(&pids);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
            records,
        )
    }

    /// A stage that runs past its notice time (5 s; 0.3 s here) says so
    /// while it runs, with its last step. The fake answers 0.65 s after the
    /// line, well within the 4 s a reply may take at a patience of 2.
    pub fn says_a_long_stage_is_running() -> Result<(), Failed> {
        let (code, stdout, stderr, _) = run_suite(
            "long",
            "answers_late",
            &["--exact", "stage_04_comes_after"],
            &[("COURSE_PATIENCE", "2"), ("COURSE_NOTICE_AFTER", "0.3")],
        );
        if code != Some(0) {
            return Err(format!("exit {code:?}, expected 0:\n{stdout}").into());
        }
        expect_in(
            &stderr,
            &[
                "progress:       stage 4 (comes-after) still running after 0.3 s; its last step: connection #1: ",
                "progress: pass  stage 4  comes-after",
            ],
        )
    }

    fn expect_records(
        records: &[StageRecord],
        statuses: &[Status],
        counted: &[bool],
    ) -> Result<(), Failed> {
        let seen: Vec<(Status, bool)> = records.iter().map(|r| (r.status, r.counted)).collect();
        let wanted: Vec<(Status, bool)> = statuses
            .iter()
            .copied()
            .zip(counted.iter().copied())
            .collect();
        if seen != wanted {
            return Err(format!("records {seen:?}, expected {wanted:?}").into());
        }
        if records
            .iter()
            .any(|r| r.passed != (r.status == Status::Passed))
        {
            return Err("a record's `passed` disagrees with its status".into());
        }
        Ok(())
    }

    fn expect_in(text: &str, wanted: &[&str]) -> Result<(), Failed> {
        for piece in wanted {
            if !text.contains(piece) {
                return Err(format!("expected {piece:?} in:\n{text}").into());
            }
        }
        Ok(())
    }

    /// By default: the missing client skips its stage (never passed), the
    /// run stops at the first failure and lists the rest as not run, and
    /// the exit code says it failed.
    pub fn skips_a_missing_client() -> Result<(), Failed> {
        let (stdout, stderr, records) = run_failing_suite("skips", &[])?;
        expect_in(
            &stdout,
            &[
                "ignored (not checked: needs course-test-no-such-client; install it: sudo apt-get install course-test-no-such-client)",
                "ignored (not run: stage 3 fails first)",
                "1 passed; 1 failed; 2 ignored",
                "stage 2 (needs-a-client) needs course-test-no-such-client: sudo apt-get install course-test-no-such-client",
                "Not run: stage 4, because stage 3 fails first",
                "What went wrong: 3 things",
            ],
        )?;
        expect_in(
            &stderr,
            &[
                "progress: pass  stage 1  echoes-a-line",
                "progress: skip  stage 2  needs-a-client",
                "progress: FAIL  stage 3  finds-three-problems",
            ],
        )?;
        expect_records(
            &records,
            &[
                Status::Passed,
                Status::Skipped,
                Status::Failed,
                Status::NotRun,
            ],
            &[true, false, false, false],
        )
    }

    /// Run for a checkout other than the one it was built from (as cargo
    /// does in a build folder two checkouts share), the suite runs no
    /// stage, and says why and what to do.
    pub fn refuses_another_checkouts_build() -> Result<(), Failed> {
        let elsewhere = "/nonexistent/another-checkout";
        let (code, stdout, stderr, records) = run_suite(
            "elsewhere",
            "echo",
            &[],
            &[("CARGO_MANIFEST_DIR", elsewhere)],
        );
        if code != Some(2) || !records.is_empty() {
            return Err(format!(
                "exit {code:?} with {} records, expected 2 and none:\n{stdout}{stderr}",
                records.len()
            )
            .into());
        }
        expect_in(
            &stderr,
            &[
                "error: these stages were built from the course in",
                "not from this checkout (/nonexistent/another-checkout)",
                "unset CARGO_TARGET_DIR",
            ],
        )
    }

    /// With `COURSE_REQUIRE_CLIENTS=1` (as CI sets) the missing client fails
    /// its stage; with `COURSE_ALL_STAGES=1` every stage runs, and one that
    /// passes after a failure is not counted.
    pub fn requires_clients() -> Result<(), Failed> {
        let (stdout, _, records) = run_failing_suite(
            "requires",
            &[("COURSE_REQUIRE_CLIENTS", "1"), ("COURSE_ALL_STAGES", "1")],
        )?;
        expect_in(
            &stdout,
            &[
                "this stage needs `course-test-no-such-client`, and it is not installed",
                "Install it, then run the stage again: sudo apt-get install",
                "2 passed; 2 failed; 0 ignored",
            ],
        )?;
        expect_records(
            &records,
            &[
                Status::Passed,
                Status::Failed,
                Status::Failed,
                Status::Passed,
            ],
            &[true, false, false, false],
        )
    }
}

/// The `course` command, run as a student or an instructor would.
mod cli {
    use assert_cmd::Command;
    use predicates::prelude::*;
    use predicates::str::{contains, is_match};

    use super::*;

    /// The course command, ended (and its test failed) past 10 minutes: a
    /// grade or a board builds first, and a build that hangs must not hold
    /// the run.
    fn course() -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_course"));
        command
            .env_remove("COURSE_TARGET")
            .env_remove("COURSE_CMD")
            .timeout(Duration::from_secs(600));
        command
    }

    /// Exits 0, shows a line with a stage count for every lesson, and says
    /// what to do next (or that everything passes, in a solved checkout).
    /// Its deadlines are a tenth as long: the starters fail their first
    /// stage sooner, and the board looks the same.
    pub fn board() -> Result<(), Failed> {
        let mut board = course()
            .env("COURSE_PATIENCE", "0.1")
            .assert()
            .success()
            .stdout(contains("Next: lesson").or(contains("Every stage")));
        for lesson in LESSONS {
            let line = format!(r"(?m)^  {}  .*\] \d+ of \d+", lesson.number);
            board = board.stdout(is_match(line).expect("a valid pattern"));
        }
        Ok(())
    }

    fn records(stdout: &[u8]) -> Result<Vec<StageRecord>, Failed> {
        String::from_utf8_lossy(stdout)
            .lines()
            .map(|line| {
                serde_json::from_str(line).map_err(|error| Failed::from(format!("{error}: {line}")))
            })
            .collect()
    }

    /// How many stages lesson 01 has (tests/01_echo.rs).
    const LESSON_01_STAGES: usize = 8;

    pub fn grade_json() -> Result<(), Failed> {
        let graded = course()
            .args(["grade", "01", "--target", "solutions", "--json"])
            .assert()
            .success();
        let records = records(&graded.get_output().stdout)?;
        let passed: Vec<usize> = records
            .iter()
            .filter(|record| record.passed)
            .map(|record| record.stage)
            .collect();
        let stages = LESSON_01_STAGES;
        if passed != (1..=stages).collect::<Vec<_>>() || records.len() != stages {
            return Err(
                format!("expected stages 1 to {stages} passing, in order: {passed:?}").into(),
            );
        }
        // The run's facts, on every record, for a gradebook.
        for line in String::from_utf8_lossy(&graded.get_output().stdout).lines() {
            let record: serde_json::Value =
                serde_json::from_str(line).map_err(|error| Failed::from(error.to_string()))?;
            let text = |key: &str| record[key].as_str().unwrap_or_default().to_string();
            let started_at = text("started_at");
            let looks_rfc3339 = started_at.len() == 20
                && started_at.ends_with('Z')
                && started_at.as_bytes()[10] == b'T';
            if text("student").is_empty()
                || !looks_rfc3339
                || record.get("commit").is_none()
                || !text("target").ends_with("01-echo")
            {
                return Err(format!(
                    "a record lacks student, commit, started_at or its target: {line}"
                )
                .into());
            }
        }
        Ok(())
    }

    /// `--csv`: a header, then one row for the student and the lesson, with
    /// its points and maximum.
    pub fn grade_csv() -> Result<(), Failed> {
        let graded = course()
            .args(["grade", "01", "--target", "solutions", "--csv"])
            .args(["--student", "Ada, Countess"])
            .assert()
            .success();
        let stdout = String::from_utf8_lossy(&graded.get_output().stdout).to_string();
        let lines: Vec<&str> = stdout.lines().collect();
        let points = format!("\"Ada, Countess\",01-echo,{LESSON_01_STAGES},{LESSON_01_STAGES},");
        if lines.len() != 2 || !lines[0].starts_with("student,lesson,points,max_points,") {
            return Err(format!("expected a header and one row:\n{stdout}").into());
        }
        if !lines[1].starts_with(&points) {
            return Err(format!("expected the row to start with {points}:\n{stdout}").into());
        }
        Ok(())
    }

    /// With CARGO_TARGET_DIR naming a folder of its own, a grade still
    /// builds in the checkout's target/ (where this test's build already
    /// is), says so, and puts nothing in that folder.
    pub fn grade_own_build_folder() -> Result<(), Failed> {
        let shared = std::env::temp_dir().join(format!("course-shared-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&shared);
        let graded = course()
            .env("CARGO_TARGET_DIR", &shared)
            .args(["grade", "01", "--target", "solutions", "--csv"])
            .assert()
            .success()
            .stderr(
                contains("note: grading builds in")
                    .and(contains("rather than in CARGO_TARGET_DIR")),
            );
        let built_there = shared.exists();
        let _ = std::fs::remove_dir_all(&shared);
        if built_there {
            return Err(format!("cargo built in {}", shared.display()).into());
        }
        let stdout = String::from_utf8_lossy(&graded.get_output().stdout).to_string();
        let points = format!(",01-echo,{LESSON_01_STAGES},{LESSON_01_STAGES},");
        if !stdout.contains(&points) {
            return Err(format!("expected a row with {points}:\n{stdout}").into());
        }
        Ok(())
    }

    /// A program in any language: here, one that accepts and never answers.
    /// Every wait is a twentieth as long, to keep `cargo test` quick; a silent
    /// server fails every stage at any patience, only later (at full
    /// patience, `course grade 01 --cmd ...` takes about 5 s).
    pub fn grade_cmd_silent() -> Result<(), Failed> {
        let pids = pid_file("cli");
        let started = Instant::now();
        let graded = course()
            .args(["grade", "01", "--json", "--cmd"])
            .arg(format!(
                "\"{}\" --fake accepts_and_never_answers --pids \"{}\"",
                exe(),
                pids.display()
            ))
            .env("COURSE_PATIENCE", "0.05")
            .assert()
            .code(1);
        let took = started.elapsed();
        let records = records(&graded.get_output().stdout)?;
        if records.len() != LESSON_01_STAGES {
            return Err(
                format!("expected {LESSON_01_STAGES} records, got {}", records.len()).into(),
            );
        }
        if let Some(passed) = records.iter().find(|record| record.passed) {
            return Err(format!("stage {} passed against a silent server", passed.slug).into());
        }
        if let Some(unnamed) = records
            .iter()
            .find(|record| !record.message.contains(&record.slug))
        {
            return Err(format!(
                "stage {}'s report does not name it:\n{}",
                unnamed.stage, unnamed.message
            )
            .into());
        }
        println!("graded a silent server in {:.1}s", took.as_secs_f64());
        left_behind(&read_pids(&pids)).map_err(Failed::from)
    }

    /// A graded program whose child leaves its session and sleeps: when
    /// `grade` is done, no process of it remains.
    pub fn grade_cmd_daemon() -> Result<(), Failed> {
        let pids = pid_file("cli-daemon");
        course()
            .args(["grade", "01", "--json", "--cmd"])
            .arg(format!(
                "\"{}\" --fake starts_a_daemon --pids \"{}\"",
                exe(),
                pids.display()
            ))
            .env("COURSE_PATIENCE", "0.05")
            .assert()
            .code(1);
        let pids = read_pids(&pids);
        if pids.len() < 4 {
            return Err(format!("expected a server and a daemon per stage, got {pids:?}").into());
        }
        left_behind(&pids).map_err(Failed::from)
    }

    /// A wrong lesson number: one line that names the lessons, exit 2.
    pub fn unknown_lesson() -> Result<(), Failed> {
        let one_line = predicate::function(|stderr: &str| stderr.lines().count() == 1);
        course()
            .args(["grade", "99"])
            .assert()
            .code(2)
            .stderr(contains("01-echo").and(one_line));
        Ok(())
    }
}
