//! The lessons of the course, in order: what the board lists and what the
//! stage runner and `course grade` need to know about each.

/// One lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lesson {
    /// Two digits: `01`.
    pub number: &'static str,
    /// The folder and binary name after the number: `echo`.
    pub slug: &'static str,
    /// What it teaches, in a few words.
    pub title: &'static str,
    /// The port its server binds by default.
    pub port: u16,
    /// The file a student opens first, inside `lessons/NN-slug/`.
    pub first_file: &'static str,
}

impl Lesson {
    /// `01-echo`: the folder, the slide file and the student's binary.
    pub fn name(&self) -> String {
        format!("{}-{}", self.number, self.slug)
    }

    /// `01_echo`: the test target (`cargo test --test 01_echo`).
    pub fn test_target(&self) -> String {
        format!("{}_{}", self.number, self.slug.replace('-', "_"))
    }

    /// `slides/01-echo.md`.
    pub fn slides(&self) -> String {
        format!("slides/{}.md", self.name())
    }

    /// `lessons/01-echo/server.rs`.
    pub fn starter_file(&self) -> String {
        format!("lessons/{}/{}", self.name(), self.first_file)
    }

    /// The port its server binds when `--bind` is not given: `port`, moved
    /// by `COURSE_PORT_BASE` as every lesson's `main.rs` moves it (lesson
    /// NN listens on the base plus NN; the base is 7000 unless set).
    pub fn default_port(&self) -> u16 {
        let number = self.port - DEFAULT_PORT_BASE;
        port_base().saturating_add(number)
    }
}

/// Lesson NN's server listens on this plus NN by default.
pub const DEFAULT_PORT_BASE: u16 = 7000;

/// `COURSE_PORT_BASE`, where students share a machine and each moves every
/// lesson's default port out of the others' way; 7000 when unset or not a
/// port number.
pub fn port_base() -> u16 {
    parse_port_base(std::env::var("COURSE_PORT_BASE").ok().as_deref())
}

fn parse_port_base(value: Option<&str>) -> u16 {
    value
        .and_then(|base| base.trim().parse().ok())
        .unwrap_or(DEFAULT_PORT_BASE)
}

/// Every lesson, in the order of the course.
pub const LESSONS: &[Lesson] = &[
    Lesson {
        number: "01",
        slug: "echo",
        title: "echo: bind, listen, accept, connect",
        port: 7001,
        first_file: "server.rs",
    },
    Lesson {
        number: "02",
        slug: "http",
        title: "http: a protocol someone else wrote, by hand",
        port: 7002,
        first_file: "response.rs",
    },
    Lesson {
        number: "03",
        slug: "messages",
        title: "messages: a protocol of our own, framed",
        port: 7003,
        first_file: "protocol.rs",
    },
    Lesson {
        number: "04",
        slug: "concurrency",
        title: "concurrency: many clients at once",
        port: 7004,
        first_file: "server.rs",
    },
    Lesson {
        number: "05",
        slug: "chat",
        title: "chat: the server speaks first",
        port: 7005,
        first_file: "room.rs",
    },
    Lesson {
        number: "06",
        slug: "web",
        title: "web: the room in a browser, four ways",
        port: 7006,
        first_file: "server.rs",
    },
    Lesson {
        number: "07",
        slug: "push",
        title: "push: the client as server",
        port: 7007,
        first_file: "device.rs",
    },
    Lesson {
        number: "08",
        slug: "agent",
        title: "agent: one connection for every app, kept alive",
        port: 7008,
        first_file: "agent.rs",
    },
    Lesson {
        number: "09",
        slug: "game",
        title: "game: only information travels, over UDP",
        port: 7009,
        first_file: "server.rs",
    },
];

/// The lesson numbered `number` (`1`, `01` and `01-echo` all find lesson 01).
pub fn find(number: &str) -> Option<&'static Lesson> {
    let wanted = number.split('-').next().unwrap_or(number);
    let wanted: u32 = wanted.parse().ok()?;
    LESSONS
        .iter()
        .find(|lesson| lesson.number.parse::<u32>().ok() == Some(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_lesson_however_its_number_is_written() {
        for name in ["1", "01", "01-echo"] {
            assert_eq!(find(name).map(|lesson| lesson.number), Some("01"));
        }
        assert_eq!(find("99"), None);
        assert_eq!(find("echo"), None);
    }

    #[test]
    fn lessons_are_numbered_in_order_with_their_ports() {
        let numbers: Vec<u16> = LESSONS
            .iter()
            .map(|lesson| lesson.number.parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]));
        for (lesson, number) in LESSONS.iter().zip(numbers) {
            assert_eq!(lesson.number, format!("{number:02}"));
            assert_eq!(lesson.port, 7000 + number);
        }
    }

    #[test]
    fn the_port_base_is_7000_unless_set_to_a_port() {
        assert_eq!(parse_port_base(None), 7000);
        assert_eq!(parse_port_base(Some(" 9100 ")), 9100);
        assert_eq!(parse_port_base(Some("lots")), 7000);
        assert_eq!(parse_port_base(Some("70000")), 7000);
    }
}
