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
use course::harness::runner::{run_one, StageFailure};
use course::harness::setup::{Patience, Setup};
use course::harness::stage::StageRecord;
use course::{Check, Ctx, Stage};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `harness --fake KIND --pids FILE server --bind ADDR`
    if args.get(1).map(String::as_str) == Some("--fake") {
        fake::run(&args[2], &args[4], &args[5..]);
        return;
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
        Trial::test("no_program_a_server_started_outlives_the_stage", || {
            let (result, pids) = run_fake("starts_a_helper", &quick());
            result.map_err(|failure| Failed::from(failure.report))?;
            if pids.len() != 2 {
                return Err(
                    format!("expected the server and its helper, got pids {pids:?}").into(),
                );
            }
            left_behind(&pids).map_err(Failed::from)
        }),
        Trial::test("course_board_lists_every_lesson", cli::board),
        Trial::test("course_grade_json_has_a_record_per_stage", cli::grade_json),
        Trial::test("course_grade_csv_has_a_row_per_lesson", cli::grade_csv),
        Trial::test("course_grade_cmd_grades_any_program", cli::grade_cmd_silent),
        Trial::test(
            "course_grade_names_the_lessons_for_a_wrong_one",
            cli::unknown_lesson,
        ),
    ]);
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}

/// A misbehaviour, and how long its report may take.
#[derive(Clone, Copy)]
struct Case {
    fake: &'static str,
    /// The report must come within this many seconds.
    within: u64,
}

const CASES: [Case; 8] = [
    Case {
        fake: "exits_at_once",
        within: 2,
    },
    Case {
        fake: "never_prints_its_address",
        within: 4,
    },
    Case {
        fake: "prints_another_first_line",
        within: 2,
    },
    Case {
        fake: "never_ends_the_line",
        within: 4,
    },
    Case {
        fake: "floods_its_output",
        within: 2,
    },
    Case {
        fake: "accepts_and_never_answers",
        within: 4,
    },
    Case {
        fake: "answers_wrong_bytes",
        within: 2,
    },
    Case {
        fake: "ignores_sigterm",
        within: 5,
    },
];

/// Short deadlines, so the whole file runs in seconds.
fn quick() -> Patience {
    Patience {
        start: Duration::from_millis(1500),
        reply: Duration::from_millis(1000),
        exit: Duration::from_millis(1500),
    }
}

/// The one stage every fake is graded by: echo a line.
const ECHO_A_LINE: Stage = Stage {
    slug: "echoes-a-line",
    title: "sends `hello\\n` back byte for byte",
    slide: "A read is not a message",
    check: echo_a_line,
};

fn echo_a_line(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let mut conn = ctx.connect(server.addr)?;
    conn.send(b"hello\n")?;
    conn.expect(b"hello\n")
}

/// Grade the fake `kind` with the one stage; the pids it started.
fn run_fake(kind: &str, patience: &Patience) -> (Result<(), StageFailure>, Vec<u32>) {
    let pids = pid_file(kind);
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
    let result = run_one(&setup, 1, &ECHO_A_LINE);
    (result, read_pids(&pids))
}

fn check_case(case: Case) -> Result<(), String> {
    let started = Instant::now();
    let (result, pids) = run_fake(case.fake, &quick());
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
            // A server that starts a program of its own, as a wrapper script
            // or `npm start` does; that program must end with the stage too.
            "starts_a_helper" => {
                let helper = std::process::Command::new(exe())
                    .args(["--fake", "idle_helper", "--pids", pid_file])
                    .stdout(std::process::Stdio::piped())
                    .spawn();
                // Serve only once the helper has recorded its pid.
                let ready = helper.ok().and_then(|mut helper| {
                    let mut line = String::new();
                    std::io::BufReader::new(helper.stdout.take()?)
                        .read_line(&mut line)
                        .ok()
                });
                if ready.is_none() {
                    eprintln!("fake: its helper did not start");
                    std::process::exit(1);
                }
                serve(&bind, str::to_string)
            }
            "idle_helper" => {
                println!("ready");
                idle()
            }
            other => panic!("no fake named {other}"),
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

/// The `course` command, run as a student or an instructor would.
mod cli {
    use assert_cmd::Command;
    use predicates::prelude::*;
    use predicates::str::{contains, is_match};

    use super::*;

    fn course() -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_course"));
        command.env_remove("COURSE_TARGET").env_remove("COURSE_CMD");
        command
    }

    /// Exits 0, shows a line with a stage count for every lesson, and says
    /// what to do next (or that everything passes, in a solved checkout).
    pub fn board() -> Result<(), Failed> {
        let mut board = course()
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

    /// A program in any language: here, one that accepts and never answers.
    /// Every wait is halved to keep `cargo test` quick; at full patience the
    /// same grading takes under 20 s (`course grade 01 --cmd ...` shows it).
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
            .env("COURSE_PATIENCE", "0.5")
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
