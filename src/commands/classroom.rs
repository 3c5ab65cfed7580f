//! The GitHub Classroom workflow, `.github/workflows/classroom.yml`, made
//! from the lesson list: a grading step per lesson and the step that
//! reports the points to Classroom. `course classroom` writes it; a test
//! fails when the committed file differs from what the lessons make.
//!
//! Each step grades its lesson with `course grade NN --checkout .`, not
//! `cargo test --test NN_name`: cargo builds every lesson before the stages
//! of any, so with `cargo test` one lesson half written failed the build
//! and every lesson's step with it, and the student got no points at all
//! until it compiled. The grading copy sets that lesson aside and builds
//! the others (`grading_copy.rs`).

use crate::harness::lesson::Lesson;

/// Where the workflow lives, in the project and in every student's copy.
pub const WORKFLOW_FILE: &str = ".github/workflows/classroom.yml";

/// What a lesson is worth in Classroom. Classroom's command grader gives a
/// step all of its points when the command exits 0 and none otherwise, so a
/// lesson earns them when every one of its stages passes; `course grade
/// --csv` counts stage by stage.
pub const POINTS_PER_LESSON: u32 = 10;

/// Minutes a lesson's stages may take in Classroom before the step fails.
const TIMEOUT_MINUTES: u32 = 10;

/// Minutes more for the first lesson's step, which builds the grading copy
/// (every lesson and its stages) before it grades: on 2 cores, three to
/// four minutes.
const FIRST_BUILD_MINUTES: u32 = 15;

/// The workflow, byte for byte, for `lessons`.
pub fn workflow(lessons: &[Lesson]) -> String {
    let mut text = String::from(
        "# GitHub Classroom autograding: a step per lesson, worth its points when every\n\
         # stage of the lesson passes. Made by `cargo run -- classroom` from the lesson\n\
         # list (src/harness/lesson.rs); change that, not this file.\n\
         name: Autograding Tests\n\
         'on':\n\
         - push\n\
         - repository_dispatch\n\
         permissions:\n\
         \x20 checks: write\n\
         \x20 actions: read\n\
         \x20 contents: read\n\
         jobs:\n\
         \x20 run-autograding-tests:\n\
         \x20   runs-on: ubuntu-latest\n\
         \x20   if: github.actor != 'github-classroom[bot]'\n\
         \x20   steps:\n\
         \x20   - name: Checkout code\n\
         \x20     uses: actions/checkout@v4\n\
         \x20   - name: Build the course tool\n\
         \x20     run: cargo build --quiet --bin course\n",
    );
    for (index, lesson) in lessons.iter().enumerate() {
        let timeout = if index == 0 {
            TIMEOUT_MINUTES + FIRST_BUILD_MINUTES
        } else {
            TIMEOUT_MINUTES
        };
        text.push_str(&format!(
            "    - name: {name}\n\
             \x20     id: {id}\n\
             \x20     uses: classroom-resources/autograding-command-grader@v1\n\
             \x20     with:\n\
             \x20       test-name: {name}\n\
             \x20       setup-command: ''\n\
             \x20       command: cargo run --quiet -- grade {number} --checkout .\n\
             \x20       timeout: {timeout}\n\
             \x20       max-score: {POINTS_PER_LESSON}\n",
            name = lesson.name(),
            id = step_id(lesson),
            number = lesson.number,
        ));
    }
    text.push_str(
        "    - name: Autograding Reporter\n\
         \x20     uses: classroom-resources/autograding-grading-reporter@v1\n\
         \x20     env:\n",
    );
    for lesson in lessons {
        let id = step_id(lesson);
        text.push_str(&format!(
            "        {}_RESULTS: \"${{{{steps.{id}.outputs.result}}}}\"\n",
            id.to_uppercase()
        ));
    }
    let runners: Vec<String> = lessons.iter().map(step_id).collect();
    text.push_str(&format!(
        "      with:\n        runners: {}\n",
        runners.join(",")
    ));
    text
}

/// The step's id, which the reporter finds results by: `lesson-01-echo`.
fn step_id(lesson: &Lesson) -> String {
    format!("lesson-{}", lesson.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::lesson::LESSONS;

    #[test]
    fn the_committed_workflow_is_the_one_the_lessons_make() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(WORKFLOW_FILE);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let made = workflow(LESSONS);
        if committed != made {
            let first = committed
                .lines()
                .zip(made.lines())
                .position(|(was, is)| was != is)
                .unwrap_or_else(|| committed.lines().count().min(made.lines().count()));
            panic!(
                "{WORKFLOW_FILE} is out of date (first difference at line {}): run `cargo run \
                 -- classroom` and commit it",
                first + 1
            );
        }
    }

    #[test]
    fn every_lesson_has_a_step_and_a_reported_result() {
        let text = workflow(LESSONS);
        for lesson in LESSONS {
            assert!(text.contains(&format!(
                "command: cargo run --quiet -- grade {} --checkout .\n",
                lesson.number
            )));
            assert!(text.contains(&format!("steps.lesson-{}.outputs.result", lesson.name())));
        }
        assert!(text.ends_with(&format!(
            "runners: {}\n",
            LESSONS.iter().map(step_id).collect::<Vec<_>>().join(",")
        )));
    }
}
