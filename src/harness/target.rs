//! Which program a stage runs: the student's (`lessons`, the default), the
//! reference (`solutions`), or any command that keeps the contract.
//!
//! `COURSE_TARGET` picks between the first two; `COURSE_CMD` (what
//! `course grade --cmd` sets) names a program of any language instead.

use std::fmt;

/// The two builds of every lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The student's code in `lessons/`.
    Lessons,
    /// The reference code in `solutions/`.
    Solutions,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Lessons => "lessons",
            Target::Solutions => "solutions",
        }
    }

    /// Read `COURSE_TARGET`; unset means `lessons`.
    pub fn from_env() -> Result<Target, String> {
        match std::env::var("COURSE_TARGET") {
            Err(_) => Ok(Target::Lessons),
            Ok(value) => value
                .parse()
                .map_err(|error| format!("COURSE_TARGET: {error}")),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(value: &str) -> Result<Target, String> {
        match value.trim() {
            "" | "lessons" => Ok(Target::Lessons),
            "solutions" => Ok(Target::Solutions),
            other => Err(format!(
                "{other:?} is not a target. Use `lessons` (your code in lessons/, \
                 the default) or `solutions` (the reference code in solutions/)."
            )),
        }
    }
}

/// Split a command line into words: spaces separate, quotes ('…' or "…")
/// keep spaces inside a word. No other shell syntax.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err(format!(
            "the command {line:?} has a quote that is never closed"
        ));
    }
    words.extend(word);
    if words.is_empty() {
        return Err("the command is empty: give a program to run".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_valid_targets_when_given_another() {
        let error = "solution".parse::<Target>().unwrap_err();
        assert!(error.contains("`lessons`") && error.contains("`solutions`"));
        assert_eq!("solutions".parse::<Target>(), Ok(Target::Solutions));
    }

    #[test]
    fn splits_commands_like_a_shell_would_for_plain_words_and_quotes() {
        assert_eq!(
            split_command("python3  'my server.py' --fast").unwrap(),
            ["python3", "my server.py", "--fast"]
        );
        assert_eq!(split_command(r#"a "" b"#).unwrap(), ["a", "", "b"]);
        assert!(split_command("a 'b").is_err());
        assert!(split_command("   ").is_err());
    }
}
