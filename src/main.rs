//! `course`: the course board, and grading for students and instructors.
//!
//! ```text
//! cargo run                                  the board
//! cargo run -- grade 01                      lesson 01's stages, your code
//! cargo run -- grade 01 --target solutions   against the reference
//! cargo run -- grade 01 --cmd "python3 echo.py" --json
//! cargo run -- grade all --csv --student "Ada Lovelace"
//! cargo run -- check-starters                every starter fails stage 1
//! cargo run -- classroom                     write the GitHub Classroom workflow
//! cargo run -- load 127.0.0.1:7004 --protocol mailbox --clients 100 --requests 20
//! cargo run -- handout ../course-for-students  the copy students are given
//! cargo run -- tap --to 127.0.0.1:7001       watch the wire between nc and a server
//! cargo run --release -- push-bench 127.0.0.1:7007
//! cargo run -- proxy --mode buffer 127.0.0.1:7006    a middlebox for lesson 06
//! cargo run --release -- web-bench 127.0.0.1:7006    lesson 06's four ways, measured
//! cargo run -- lossy --to 127.0.0.1:7009 --loss 20   a bad network for lesson 09
//! cargo run --release -- game-bench 127.0.0.1:7009   lesson 09's bytes and delay
//! cargo run --release -- bench               solutions beside nginx, Python, tokio
//! cargo run -- nat --idle 5 --to 127.0.0.1:7008
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use course::commands::board::{self, Standing};
use course::commands::classroom;
use course::commands::grade::{self, BuildFolder, Subject};
use course::commands::gradebook;
use course::commands::grading_copy;
use course::commands::named_files;
use course::harness::checkout;
use course::harness::lesson::{self, Lesson, LESSONS};
use course::harness::report::wrap;
use course::harness::stage::{StageRecord, Status};
use course::harness::target::{split_command, Target};

#[derive(Parser)]
#[command(
    name = "course",
    about = "Client as Server: the course board and its grader",
    after_help = "With no command, shows the board: every lesson, its stages passed, and what to do next."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// Show every lesson with its stages passed, and what to do next.
    Board,
    /// Run one lesson's stages and print a report, a line per stage.
    Grade {
        /// The lesson: 1, 01 or 01-echo; `all` grades every lesson in turn.
        lesson: String,
        /// Whose code: `lessons` (the student's, the default) or `solutions`.
        #[arg(long, default_value = "lessons", conflicts_with = "cmd")]
        target: Target,
        /// Grade any program that keeps the contract, in any language: the
        /// stages run `PROGRAM ARGS server --bind 127.0.0.1:0`, and so on.
        #[arg(long, value_name = "PROGRAM ARGS")]
        cmd: Option<String>,
        /// Print JSON Lines, one object per stage, for a gradebook.
        #[arg(long)]
        json: bool,
        /// Print CSV for a gradebook: one row per student and lesson, with
        /// its points (stages that count) and its maximum.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// Whose work this is, for --json and --csv; by default the
        /// checkout's git `user.name <user.email>`, and with --checkout,
        /// the name of the checkout's folder.
        #[arg(long, value_name = "NAME")]
        student: Option<String>,
        /// Grade the lessons/ of the student's checkout in DIR with this
        /// checkout's stages: only lessons/ is taken from DIR, so edits to
        /// the stages (tests/, src/) there count for nothing. Built in
        /// target/grading.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["cmd", "target"])]
        checkout: Option<PathBuf>,
    },
    /// Check that every starter in lessons/ fails its first stage, with a
    /// report that names a TODO: no exercise ships solved.
    CheckStarters,
    /// Many clients at once against a server: throughput, latency, errors.
    Load(course::net::load::LoadArgs),
    /// A relay that prints every chunk both ways: put it between a client
    /// and a server to watch their protocol.
    Tap(course::net::tap::TapArgs),
    /// Write the copy of the course a student is given into DIR: no
    /// solutions/, no answers in the slides, every stage working.
    Handout {
        /// A new (or empty) folder outside the course.
        dir: std::path::PathBuf,
    },
    /// A UDP relay that loses, delays, reorders and duplicates datagrams,
    /// the same way for the same seed.
    Lossy(course::net::lossy::LossyArgs),
    /// Lesson 09's game on the wire: bytes per client, and the
    /// interpolation delay loss calls for.
    GameBench(course::net::game_bench::GameBenchArgs),
    /// Write .github/workflows/classroom.yml, GitHub Classroom's autograding
    /// workflow, from the lesson list: a step per lesson.
    Classroom,
    /// Push against polling, against a lesson 07 service: latency, requests.
    PushBench(course::net::push_bench::PushBenchArgs),
    /// A middlebox in front of a server: one that buffers each response
    /// until it ends, or one that closes idle connections.
    Proxy(course::net::proxy::ProxyArgs),
    /// Lesson 06's four ways against a running server: delay, requests and
    /// bytes per line, directly and through both middleboxes.
    WebBench(course::net::webbench::WebBenchArgs),
    /// The reference solutions side by side with a Python echo server,
    /// nginx under wrk, and peers built in bench/ in the design of tokio's
    /// echo and chat examples and of the Rust Book's server, where
    /// installed: medians and ratios, as a table. Build with --release
    /// (`cargo run --release -- bench`).
    Bench(course::commands::bench::BenchArgs),
    /// A userspace NAT: relays TCP and silently forgets idle connections.
    Nat(course::net::nat::NatArgs),
}

/// The checkout the course tool works on: the one `cargo run` runs it in,
/// wherever this program was built (see `course::harness::checkout`).
fn project() -> &'static Path {
    static PROJECT: OnceLock<PathBuf> = OnceLock::new();
    PROJECT.get_or_init(checkout::this_checkout)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Action::Board) {
        Action::Board => show_board(),
        Action::Grade {
            lesson,
            target,
            cmd,
            json,
            csv,
            student,
            checkout,
        } => {
            let subject = match (cmd, checkout) {
                (Some(line), _) => ToGrade::Command(line),
                (None, Some(dir)) => ToGrade::Checkout(dir),
                (None, None) => ToGrade::Build(target),
            };
            grade_lesson(&lesson, subject, Output { json, csv, student })
        }
        Action::CheckStarters => check_starters(),
        Action::Load(args) => course::net::load::run(&args).map(|()| ExitCode::SUCCESS),
        Action::Handout { dir } => write_handout(&dir),
        Action::Tap(args) => course::net::tap::run(&args).map(|()| ExitCode::SUCCESS),
        Action::Lossy(args) => course::net::lossy::run(&args).map(|()| ExitCode::SUCCESS),
        Action::GameBench(args) => course::net::game_bench::run(&args).map(|()| ExitCode::SUCCESS),
        Action::Classroom => write_classroom_workflow(),
        Action::PushBench(args) => course::net::push_bench::run(&args).map(|()| ExitCode::SUCCESS),
        Action::Proxy(args) => course::net::proxy::run(&args).map(|()| ExitCode::SUCCESS),
        Action::WebBench(args) => course::net::webbench::run(&args).map(|()| ExitCode::SUCCESS),
        Action::Bench(args) => {
            course::commands::bench::run(project(), &args).map(|()| ExitCode::SUCCESS)
        }
        Action::Nat(args) => course::net::nat::run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn show_board() -> Result<ExitCode> {
    eprintln!("Building the lessons and their stages (the first time takes a few minutes)...");
    let suites = grade::build_suites(project(), LESSONS, BuildFolder::AsConfigured)?;
    warn_of_files_outside(LESSONS);
    let subject = Subject::Build(Target::Lessons);
    // Lessons are independent programs: grade them side by side, but no
    // more at once than the machine has cores. Each lesson runs its stages
    // side by side too, and some stages bound a time (a server stopped
    // within 5 s, a held poll answered within 20 ms): with all nine lessons
    // at once on 2 cores that were busy already, correct lessons failed such
    // stages on 2 boards of 3. A board that blames correct code is worse
    // than a slower one.
    let at_once = thread::available_parallelism().map_or(1, usize::from);
    let next = AtomicUsize::new(0);
    let graded: Mutex<Vec<Option<Graded>>> = Mutex::new(LESSONS.iter().map(|_| None).collect());
    thread::scope(|scope| {
        let graders: Vec<_> = (0..at_once.min(LESSONS.len()))
            .map(|_| {
                scope.spawn(|| loop {
                    // Each grader takes the next lesson no one has taken.
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(lesson) = LESSONS.get(index) else {
                        break;
                    };
                    // Where a student stands needs only the stages up to
                    // the first that fails: the board stays quick.
                    let records = run_lesson(&suites, project(), lesson, &subject, true);
                    graded.lock().unwrap_or_else(PoisonError::into_inner)[index] = Some(records);
                })
            })
            .collect();
        // Joined here, a grader that panicked leaves its lesson without
        // records, rather than take the whole board down with it.
        for grader in graders {
            let _ = grader.join();
        }
    });
    let mut graded = graded.into_inner().unwrap_or_else(PoisonError::into_inner);
    let standings: Vec<Standing> = LESSONS
        .iter()
        .zip(graded.iter_mut())
        .map(|(lesson, records)| Standing {
            lesson,
            records: records
                .take()
                .unwrap_or_else(|| Err("the grader stopped unexpectedly".into())),
        })
        .collect();
    print!("{}", board::render(&standings));
    Ok(ExitCode::SUCCESS)
}

/// A note for each of `lessons` whose code names a file outside its folder.
/// The stages in the student's own checkout run what those files build,
/// but a grade with --checkout (the one recorded) sets such a lesson aside:
/// better known now than at the grade.
fn warn_of_files_outside(lessons: &[Lesson]) {
    for lesson in lessons {
        let folder = project().join("lessons").join(lesson.name());
        if let Ok(Some(place)) = named_files::first_outside_file_in(&folder, &lesson.name()) {
            eprintln!(
                "note: {place} names a file outside the lesson's folder: a grade with \
                 --checkout, the one an instructor records, sets lesson {} aside. {}",
                lesson.number,
                named_files::OWN_FILES_ONLY
            );
        }
    }
}

/// A lesson's stage records, or why its stages could not run.
type Graded = Result<Vec<StageRecord>, String>;

/// Run `lesson`'s suite, one of `suites` built in the course at `built_in`.
fn run_lesson(
    suites: &std::collections::BTreeMap<String, std::path::PathBuf>,
    built_in: &Path,
    lesson: &Lesson,
    subject: &Subject,
    fail_fast: bool,
) -> Graded {
    let executable = suites
        .get(&lesson.test_target())
        .ok_or_else(|| format!("cargo built no tests/{}.rs", lesson.test_target()))?;
    grade::run_suite(executable, built_in, lesson, subject, fail_fast)
        .map_err(|error| format!("{error:#}"))
}

/// How `grade` reports: for people (the default), or for a gradebook.
struct Output {
    json: bool,
    csv: bool,
    student: Option<String>,
}

/// The last part of `dir`'s path (`ada` for `students/ada/`), its links
/// resolved; none for a path without one (`/`).
fn folder_name(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name()
        .map(|name| name.to_string_lossy().into_owned())
}

/// What `grade` was asked to grade.
enum ToGrade {
    /// A build of this checkout: the student's lessons/, or solutions/.
    Build(Target),
    /// Any program that keeps the contract.
    Command(String),
    /// The lessons/ of a student's checkout, with this checkout's stages.
    Checkout(PathBuf),
}

fn grade_lesson(number: &str, to_grade: ToGrade, output: Output) -> Result<ExitCode> {
    let lessons: Vec<Lesson> = if number == "all" {
        LESSONS.to_vec()
    } else {
        let Some(lesson) = lesson::find(number) else {
            let known: Vec<String> = LESSONS.iter().map(Lesson::name).collect();
            bail!(
                "there is no lesson {number:?}; the lessons are {}, or `all`",
                known.join(", ")
            );
        };
        vec![*lesson]
    };
    // What the stages run, whose work it is (the checkout its facts come
    // from), and where the stages are built.
    let mut set_aside = std::collections::BTreeMap::new();
    let (subject, checkout, built_in, copy_held) = match to_grade {
        ToGrade::Command(line) => {
            // Check the words now, so a typo is one clear line, once.
            split_command(&line).map_err(anyhow::Error::msg)?;
            // Graded from where the instructor stands, usually the
            // student's checkout.
            let here = std::env::current_dir()?;
            (Subject::Command(line), here, project().to_path_buf(), None)
        }
        ToGrade::Build(target) => {
            if target == Target::Lessons {
                warn_of_files_outside(&lessons);
            }
            (
                Subject::Build(target),
                project().to_path_buf(),
                project().to_path_buf(),
                None,
            )
        }
        ToGrade::Checkout(dir) => {
            // Held until the grade ends: the copy holds this student's
            // lessons until then.
            let held = grading_copy::take(project())?;
            let copy = grading_copy::prepare(project(), &dir)?;
            eprintln!(
                "Building the lessons of {} with this course's stages, in {} \
                 (the first time takes a few minutes)...",
                dir.display(),
                copy.display()
            );
            set_aside = grading_copy::set_aside_lessons_that_cannot_be_graded(&copy)?;
            for (lesson, why) in &set_aside {
                eprintln!(
                    "note: {} {}: none of its stages counts",
                    dir.join("lessons").join(lesson).display(),
                    why.what
                );
            }
            (Subject::Build(Target::Lessons), dir, copy, Some(held))
        }
    };
    // A grade is recorded: it is built where no other checkout builds.
    if let Some(note) = grade::own_build_folder_note(&built_in) {
        eprintln!("{note}");
    }
    let suites = grade::build_suites(&built_in, &lessons, BuildFolder::Own)?;
    // A student's checkout graded on the instructor's machine would take
    // the instructor's git name: its folder's name says whose it is.
    let student = match (&output.student, &copy_held) {
        (None, Some(_)) => folder_name(&checkout),
        _ => output.student,
    };
    let run = gradebook::Run::starting_now(&checkout, student);
    if output.csv {
        println!("{}", gradebook::CSV_HEADER);
    }
    let mut all_passed = true;
    for lesson in &lessons {
        // In place of a lesson set aside is a stand-in, whose run gives
        // the stages' names; it need not be watched.
        let why = set_aside.get(&lesson.name());
        let mut records = run_lesson(&suites, &built_in, lesson, &subject, why.is_some())
            .map_err(|error| anyhow::anyhow!("lesson {}: {error}", lesson.name()))?;
        if let Some(why) = why {
            grading_copy::mark_set_aside(&mut records, &lesson.name(), why);
        }
        let target = graded_target(lesson, &subject, &checkout);
        for record in &mut records {
            record.target = target.clone();
        }
        if output.json {
            for record in &records {
                let record = gradebook::GradeRecord {
                    stage: record,
                    run: &run,
                };
                println!("{}", serde_json::to_string(&record)?);
            }
        } else if output.csv {
            let points = gradebook::points(&records);
            let row = gradebook::csv_row(&run, &lesson.name(), &target, points, records.len());
            println!("{row}");
        } else {
            print!("{}", grade_report(lesson, &subject, &checkout, &records));
        }
        all_passed &= records.iter().all(|record| record.passed);
    }
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What was graded, as a gradebook keeps it: the folder of the code, or the
/// command line.
fn graded_target(lesson: &Lesson, subject: &Subject, checkout: &Path) -> String {
    match subject {
        Subject::Build(target) => checkout
            .join(target.name())
            .join(lesson.name())
            .display()
            .to_string(),
        Subject::Command(line) => line.clone(),
    }
}

/// A line per stage, and the full report under the first that fails.
fn grade_report(
    lesson: &Lesson,
    subject: &Subject,
    checkout: &Path,
    records: &[StageRecord],
) -> String {
    let whose = match subject {
        Subject::Build(Target::Lessons) if checkout != project() => format!(
            "the code in {}, with this course's stages",
            checkout.join("lessons").join(lesson.name()).display()
        ),
        Subject::Build(Target::Lessons) => format!("your code in lessons/{}", lesson.name()),
        Subject::Build(Target::Solutions) => {
            format!("the reference in solutions/{}", lesson.name())
        }
        Subject::Command(line) => format!("the program `{line}`"),
    };
    let mut text = format!(
        "Lesson {}: {}\nGrading {whose}.\n\n",
        lesson.number, lesson.title
    );
    let slug_width = records.iter().map(|r| r.slug.len()).max().unwrap_or(0);
    let mut shown_report = false;
    for record in records {
        let mark = match record.status {
            Status::Passed => "pass",
            Status::Failed => "FAIL",
            Status::Skipped => "skip",
            Status::NotRun => "----",
        };
        text.push_str(&format!(
            "  {mark}  stage {}  {:<slug_width$}  {} ({} ms)\n",
            record.stage, record.slug, record.title, record.duration_ms
        ));
        if record.status == Status::Skipped {
            text.push_str(&format!("        {}\n", record.message));
        }
        if record.status == Status::Failed && !shown_report {
            shown_report = true;
            text.push('\n');
            for line in record.message.lines() {
                text.push_str(&format!("        {line}\n").replace("        \n", "\n"));
            }
            text.push('\n');
        }
    }
    let passed = records.iter().filter(|record| record.passed).count();
    let counted = records.iter().filter(|record| record.counted).count();
    text.push_str(&format!("\n{passed} of {} stages pass", records.len()));
    if counted != passed {
        text.push_str(&format!(
            "; {counted} count, as a stage counts only when every stage before it passes too"
        ));
    }
    text.push_str(".\n\n");
    text
}

fn check_starters() -> Result<ExitCode> {
    let suites = grade::build_suites(project(), LESSONS, BuildFolder::AsConfigured)?;
    let subject = Subject::Build(Target::Lessons);
    let mut solved = 0;
    for lesson in LESSONS {
        let records =
            run_lesson(&suites, project(), lesson, &subject, true).map_err(anyhow::Error::msg)?;
        let first = records.first();
        let verdict = match first {
            Some(stage) if stage.passed => "PASSES stage 1: the exercise ships solved",
            Some(stage) if !stage.message.contains("TODO") => {
                "fails stage 1, but its report names no TODO"
            }
            Some(_) => "fails stage 1 with a report that names a TODO",
            None => "has no stages",
        };
        let ok = first.is_some_and(|stage| !stage.passed && stage.message.contains("TODO"));
        if !ok {
            solved += 1;
        }
        println!(
            "{} {}",
            if ok { "ok  " } else { "BAD " },
            wrap(&format!("lessons/{}: {verdict}", lesson.name()), "").trim()
        );
    }
    Ok(if solved == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write_handout(dir: &Path) -> Result<ExitCode> {
    let summary = course::commands::handout::write(project(), dir)?;
    println!(
        "wrote the student's copy of the course to {}",
        dir.display()
    );
    println!(
        "  {} files; no solutions/, no .git, target/ or .ci/",
        summary.files
    );
    println!("  Cargo.toml without: {}", summary.bins_dropped.join(", "));
    if !summary.tests_dropped.is_empty() {
        println!(
            "  maintainers' tests left out: {}",
            summary.tests_dropped.join(", ")
        );
    }
    println!(
        "  slides: {} code blocks that answer a TODO replaced by the exercise",
        summary.code_blocks_replaced
    );
    for slide in &summary.slides_left_out {
        println!("  left out, the instructor's: {slide}");
    }
    if !summary.untracked_left_out.is_empty() {
        println!(
            "  left out, as git does not track them: {}",
            summary.untracked_left_out.join(", ")
        );
    }
    println!("  no line of any answer stands anywhere in it (checked)");
    Ok(ExitCode::SUCCESS)
}

fn write_classroom_workflow() -> Result<ExitCode> {
    let path = project().join(classroom::WORKFLOW_FILE);
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)?;
    }
    std::fs::write(&path, classroom::workflow(LESSONS))?;
    println!(
        "wrote {}: a grading step for each of the {} lessons, {} points each",
        classroom::WORKFLOW_FILE,
        LESSONS.len(),
        classroom::POINTS_PER_LESSON
    );
    Ok(ExitCode::SUCCESS)
}
