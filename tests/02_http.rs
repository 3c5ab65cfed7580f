//! Lesson 02, http: the stages, in the order you build them.
//!
//!     cargo test --test 02_http                   your code in lessons/02-http
//!     cargo test --test 02_http serves_files      one stage
//!     COURSE_TARGET=solutions cargo test --test 02_http
//!
//! Each stage starts your server with `server --bind 127.0.0.1:0` (the last on
//! a port the test chose, to check `--bind`), reads the address it prints, and
//! talks HTTP to it: raw bytes over TCP, `curl`, and a headless Chromium.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use course::harness::bind::start_server_at_chosen_address;
use course::harness::browser::{headless_chromium, CHROMIUM_INSTALL};
use course::harness::ctx::{output_block, ProcessId};
use course::harness::local;
use course::harness::process::describe;
use course::{Check, Conn, Ctx, Failure, Programs, Stage};

fn main() {
    let programs = Programs {
        lessons: env!("CARGO_BIN_EXE_02-http"),
        solutions: option_env!("CARGO_BIN_EXE_02-http-solution"),
    };
    course::run_stages("02", programs, &STAGES);
}

const STAGES: [Stage; 10] = [
    Stage {
        slug: "answers",
        title: "`GET /` gets `200 OK`, a Content-Type and a Content-Length that fits; curl agrees",
        slide: "Anatomy of a response",
        check: answers,
        runs_alone: false,
    },
    Stage {
        slug: "serves-files",
        title: "serves any file under --root byte for byte, with the right Content-Type",
        slide: "Content-Type",
        check: serves_files,
        runs_alone: false,
    },
    Stage {
        slug: "says-no-properly",
        title: "404, 400, 405 with Allow, 505, and stays up after each",
        slide: "Status codes",
        check: says_no_properly,
        runs_alone: false,
    },
    Stage {
        slug: "stays-inside-its-root",
        title: "no path, however written, reaches the secret file beside the root",
        slide: "Path traversal",
        check: stays_inside_its_root,
        runs_alone: false,
    },
    Stage {
        slug: "reads-requests-properly",
        title: "requests in pieces, HEAD, and 431 for a head over 8 KiB",
        slide: "A read is not a request",
        check: reads_requests_properly,
        runs_alone: false,
    },
    Stage {
        slug: "keeps-the-connection",
        title: "answers requests in order on one connection; closes when asked",
        slide: "Keep-alive",
        check: keeps_the_connection,
        runs_alone: false,
    },
    Stage {
        slug: "a-browser-loads-it",
        title: "headless Chromium loads the shipped site, its stylesheet and its image",
        slide: "Real clients",
        check: a_browser_loads_it,
        runs_alone: false,
    },
    Stage {
        slug: "the-client",
        title: "the client prints a response like `curl -i`; a dead address is one line",
        slide: "The client's side",
        check: the_client,
        runs_alone: false,
    },
    Stage {
        slug: "regular-files-only",
        title: "a named pipe in the root gets 404 at once, 300 times, and the server serves on",
        slide: "Regular files only",
        check: regular_files_only,
        runs_alone: false,
    },
    Stage {
        slug: "binds-where-asked",
        title: "listens on the address given with --bind, and serves there",
        slide: "Try it by hand",
        check: binds_where_asked,
        runs_alone: false,
    },
];

/// The site shipped with the lesson, the server's default root.
const SITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lessons/02-http/site");

const REQUEST_FILE: &str = "lessons/02-http/request.rs";
const RESPONSE_FILE: &str = "lessons/02-http/response.rs";
const FILES_FILE: &str = "lessons/02-http/files.rs";
const SERVER_FILE: &str = "lessons/02-http/server.rs";
const CLIENT_FILE: &str = "lessons/02-http/client.rs";

// ---------------------------------------------------------------------------
// Stage 1

fn answers(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&["--root", SITE])?;
    let index = read_site_file("index.html")?;
    let mut conn = ctx.connect(server.addr)?;
    conn.send(&get("/", server.addr))?;
    let first_steps = |failure: Failure| {
        failure
            .more_hint(format!(
                "Start at TODO 1 in {RESPONSE_FILE}: write the status line, the headers and \
                 the blank line."
            ))
            .stderr_note("The server's stderr, above, says what it ran into.")
            .slide("Anatomy of a response")
    };
    let answered = read_response(&mut conn, Method::Get).and_then(|response| {
        expect_status_line(&conn, &response, b"HTTP/1.1 200 OK\r\n")?;
        Ok(response)
    });
    let response = match answered {
        Ok(response) => response,
        Err(failure) => {
            // The starter says on stderr which TODO stopped it; let the line
            // arrive whole before the stage ends the server.
            wait_for_a_line_on_stderr(ctx, server.id);
            return Err(first_steps(failure));
        }
    };
    expect_type(&conn, &response, "/", &["text/html"])?;
    if response.body != index {
        return Err(conn
            .fail("the body of `GET /` is not the root's index.html")
            .bytes(&index, &response.body)
            .hint("`/` names the root folder; a folder is answered with its index.html."));
    }
    expect_date(&conn, &response)?;

    ctx.step("curl fetches the page too");
    let url = format!("http://{}/", server.addr);
    let curl = ctx.run_tool(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--include",
            "--http1.1",
            "--max-time",
            "5",
            &url,
        ],
        b"",
        CURL_INSTALL,
    )?;
    let expected_start = "HTTP/1.1 200 OK\r\n";
    if !curl.status.success() || !curl.stdout.starts_with(expected_start) {
        return Err(Failure::new(format!(
            "`curl -i {url}` did not get the page ({})",
            describe(&curl.status)
        ))
        .bytes(expected_start.as_bytes(), curl.stdout.as_bytes())
        .detail(output_block("curl's stderr", &curl.stderr))
        .hint(
            "curl reads the status line, then the headers up to the blank line, then exactly \
             Content-Length bytes. Its error above says which part it could not read.",
        ));
    }
    let body = String::from_utf8_lossy(&index);
    if !curl.stdout.ends_with(body.as_ref()) {
        return Err(Failure::new("curl's output does not end with the page")
            .detail(output_block("curl's output", &curl.stdout)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Stage 2

/// A file the stage writes under the root: its extension, the types a
/// server may answer for it, and whether its bytes are binary.
struct Kind {
    extension: &'static str,
    types: &'static [&'static str],
    binary: bool,
}

const KINDS: [Kind; 11] = [
    text("html", &["text/html"]),
    text("css", &["text/css"]),
    text("js", &["text/javascript", "application/javascript"]),
    text("json", &["application/json"]),
    text("txt", &["text/plain"]),
    text("svg", &["image/svg+xml"]),
    binary("png", &["image/png"]),
    binary("jpg", &["image/jpeg"]),
    binary("PNG", &["image/png"]),
    binary("bin", &["application/octet-stream"]),
    binary("", &["application/octet-stream"]),
];

const fn text(extension: &'static str, types: &'static [&'static str]) -> Kind {
    Kind {
        extension,
        types,
        binary: false,
    }
}

const fn binary(extension: &'static str, types: &'static [&'static str]) -> Kind {
    Kind {
        extension,
        types,
        binary: true,
    }
}

fn serves_files(ctx: &mut Ctx) -> Check<()> {
    let root = ctx.temp_dir()?;
    let mut files: Vec<(String, Vec<u8>, &[&str])> = Vec::new();
    for (number, kind) in KINDS.iter().enumerate() {
        let stem = ctx.rng().word(6);
        let name = match kind.extension {
            "" => stem,
            extension => format!("{stem}.{extension}"),
        };
        // One large file: it takes many writes to send.
        let size = if kind.extension == "png" {
            300 * 1024
        } else {
            ctx.rng().between(1, 5000)
        };
        let content = if kind.binary {
            ctx.rng().bytes(size)
        } else {
            let words = size / 6 + 1;
            ctx.rng().sentence(words).into_bytes()
        };
        let folder = if number % 3 == 0 { "docs/" } else { "" };
        files.push((format!("{folder}{name}"), content, kind.types));
    }
    let home = random_page(ctx, "home");
    let docs_home = random_page(ctx, "docs");
    files.push(("index.html".into(), home.clone(), &["text/html"]));
    files.push(("docs/index.html".into(), docs_home.clone(), &["text/html"]));
    for (name, content, _) in &files {
        write_file(&root.join(name), content)?;
    }
    let root_arg = root.to_string_lossy().into_owned();
    let server = ctx.start_server(&["--root", &root_arg])?;
    ctx.step(format!(
        "the test wrote {} files under --root, text and binary",
        files.len()
    ));

    let target_hint = format!(
        "Is the target read from the request line? TODO 2 in {REQUEST_FILE}: until it is \
         done, a stand-in takes every request for `GET /`."
    );
    for (name, content, types) in &files {
        let target = format!("/{name}");
        let (conn, response) = fetch(ctx, server.addr, &get(&target, server.addr), Method::Get)?;
        expect_status_line(&conn, &response, b"HTTP/1.1 200 OK\r\n").map_err(|failure| {
            failure
                .more_hint(target_hint.clone())
                .slide("Anatomy of a request")
        })?;
        if response.body != *content {
            return Err(conn
                .fail(format!(
                    "the body of `GET {target}` is not the file's bytes"
                ))
                .bytes(content, &response.body)
                .hint(target_hint.clone())
                .more_hint(
                    "Send the file's bytes as they are: a file read into a String, or sent \
                     in one `write` rather than `write_all`, changes or loses bytes.",
                )
                .slide("Anatomy of a request"));
        }
        expect_type(&conn, &response, &target, types)?;
    }
    for (folder, page) in [("/", &home), ("/docs/", &docs_home)] {
        let (conn, response) = fetch(ctx, server.addr, &get(folder, server.addr), Method::Get)?;
        expect_status_line(&conn, &response, b"HTTP/1.1 200 OK\r\n")?;
        if response.body != *page {
            return Err(conn
                .fail(format!(
                    "`GET {folder}` did not get that folder's index.html"
                ))
                .bytes(page, &response.body)
                .hint("A target that names a folder is answered with the folder's index.html."));
        }
    }
    served_as_it_is_now(ctx, server.addr, &root.join("index.html"), &home)
}

/// A server may keep pages in memory (lesson 02's cache.rs does), but must
/// never answer with one that has changed. The page is made an hour old (a
/// cache keeps only pages that have stopped changing), asked for twice (kept,
/// then answered from memory), then rewritten in place with other bytes of
/// the same length: same name, same size, same inode. Its modification
/// time (set a second later here) and its change time tell.
fn served_as_it_is_now(
    ctx: &mut Ctx,
    addr: std::net::SocketAddr,
    page: &std::path::Path,
    before: &[u8],
) -> Check<()> {
    // One clock reading for both times: a second apart, however long the
    // fetches between them take.
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    set_modified(page, an_hour_ago)?;
    ctx.step("index.html is made an hour old, and asked for twice");
    for _ in 0..2 {
        let (conn, response) = fetch(ctx, addr, &get("/", addr), Method::Get)?;
        expect_status_line(&conn, &response, b"HTTP/1.1 200 OK\r\n")?;
    }
    let after = before.to_ascii_uppercase();
    write_file(&page.to_path_buf(), &after)?;
    set_modified(page, an_hour_ago + Duration::from_secs(1))?;
    ctx.step("index.html is rewritten in place, the same length in capitals, and asked for again");
    let (conn, response) = fetch(ctx, addr, &get("/", addr), Method::Get)?;
    if response.body != after {
        return Err(conn
            .fail("`GET /` answered with index.html as it was before it changed")
            .bytes(&after, &response.body)
            .hint(
                "Pages kept in memory must be checked against the file on every request: \
                 its length, its modification and change times, its inode (given code: \
                 lessons/02-http/cache.rs, fn get).",
            ));
    }
    Ok(())
}

/// Set `path`'s modification time to `time`.
fn set_modified(path: &std::path::Path, time: std::time::SystemTime) -> Check<()> {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(time))
        .map_err(|error| {
            Failure::new(format!(
                "the test could not set the time of {}: {error}",
                path.display()
            ))
        })
}

fn random_page(ctx: &mut Ctx, title: &str) -> Vec<u8> {
    let words = ctx.rng().between(5, 40);
    format!(
        "<!doctype html>\n<title>{title}</title>\n<p>{}</p>\n",
        ctx.rng().sentence(words)
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------
// Stage 3

/// Each kind of "no" is its own mistake, checked on its own (`ctx.soft`):
/// one report lists every kind the server gets wrong, not only the first.
/// Between kinds the server must still be running, or nothing after counts.
fn says_no_properly(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&["--root", SITE])?;
    let host = server.addr;
    ctx.soft(|ctx| answers_404(ctx, host));
    ctx.expect_running(server.id)?;
    ctx.soft(|ctx| serves_the_absolute_form(ctx, host));
    ctx.expect_running(server.id)?;
    ctx.soft(|ctx| answers_400_to_malformed_lines(ctx, host));
    ctx.expect_running(server.id)?;
    ctx.soft(|ctx| answers_505_to_other_versions(ctx, host));
    ctx.expect_running(server.id)?;
    ctx.soft(|ctx| answers_405_with_allow(ctx, host));
    ctx.expect_running(server.id)?;
    ctx.soft(|ctx| heads_that_break_the_rules(ctx, host));
    ctx.expect_running(server.id)?;

    ctx.step("and a good request still works");
    let (conn, response) = fetch(ctx, host, &get("/", host), Method::Get)?;
    expect_status(&conn, &response, 200)
}

fn answers_404(ctx: &mut Ctx, host: SocketAddr) -> Check<()> {
    let missing = format!("/{}.html", ctx.rng().word(10));
    ctx.step(format!("`GET {missing}`, a file that is not there"));
    let (conn, response) = fetch(ctx, host, &get(&missing, host), Method::Get)?;
    expect_status(&conn, &response, 404).map_err(|failure| {
        failure.more_hint(
            "A file that is not there is `404 Not Found`: the server is fine, the request \
             names nothing.",
        )
    })
}

fn serves_the_absolute_form(ctx: &mut Ctx, host: SocketAddr) -> Check<()> {
    ctx.step("`GET http://HOST/style.css`, the absolute form of a target, as sent to a proxy");
    let style = read_site_file("style.css")?;
    let absolute = format!("http://{host}/style.css");
    let (conn, response) = fetch(ctx, host, &get(&absolute, host), Method::Get)?;
    expect_body(&conn, &response, &absolute, &style).map_err(|failure| {
        failure
            .hint(format!(
                "A server must accept a target in absolute form, `http://HOST/PATH`, and \
                 serve PATH (RFC 9112, section 3.2.2): a client sends it to a proxy, and \
                 some send it everywhere. TODO 2 in {REQUEST_FILE}: take the target \
                 through `origin_form`."
            ))
            .slide("Anatomy of a request")
    })
}

fn answers_400_to_malformed_lines(ctx: &mut Ctx, host: SocketAddr) -> Check<()> {
    let malformed = [
        "GET",
        "GET /",
        "GET  / HTTP/1.1",
        "GET / HTTP/1.1 extra",
        "hello",
        "GET index.html HTTP/1.1",
        "GET / HTTP/one",
        "G(E)T / HTTP/1.1",
    ];
    for line in malformed {
        // With its Host line, nothing but the request line is at fault.
        let request = format!("{line}\r\nHost: {host}\r\n\r\n");
        ctx.step(format!("a malformed request line: {line:?}"));
        let (conn, response) = fetch(ctx, host, request.as_bytes(), Method::Get)?;
        expect_status(&conn, &response, 400).map_err(|failure| {
            failure
                .more_hint(format!(
                    "A request line is exactly METHOD, one space, TARGET, one space, \
                     VERSION. Anything else is `400 Bad Request`: TODO 2 in {REQUEST_FILE}."
                ))
                .slide("Anatomy of a request")
        })?;
    }
    Ok(())
}

fn answers_505_to_other_versions(ctx: &mut Ctx, host: SocketAddr) -> Check<()> {
    for version in ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9"] {
        let request = format!("GET / {version}\r\nHost: {host}\r\n\r\n");
        ctx.step(format!("a version this server does not speak: {version}"));
        let (conn, response) = fetch(ctx, host, request.as_bytes(), Method::Get)?;
        expect_status(&conn, &response, 505).map_err(|failure| {
            failure
                .more_hint(format!(
                    "`{version}` is a well-formed version, just not one this server speaks: \
                     `505 HTTP Version Not Supported`. TODO 2 in {REQUEST_FILE}."
                ))
                .slide("Anatomy of a request")
        })?;
    }
    Ok(())
}

fn answers_405_with_allow(ctx: &mut Ctx, host: SocketAddr) -> Check<()> {
    for method in shuffled(ctx, &["POST", "PUT", "DELETE", "PATCH", "BREW"]) {
        let request =
            format!("{method} / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello");
        ctx.step(format!("`{method} /`, a method this server does not serve"));
        let (conn, response) = fetch(ctx, host, request.as_bytes(), Method::Get)?;
        let method_hint = |failure: Failure| {
            failure
                .more_hint(format!(
                    "This server serves GET and HEAD. Any other method gets `405 Method Not \
                     Allowed` and an `Allow: GET, HEAD` header: TODO 4 in {SERVER_FILE}."
                ))
                .slide("Status codes")
        };
        expect_status(&conn, &response, 405).map_err(method_hint)?;
        let Some(allow) = response.header("Allow") else {
            return Err(method_hint(conn.fail(
                "the 405 answer has no Allow header; it must list GET and HEAD",
            )));
        };
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        if !listed.contains(&"GET") || !listed.contains(&"HEAD") {
            return Err(method_hint(conn.fail(format!(
                "the 405 answer's Allow header is {allow:?}; it must list GET and HEAD"
            ))));
        }
    }
    Ok(())
}

/// Heads whose lines all parse, but which break a rule of RFC 9112: each
/// gets 400, then the close, and nothing more.
fn heads_that_break_the_rules(ctx: &mut Ctx, host: SocketAddr) -> Check<()> {
    // A whole request hidden in a body. A server that takes the first of two
    // Content-Length lines (0) reads it as a request of its own, one that a
    // proxy in front, which took the other, passed on as a body unchecked.
    let hidden = format!(
        "GET /{}.txt HTTP/1.1\r\nHost: {host}\r\n\r\n",
        ctx.rng().word(8)
    );
    let length = hidden.len();
    let chunked = format!("0\r\n\r\n{hidden}");
    let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\n");
    let framing: [(&str, String); 5] = [
        (
            "two Content-Length lines that differ",
            format!("{head}Content-Length: 0\r\nContent-Length: {length}\r\n\r\n{hidden}"),
        ),
        (
            "the same two, the other way round",
            format!("{head}Content-Length: {length}\r\nContent-Length: 0\r\n\r\n{hidden}"),
        ),
        (
            "Content-Length beside Transfer-Encoding",
            format!(
                "{head}Transfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{chunked}",
                chunked.len()
            ),
        ),
        (
            "a Content-Length that is not a number",
            format!("{head}Content-Length: five\r\n\r\nhello"),
        ),
        (
            "a Content-Length with a sign (Rust's `parse` takes `+5`)",
            format!("{head}Content-Length: +5\r\n\r\nhello"),
        ),
    ];
    let framing_hint = format!(
        "Where the body ends must be beyond doubt: a proxy in front of the server may read \
         the head the other way, and a request hidden in the body would reach the server \
         unchecked (request smuggling). RFC 9112, section 6.3: answer 400 and close. \
         `check_head` in {REQUEST_FILE} does it: is it still called for every head?"
    );
    let host_and_lines: [(&str, String); 3] = [
        (
            "an HTTP/1.1 request without Host",
            "GET / HTTP/1.1\r\n\r\n".to_string(),
        ),
        ("two Host lines", format!("{head}Host: example.com\r\n\r\n")),
        (
            "a header line without a colon",
            format!("{head}this line has no colon\r\n\r\n"),
        ),
    ];
    let host_and_lines_hint = format!(
        "An HTTP/1.1 request names its site in exactly one `Host` line, and every header \
         line is `Name: value`. RFC 9112 asks for 400 otherwise: `check_head` and \
         `parse_header` in {REQUEST_FILE}."
    );
    refused_then_closed(ctx, host, framing, &framing_hint, "Request smuggling")?;
    refused_then_closed(
        ctx,
        host,
        host_and_lines,
        &host_and_lines_hint,
        "Anatomy of a request",
    )
}

/// Each request gets 400, then the close, and nothing more.
fn refused_then_closed<const N: usize>(
    ctx: &mut Ctx,
    host: SocketAddr,
    cases: [(&str, String); N],
    hint: &str,
    slide: &str,
) -> Check<()> {
    let rule = |failure: Failure| failure.more_hint(hint).slide(slide);
    for (what, request) in cases {
        ctx.step(format!("{what}: 400, then the close"));
        let (mut conn, response) =
            fetch(ctx, host, request.as_bytes(), Method::Get).map_err(rule)?;
        expect_status(&conn, &response, 400).map_err(rule)?;
        // Were the bytes after the head read as a request, its answer
        // would come here.
        conn.expect_end().map_err(rule)?;
    }
    Ok(())
}

/// `items`, in an order the seed picks: every run checks every one.
fn shuffled<T: Clone>(ctx: &mut Ctx, items: &[T]) -> Vec<T> {
    let mut items = items.to_vec();
    for last in (1..items.len()).rev() {
        let other = ctx.rng().below(last + 1);
        items.swap(last, other);
    }
    items
}

// ---------------------------------------------------------------------------
// Stage 4

fn stays_inside_its_root(ctx: &mut Ctx) -> Check<()> {
    let folder = ctx.temp_dir()?;
    let root = folder.join("www");
    let secret_words = ctx.rng().sentence(4);
    let secret = format!("the secret beside the root: {secret_words}\n");
    let secret_path = folder.join("secret.txt");
    write_file(&secret_path, secret.as_bytes())?;
    let page = ctx.rng().sentence(6).into_bytes();
    write_file(&root.join("index.html"), b"<!doctype html><p>inside</p>\n")?;
    write_file(&root.join("sub/page.txt"), &page)?;
    let root_arg = root.to_string_lossy().into_owned();
    let server = ctx.start_server(&["--root", &root_arg])?;
    ctx.step(format!(
        "the test put secret.txt beside the root, in {}",
        folder.display()
    ));

    let absolute = secret_path.to_string_lossy().into_owned();
    let encoded_absolute = absolute.replace('/', "%2F");
    let mut targets: Vec<String> = [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/./../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/....//secret.txt",
        "/....//....//secret.txt",
        "/..\\secret.txt",
        "/sub\\..\\..\\secret.txt",
        "/%5c..%5csecret.txt",
        "/..%5csecret.txt",
        "/%252e%252e/secret.txt",
        "/..%00/secret.txt",
        "/sub/..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    ]
    .iter()
    .map(|target| target.to_string())
    .collect();
    // Absolute paths: `Path::join` with an absolute path replaces the root.
    targets.push(absolute.clone());
    targets.push(format!("/{absolute}"));
    targets.push(format!("/{encoded_absolute}"));
    targets.push(format!("/{}", absolute.replace('/', "%2f")));
    let links = symbolic_links_out(ctx, &root, &folder, &secret_path)?;
    targets.extend(links.iter().cloned());

    let traversal_hint = format!(
        "TODO 5 in {FILES_FILE}. Decode the target first, then build the path one \
         segment at a time, refusing `..`. Finally, in fn inside_root, `canonicalize` the \
         file and check that it still `starts_with` the root: only that sees where a \
         symbolic link leads."
    );
    for target in &targets {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
        let (conn, response) =
            fetch(ctx, server.addr, request.as_bytes(), Method::Get).map_err(|failure| {
                failure.more_hint(format!(
                    "Every request gets an answer, even a hostile one: 404 (or 400) is right \
                     for `GET {target}`."
                ))
            })?;
        if contains(&response.body, secret.as_bytes()) {
            let mut failure = conn
                .fail(format!(
                    "`GET {target}` sent the secret file, which lies outside --root"
                ))
                .detail(format!("the secret file: {absolute}"))
                .hint(traversal_hint.clone())
                .slide("Path traversal");
            if links.contains(target) {
                failure = failure.detail(format!(
                    "`{target}` holds no `..`: the test made a symbolic link inside the root \
                     that leads out of it"
                ));
            }
            return Err(failure);
        }
        if !(400..500).contains(&response.code) {
            return Err(conn
                .fail(format!(
                    "`GET {target}` got {}; a path that leaves the root gets 404 (or 400)",
                    response.code
                ))
                .hint(traversal_hint.clone())
                .slide("Path traversal"));
        }
        ctx.expect_running(server.id)?;
    }
    ctx.step(format!(
        "{} ways out of the root were refused; the files inside still come",
        targets.len()
    ));
    let (conn, response) = fetch(
        ctx,
        server.addr,
        &get("/sub/page.txt", server.addr),
        Method::Get,
    )?;
    expect_status(&conn, &response, 200).map_err(|failure| {
        failure.more_hint("Refuse the ways out, not the files inside: `/sub/page.txt` is one.")
    })?;
    if response.body != page {
        return Err(conn
            .fail("`GET /sub/page.txt` did not send the file")
            .bytes(&page, &response.body));
    }
    Ok(())
}

/// Symbolic links inside `root` that lead to the secret beside it: one to
/// the file, one to the folder that holds it. The targets that name them
/// hold no `..`: only a server that checks where a path really leads
/// (canonicalize, then compare with the root) refuses them.
fn symbolic_links_out(
    ctx: &mut Ctx,
    root: &Path,
    folder: &Path,
    secret: &Path,
) -> Check<Vec<String>> {
    #[cfg(unix)]
    {
        let file_link = format!("{}.txt", ctx.rng().word(6));
        let folder_link = ctx.rng().word(6);
        for (link, leads_to) in [(&file_link, secret), (&folder_link, folder)] {
            std::os::unix::fs::symlink(leads_to, root.join(link)).map_err(|error| {
                Failure::new(format!("the test could not make a symbolic link: {error}"))
            })?;
        }
        ctx.step(format!(
            "the test made symbolic links inside the root: {file_link} to the secret, \
             {folder_link} to the folder that holds it"
        ));
        Ok(vec![
            format!("/{file_link}"),
            format!("/{folder_link}/secret.txt"),
        ])
    }
    #[cfg(not(unix))]
    {
        let _ = (root, folder, secret);
        ctx.step("symbolic links are tried on Unix only: this system skips that check");
        Ok(Vec::new())
    }
}

// ---------------------------------------------------------------------------
// Stage 5

fn reads_requests_properly(ctx: &mut Ctx) -> Check<()> {
    let root = ctx.temp_dir()?;
    let page = random_page(ctx, "pieces");
    write_file(&root.join("index.html"), &page)?;
    let root_arg = root.to_string_lossy().into_owned();
    let server = ctx.start_server(&["--root", &root_arg])?;
    let host = server.addr;
    let pieces_hint = |failure: Failure| {
        failure.more_hint(
            "One read is not one request: a read returns what has arrived, one byte or \
             three requests. Keep reading until the blank line that ends the head.",
        )
    };

    let mut conn = ctx.connect(host)?;
    conn.send_byte_by_byte(&get("/", host))?;
    let response = read_response(&mut conn, Method::Get).map_err(pieces_hint)?;
    expect_status(&conn, &response, 200).map_err(pieces_hint)?;
    conn.close();

    let request = format!(
        "GET /index.html HTTP/1.1\r\nHost: {host}\r\nUser-Agent: stage-5\r\nAccept: */*\r\n\
         X-Words: {}\r\n\r\n",
        ctx.rng().sentence(8)
    )
    .into_bytes();
    // Cut between the \r and the \n of the first line, and at random places.
    let first_cr = request.iter().position(|&b| b == b'\r').unwrap_or(1);
    let mut cuts = vec![first_cr + 1];
    for _ in 0..4 {
        cuts.push(ctx.rng().between(1, request.len()));
    }
    cuts.sort_unstable();
    cuts.dedup();
    ctx.step(format!(
        "a request of {} bytes, sent in pieces cut at bytes {cuts:?}",
        request.len()
    ));
    let mut conn = ctx.connect(host)?;
    let mut start = 0;
    for cut in cuts.into_iter().chain([request.len()]) {
        conn.send(&request[start..cut])?;
        start = cut;
    }
    let response = read_response(&mut conn, Method::Get).map_err(pieces_hint)?;
    expect_status(&conn, &response, 200).map_err(pieces_hint)?;
    conn.close();

    ctx.step("a head of about 6 KiB, under the 8 KiB limit");
    let mut request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n");
    for number in 0..50 {
        request.push_str(&format!("X-Filler-{number}: {}\r\n", ctx.rng().word(100)));
    }
    request.push_str("\r\n");
    let (conn, response) = fetch(ctx, host, request.as_bytes(), Method::Get)?;
    expect_status(&conn, &response, 200).map_err(|failure| {
        failure.more_hint(
            "A head under 8 KiB is a normal request: browsers send a few KiB of cookies.",
        )
    })?;

    head_gets_the_head_alone(ctx, host)?;
    a_head_too_large_gets_431(ctx, host)?;
    ctx.expect_running(server.id)
}

/// HEAD gets the head GET gets, and no body.
fn head_gets_the_head_alone(ctx: &mut Ctx, host: SocketAddr) -> Check<()> {
    ctx.step("`HEAD /`: the same head as `GET /`, and no body");
    let (_, full) = fetch(ctx, host, &get("/", host), Method::Get)?;
    let mut conn = ctx.connect(host)?;
    conn.send(format!("HEAD / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let head = read_response(&mut conn, Method::Head)?;
    expect_status(&conn, &head, 200)?;
    for name in ["Content-Type", "Content-Length"] {
        if head.header(name) != full.header(name) {
            return Err(conn
                .fail(format!(
                    "HEAD's {name} is {:?}, GET's is {:?}; they must be the same",
                    head.header(name),
                    full.header(name)
                ))
                .hint(
                    "HEAD asks for the head GET would get, Content-Length included: the size \
                     of the body it does not send.",
                ));
        }
    }
    // If a body followed, the next bytes would be that body rather than the
    // answer to this second request. A server that closed instead is fine.
    let _ = conn.send(&get("/", host));
    if let Ok(line) = conn.read_line(4096) {
        if !line.starts_with(b"HTTP/1.1 ") {
            return Err(conn
                .fail("bytes came after HEAD's head: HEAD must not send a body")
                .bytes(b"HTTP/1.1 200 OK\r\n", &line)
                .hint(
                    "After HEAD's head, the next bytes on the connection belong to the next \
                     response. Send the head only.",
                ));
        }
    }
    Ok(())
}

/// A head that passes 8 KiB gets 431 at once, though the blank line that
/// would end it never comes: the server counts as it reads, rather than
/// buffering until the end.
fn a_head_too_large_gets_431(ctx: &mut Ctx, host: SocketAddr) -> Check<()> {
    let mut head = format!("GET / HTTP/1.1\r\nHost: {host}\r\n");
    let mut number = 0;
    while head.len() < 12 * 1024 {
        head.push_str(&format!("X-Filler-{number}: {}\r\n", ctx.rng().word(100)));
        number += 1;
    }
    ctx.step(format!(
        "a head of {} bytes, over the 8 KiB limit, with no blank line to end it",
        head.len()
    ));
    let mut conn = ctx.connect(host)?;
    conn.send(head.as_bytes())?;
    let answered = read_response(&mut conn, Method::Get).and_then(|response| {
        expect_status(&conn, &response, 431)?;
        conn.expect_end()
    });
    let sent = head.len();
    answered.map_err(|mut failure| {
        failure.what = format!(
            "after a head of {sent} bytes that never ends: {}",
            failure.what
        );
        failure.slide("Every buffer has a limit").more_hint(format!(
            "Where: TODO 6 in {REQUEST_FILE}. Count the bytes of the head as you read it; \
             past 8 KiB, answer `431 Request Header Fields Too Large` and close. A server \
             that waits for the blank line buffers whatever the client sends."
        ))
    })
}

// ---------------------------------------------------------------------------
// Stage 6

fn keeps_the_connection(ctx: &mut Ctx) -> Check<()> {
    let root = ctx.temp_dir()?;
    let mut files = Vec::new();
    for _ in 0..3 {
        let name = format!("/{}.txt", ctx.rng().word(7));
        let words = ctx.rng().between(3, 300);
        let content = ctx.rng().sentence(words).into_bytes();
        write_file(&root.join(&name[1..]), &content)?;
        files.push((name, content));
    }
    let root_arg = root.to_string_lossy().into_owned();
    let server = ctx.start_server(&["--root", &root_arg])?;
    let host = server.addr;
    let keep_hint = |failure: Failure| {
        failure.more_hint(
            "HTTP/1.1 keeps the connection open after a response: the client may send the \
             next request on it. Read requests in a loop until the client closes.",
        )
    };

    ctx.step("two requests, one after the other, on one connection");
    let mut conn = ctx.connect(host)?;
    for (name, content) in &files[..2] {
        conn.send(&get(name, host)).map_err(keep_hint)?;
        let response = read_response(&mut conn, Method::Get).map_err(keep_hint)?;
        expect_body(&conn, &response, name, content)?;
    }
    conn.close();

    ctx.step("three requests in one write (pipelined): GET, HEAD, GET");
    let mut conn = ctx.connect(host)?;
    let mut pipelined = get(&files[0].0, host);
    pipelined.extend(format!("HEAD {} HTTP/1.1\r\nHost: {host}\r\n\r\n", files[1].0).bytes());
    pipelined.extend(get(&files[2].0, host));
    conn.send(&pipelined)?;
    let pipeline_hint = |failure: Failure| {
        keep_hint(failure).more_hint(
            "Bytes read past the end of one request belong to the next one: keep them (a \
             BufReader does) rather than throwing them away.",
        )
    };
    let first = read_response(&mut conn, Method::Get).map_err(pipeline_hint)?;
    expect_body(&conn, &first, &files[0].0, &files[0].1)?;
    let second = read_response(&mut conn, Method::Head).map_err(pipeline_hint)?;
    expect_status(&conn, &second, 200)?;
    let third = read_response(&mut conn, Method::Get).map_err(pipeline_hint)?;
    expect_body(&conn, &third, &files[2].0, &files[2].1)?;
    conn.close();

    let close_forms = [
        "close",
        "Close",
        "keep-alive, close",
        "CLOSE",
        "Keep-Alive,Close",
    ];
    for form in shuffled(ctx, &close_forms) {
        ctx.step(format!("`Connection: {form}`: the answer, then the close"));
        let mut conn = ctx.connect(host)?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: {form}\r\n\r\n",
            files[0].0
        );
        conn.send(request.as_bytes())?;
        let response = read_response(&mut conn, Method::Get)?;
        expect_body(&conn, &response, &files[0].0, &files[0].1)?;
        conn.expect_end().map_err(|failure| {
            failure
                .more_hint(format!(
                    "`Connection: {form}` asks for this response to be the last: close \
                     after it. The header holds a list of options, in any case: TODO 7 in \
                     {SERVER_FILE}."
                ))
                .slide("Keep-alive")
        })?;
    }

    ctx.step("an HTTP/1.0 request: the answer, then the close");
    let mut conn = ctx.connect(host)?;
    conn.send(format!("GET {} HTTP/1.0\r\n\r\n", files[1].0).as_bytes())?;
    let response = read_response(&mut conn, Method::Get)?;
    expect_body(&conn, &response, &files[1].0, &files[1].1)?;
    conn.expect_end().map_err(|failure| {
        failure.more_hint("HTTP/1.0 closes after every response unless both sides agree otherwise.")
    })?;
    ctx.expect_running(server.id)
}

// ---------------------------------------------------------------------------
// Stage 7

/// The files the shipped page needs, and the type each must come with.
const PAGE_PARTS: [(&str, &str); 3] = [
    ("/", "text/html"),
    ("/style.css", "text/css"),
    ("/plug.png", "image/png"),
];

fn a_browser_loads_it(ctx: &mut Ctx) -> Check<()> {
    // Every check here is the browser's: without it, the stage is skipped.
    ctx.require_tool("chromium", CHROMIUM_INSTALL)?;
    // No --root: the server's default must find the shipped site from any
    // working directory.
    let server = ctx.start_server(&[])?;
    let relay = Relay::start(server.addr)?;
    ctx.step(format!(
        "the test relays {} to the server, noting every request and answer",
        relay.addr
    ));
    let profile = ctx.temp_dir()?;
    let url = format!("http://{}/", relay.addr);
    let browser_deadline = ctx.patience().exit * 6;
    let mut words = headless_chromium(&profile);
    words.extend(["--dump-dom".to_string(), url]);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let browser = ctx.start_tool("chromium", &words, CHROMIUM_INSTALL)?;
    let finished = ctx
        .process(browser)
        .wait_exit(Instant::now() + browser_deadline);
    let exchanges = relay.finish();
    let log = exchange_log(&exchanges);
    let Some(status) = finished else {
        return Err(Failure::new(format!(
            "Chromium did not finish loading the page within {}s",
            browser_deadline.as_secs()
        ))
        .detail(log)
        .hint(
            "A browser waits for every answer before the page is loaded. Is one request \
             without an answer, or an answer shorter than its Content-Length?",
        ));
    };
    let page = ctx.process(browser).stdout().text();
    if !status.success() || !page.contains("Served by hand") {
        return Err(Failure::new(format!(
            "Chromium did not show the page ({})",
            describe(&status)
        ))
        .detail(log)
        .detail(output_block("the page as Chromium saw it", &page)));
    }
    for (path, media_type) in PAGE_PARTS {
        let fetched = exchanges
            .iter()
            .find(|exchange| exchange.request.starts_with(&format!("GET {path} ")));
        let Some(exchange) = fetched else {
            return Err(Failure::new(format!("Chromium never asked for {path}"))
                .detail(log)
                .hint(
                    "Did the page itself arrive whole? The browser asks for the stylesheet \
                       and the image it names.",
                ));
        };
        let status = exchange.status.as_deref().unwrap_or("(no answer)");
        let found = exchange.content_type.as_deref().unwrap_or("(none)");
        if !status.starts_with("HTTP/1.1 200 ") {
            return Err(Failure::new(format!(
                "`GET {path}` from Chromium got {status}; it should get 200"
            ))
            .detail(log));
        }
        if media_type_of(found) != media_type {
            return Err(Failure::new(format!(
                "`GET {path}` came with Content-Type {found}; a browser needs {media_type}"
            ))
            .detail(log)
            .hint(format!(
                "A browser ignores a stylesheet that does not come as text/css. TODO 3 in \
                 {FILES_FILE}: the type follows the file's extension."
            ))
            .slide("Content-Type"));
        }
    }
    if let Some(failed) = exchanges.iter().find(|exchange| {
        !exchange
            .status
            .as_deref()
            .is_some_and(|status| status.starts_with("HTTP/1.1 2"))
    }) {
        return Err(
            Failure::new(format!("Chromium's request `{}` failed", failed.request)).detail(log),
        );
    }
    ctx.step(format!(
        "Chromium made {} requests, each answered with 200",
        exchanges.len()
    ));
    Ok(())
}

fn exchange_log(exchanges: &[Exchange]) -> String {
    let lines: Vec<String> = exchanges
        .iter()
        .map(|exchange| {
            format!(
                "{}  →  {}{}",
                exchange.request,
                exchange.status.as_deref().unwrap_or("(no answer)"),
                exchange
                    .content_type
                    .as_deref()
                    .map(|found| format!(", {found}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    output_block("what Chromium asked, and what came back", &lines.join("\n"))
}

// ---------------------------------------------------------------------------
// Stage 8

fn the_client(ctx: &mut Ctx) -> Check<()> {
    let body = format!("{}\n", ctx.rng().sentence(12));
    let marker = ctx.rng().word(8);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         X-Marker: {marker}\r\n\r\n{body}",
        body.len()
    );
    // The head and half the body first; the rest once the client has shown
    // what came. A client that reads once and stops misses the rest on every
    // run, not only when the response happens to arrive in two parts.
    let held_from = response.len() - body.len() / 2;
    let peer = HttpPeer::start(
        response.clone().into_bytes(),
        held_from,
        ctx.patience().exit,
    )?;
    let path = format!("/{}/{}.txt", ctx.rng().word(5), ctx.rng().word(6));
    let address = peer.addr;
    let url = format!("http://{address}{path}");
    ctx.step(format!(
        "the test runs an HTTP server at {}; it sends the head and half the body, and the \
         rest once the client has printed the status line",
        peer.addr
    ));
    let client = ctx.start(&["client", &url])?;
    // A client that prints only at the end gets the rest a moment after the
    // first part went out: a slow start does not let it read both at once.
    peer.wait_for_first_part();
    let a_moment = Instant::now() + ctx.patience().reply / 2;
    ctx.process(client)
        .wait_for_stdout(b"HTTP/1.1 200 OK\r\n", a_moment);
    peer.release();
    let finished = ctx.finish(client, b"");
    let request = peer.finish();
    let finished = finished.map_err(|failure| {
        failure.more_hint(
            "The client knows where the body ends from Content-Length: read that many bytes \
             and stop, without waiting for the server to close.",
        )
    })?;
    let request = request.unwrap_or_default();
    let expected_line = format!("GET {path} HTTP/1.1\r\n");
    let request_hint = format!(
        "Where: TODO 8 in {CLIENT_FILE}. The request is `GET {path} HTTP/1.1`, a `Host` \
         header with the host and port of the URL, and a blank line."
    );
    if !request.starts_with(expected_line.as_bytes()) {
        return Err(
            Failure::new("the test's server did not receive the request it expected")
                .bytes(expected_line.as_bytes(), &request)
                .detail(output_block("the client's stderr", &finished.stderr))
                .hint(request_hint)
                .slide("The client's side"),
        );
    }
    let host_line = format!("\r\nhost: {address}\r\n");
    if !contains(&request.to_ascii_lowercase(), host_line.as_bytes()) {
        return Err(Failure::new(format!(
            "the request has no `Host: {address}` header; HTTP/1.1 requires it"
        ))
        .detail(format!("the request: {}", escape(&request)))
        .hint(request_hint)
        .slide("The client's side"));
    }
    if finished.stdout.as_bytes() != response.as_bytes() || !finished.status.success() {
        return Err(Failure::new(
            "the client should print the response as it came (status line, headers, blank \
             line, body) and exit with status 0",
        )
        .bytes(response.as_bytes(), finished.stdout.as_bytes())
        .detail(output_block("the client's stderr", &finished.stderr))
        .hint(
            "One read is not one response: the test's server sent the body in two parts. \
             Read the head to its blank line, then exactly Content-Length bytes of body, \
             however many reads that takes.",
        ));
    }

    ctx.step("now a URL where nothing listens");
    // Held until the stage ends: no other stage's server can take it.
    let refusing = local::refusing_address()?;
    let nowhere = refusing.addr.to_string();
    one_clear_line(ctx, &format!("http://{nowhere}/"), &nowhere)?;
    ctx.step("and a URL the client cannot use");
    one_clear_line(ctx, &format!("ftp://{nowhere}/file"), "ftp://")
}

/// The client, given `url`, exits non-zero with one line on stderr that
/// holds `named`.
fn one_clear_line(ctx: &mut Ctx, url: &str, named: &str) -> Check<()> {
    let finished = ctx.run(&["client", url], b"")?;
    ctx.expect_one_line_error(&finished, named, &format!("given {url}"))
        .map_err(|failure| failure.more_hint("Where: lessons/02-http/client.rs, fn run."))
}

// ---------------------------------------------------------------------------
// HTTP, as the stages read it

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    /// The answer to HEAD has a head and no body.
    Head,
}

/// A response, as it came off the wire.
struct Response {
    status_line: Vec<u8>,
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// `GET target HTTP/1.1` with a Host header.
fn get(target: &str, host: SocketAddr) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// Connect, send `request`, read one response.
fn fetch(
    ctx: &mut Ctx,
    addr: SocketAddr,
    request: &[u8],
    method: Method,
) -> Check<(Conn, Response)> {
    let mut conn = ctx.connect(addr)?;
    conn.send(request)?;
    let response = read_response(&mut conn, method)?;
    Ok((conn, response))
}

/// Read one response: the status line, the headers to the blank line, and
/// exactly Content-Length bytes of body.
fn read_response(conn: &mut Conn, method: Method) -> Check<Response> {
    let status_line = conn.read_line(8192).map_err(|mut failure| {
        failure.what = format!("no response came back: {}", failure.what);
        failure.or_hint(
            "Every request gets a response, and a response starts with a status line such as \
             `HTTP/1.1 200 OK\\r\\n`.",
        )
    })?;
    let code = parse_status_line(&status_line).ok_or_else(|| {
        conn.fail("the response does not start with a status line")
            .bytes(b"HTTP/1.1 200 OK\r\n", &status_line)
            .hint(
                "A status line is the version, a space, three digits, a space, the reason, \
                 and \\r\\n: `HTTP/1.1 404 Not Found\\r\\n`.",
            )
            .slide("Anatomy of a response")
    })?;
    let mut headers = Vec::new();
    loop {
        let line = conn.read_line(8192)?;
        if line == b"\r\n" {
            break;
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let parsed = text
            .strip_suffix("\r\n")
            .and_then(|text| text.split_once(':'));
        let Some((name, value)) = parsed else {
            return Err(conn
                .fail("a header line is not `Name: value\\r\\n`")
                .detail(format!("the line: {}", escape(&line)))
                .hint(
                    "Each header line is a name, a colon, a value and \\r\\n; a line holding \
                     only \\r\\n ends the head.",
                )
                .slide("Anatomy of a response"));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
        if headers.len() > 100 {
            return Err(conn.fail("more than 100 header lines, and no blank line"));
        }
    }
    let mut response = Response {
        status_line,
        code,
        headers,
        body: Vec::new(),
    };
    let length = response.header("Content-Length").map(str::parse::<usize>);
    let length = match length {
        Some(Ok(length)) => length,
        Some(Err(_)) => {
            return Err(conn
                .fail("the Content-Length header is not a number")
                .slide("Content-Length"))
        }
        None => {
            return Err(conn
                .fail("the response has no Content-Length header")
                .hint(
                    "Without Content-Length, a client cannot know where the body ends, short \
                     of waiting for the connection to close.",
                )
                .slide("Content-Length"))
        }
    };
    if method == Method::Get {
        response.body = conn.read_exact(length).map_err(|failure| {
            failure
                .hint(
                    "Content-Length promises a number of body bytes: send exactly that many, \
                     the length of the file.",
                )
                .slide("Content-Length")
        })?;
    }
    Ok(response)
}

/// `HTTP/1.1 200 OK\r\n` → 200.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(line).ok()?.strip_suffix("\r\n")?;
    let rest = text.strip_prefix("HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.as_bytes().get(1) != Some(&b' ') || rest.as_bytes().get(5) != Some(&b' ') {
        return None;
    }
    code.parse().ok().filter(|code| (100..600).contains(code))
}

fn expect_status_line(conn: &Conn, response: &Response, expected: &[u8]) -> Check<()> {
    if response.status_line == expected {
        return Ok(());
    }
    Err(conn
        .fail("the status line is not the one expected")
        .bytes(expected, &response.status_line))
}

fn expect_status(conn: &Conn, response: &Response, code: u16) -> Check<()> {
    if response.code == code && response.status_line.starts_with(b"HTTP/1.1 ") {
        return Ok(());
    }
    Err(conn
        .fail(format!("expected status {code}, got {}", response.code))
        .bytes(
            format!("HTTP/1.1 {code} ").as_bytes(),
            &response.status_line,
        ))
}

/// The response carries a `Date` header in the one format a server may
/// send (RFC 9110, section 5.6.7, IMF-fixdate: `Sun, 06 Nov 1994 08:49:37
/// GMT`), telling the time of this machine's clock, within a minute.
fn expect_date(conn: &Conn, response: &Response) -> Check<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let date_hint = format!(
        "A server with a clock must send `Date` (RFC 9110, section 6.6.1), in GMT and in \
         exactly this form: `Sun, 06 Nov 1994 08:49:37 GMT` (the weekday, a comma, the day \
         in two digits, the month's three letters, the year, the time, GMT). TODO 1 in \
         {RESPONSE_FILE}: `http_date(SystemTime::now())` makes it."
    );
    let Some(date) = response.header("Date") else {
        return Err(conn
            .fail("the response has no Date header")
            .hint(date_hint)
            .slide("Anatomy of a response"));
    };
    match parse_imf_fixdate(date) {
        Some(seconds) if seconds.abs_diff(now) <= 60 => Ok(()),
        Some(seconds) => Err(conn
            .fail(format!(
                "the Date header says {date:?}, {} s away from this machine's clock",
                seconds.abs_diff(now)
            ))
            .hint(date_hint)
            .slide("Anatomy of a response")),
        None => Err(conn
            .fail(format!("the Date header {date:?} is not an IMF-fixdate of a real day (is the weekday right?)"))
            .bytes(b"Sun, 06 Nov 1994 08:49:37 GMT", date.as_bytes())
            .hint(date_hint)
            .slide("Anatomy of a response")),
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → seconds since 1970, or `None` unless
/// every part, the weekday too, is right.
fn parse_imf_fixdate(text: &str) -> Option<u64> {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let bytes = text.as_bytes();
    // ASCII first: then every byte is a character, and slicing cannot panic.
    if !text.is_ascii() || bytes.len() != 29 || &text[3..5] != ", " || !text.ends_with(" GMT") {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|byte| byte.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let day = number(5..7)?;
    let month = MONTHS.iter().position(|&name| name == &text[8..11])? as u64 + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    let separators =
        [7, 11, 16].iter().all(|&at| bytes[at] == b' ') && bytes[19] == b':' && bytes[22] == b':';
    if !separators || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days since 1970 by counting: whole years, then whole months.
    let leap = |year: u64| {
        year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
    };
    let month_days = |month: u64| match month {
        2 if leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if year < 1970 || day > month_days(month) {
        return None;
    }
    let days = (1970..year)
        .map(|y| if leap(y) { 366 } else { 365 })
        .sum::<u64>()
        + (1..month).map(month_days).sum::<u64>()
        + day
        - 1;
    if WEEKDAYS[(days % 7) as usize] != &text[..3] {
        return None;
    }
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// The Content-Type must be one of `types`; parameters such as `charset`
/// may follow.
fn expect_type(conn: &Conn, response: &Response, target: &str, types: &[&str]) -> Check<()> {
    let found = response.header("Content-Type").unwrap_or_default();
    if types.contains(&media_type_of(found).as_str()) {
        return Ok(());
    }
    Err(conn
        .fail(format!(
            "`GET {target}` came with Content-Type {found:?}; expected {}",
            types.join(" or ")
        ))
        .hint(format!(
            "A client goes by the Content-Type: a browser ignores a stylesheet or a script \
             sent under another type. TODO 3 in {FILES_FILE}: the type follows the file's \
             extension, in any case."
        ))
        .slide("Content-Type"))
}

fn expect_body(conn: &Conn, response: &Response, target: &str, content: &[u8]) -> Check<()> {
    expect_status(conn, response, 200)?;
    if response.body == content {
        return Ok(());
    }
    Err(conn
        .fail(format!("the body of `GET {target}` is not the file"))
        .bytes(content, &response.body))
}

/// `text/html; charset=utf-8` → `text/html`.
fn media_type_of(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

// ---------------------------------------------------------------------------
// Stage 9

/// How many requests for the named pipe: more than the server's 256
/// connections, so that one thread kept by each would show.
const PIPE_REQUESTS: usize = 300;

fn regular_files_only(ctx: &mut Ctx) -> Check<()> {
    let root = ctx.temp_dir()?;
    let page = random_page(ctx, "regular");
    write_file(&root.join("index.html"), &page)?;
    let pipe = format!("{}.txt", ctx.rng().word(8));
    make_named_pipe(ctx, &root.join(&pipe))?;
    let root_arg = root.to_string_lossy().into_owned();
    let server = ctx.start_server(&["--root", &root_arg])?;
    let host = server.addr;
    let request = format!("GET /{pipe} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let pipe_hint = |failure: Failure| {
        failure.more_hint(format!(
            "`/{pipe}` is a named pipe (a FIFO), not a file: opening it waits until a \
             program opens it to write, maybe for ever, and the thread waits with it. Only \
             a regular file may be opened and sent; anything else gets 404 (or 403) without \
             being opened: fn open_file in {SERVER_FILE} checks `metadata.is_file()`."
        ))
    };

    ctx.step(format!("`GET /{pipe}`, a named pipe in the root"));
    let started = Instant::now();
    let (conn, response) = fetch(ctx, host, request.as_bytes(), Method::Get).map_err(pipe_hint)?;
    if response.code != 403 && response.code != 404 {
        return Err(pipe_hint(conn.fail(format!(
            "a named pipe was answered {}; expected 404 or 403",
            response.code
        ))));
    }
    ctx.step(format!(
        "answered {} in {} ms",
        response.code,
        started.elapsed().as_millis()
    ));
    drop(conn);

    ctx.step(format!(
        "{PIPE_REQUESTS} more requests for it, one after another"
    ));
    for _ in 0..PIPE_REQUESTS {
        let mut conn = ctx.connect(host)?;
        conn.send(request.as_bytes())?;
        let response = read_response(&mut conn, Method::Get).map_err(pipe_hint)?;
        if response.code != 403 && response.code != 404 {
            return Err(pipe_hint(conn.fail(format!(
                "a named pipe was answered {}; expected 404 or 403",
                response.code
            ))));
        }
    }
    ctx.expect_running(server.id)?;

    ctx.step("and the page is still served");
    let (conn, response) = fetch(ctx, host, &get("/", host), Method::Get)?;
    expect_body(&conn, &response, "/", &page).map_err(pipe_hint)
}

/// Make a named pipe at `path`; false where the system has none, after
/// saying so.
#[cfg(unix)]
fn make_named_pipe(ctx: &mut Ctx, path: &Path) -> Check<()> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Failure::new("the test's temporary folder holds a NUL"))?;
    // SAFETY: `name` is a NUL-terminated string that lives across the call.
    if unsafe { libc::mkfifo(name.as_ptr(), 0o600) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(Failure::new(format!(
            "the test could not make a named pipe at {}: {error}",
            path.display()
        )));
    }
    ctx.step(format!("made a named pipe (mkfifo) at {}", path.display()));
    Ok(())
}

#[cfg(not(unix))]
fn make_named_pipe(_ctx: &mut Ctx, _path: &Path) -> Check<()> {
    // Skipped, never passed: there is nothing here to check it with.
    Err(Failure::missing_tool(
        "named pipes in folders, which this system does not have",
        "run this stage on Linux or macOS",
    ))
}

// ---------------------------------------------------------------------------
// Helpers

const CURL_INSTALL: &str = "sudo apt-get install curl";
/// Wait, a moment at most, until the program has said on stderr, in a whole
/// line, more than that a client connected.
fn wait_for_a_line_on_stderr(ctx: &mut Ctx, id: ProcessId) {
    let deadline = Instant::now() + ctx.patience().reply;
    while Instant::now() < deadline {
        let text = ctx.process(id).stderr().text();
        // The server notes each connection as it comes; the line that
        // explains comes after.
        let explained = text.lines().any(|line| !line.ends_with(" connected"));
        if explained && text.ends_with('\n') {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn read_site_file(name: &str) -> Check<Vec<u8>> {
    std::fs::read(Path::new(SITE).join(name)).map_err(|error| {
        Failure::new(format!(
            "the shipped site has no {name} ({error}); it belongs in lessons/02-http/site"
        ))
    })
}

fn write_file(path: &PathBuf, content: &[u8]) -> Check<()> {
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, content));
    written.map_err(|error| {
        Failure::new(format!(
            "the test could not write {}: {error}",
            path.display()
        ))
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn escape(bytes: &[u8]) -> String {
    course::harness::escape::escape(bytes)
}

// ---------------------------------------------------------------------------
// The test's own HTTP server, for grading the client

/// Serves one connection: reads a request head, answers with `response`, and
/// hands the head it read back to the stage.
struct HttpPeer {
    addr: SocketAddr,
    request: mpsc::Receiver<Vec<u8>>,
    release: mpsc::Sender<()>,
    first_part_sent: mpsc::Receiver<()>,
    patience: Duration,
}

impl HttpPeer {
    /// Answer one request with `response`: its first `held_from` bytes at
    /// once, the rest on [`HttpPeer::release`].
    fn start(response: Vec<u8>, held_from: usize, patience: Duration) -> Check<HttpPeer> {
        let (listener, addr) = local::listener()?;
        let (sender, request) = mpsc::channel();
        let (release, released) = mpsc::channel();
        let (sent, first_part_sent) = mpsc::channel();
        thread::spawn(move || {
            let Some(mut stream) = local::accept_before(&listener, Instant::now() + patience)
            else {
                return;
            };
            let _ = stream.set_read_timeout(Some(patience));
            let head = read_head(&mut stream);
            let (now, later) = response.split_at(held_from.min(response.len()));
            let _ = stream.write_all(now);
            let _ = sent.send(());
            let _ = released.recv_timeout(patience);
            let _ = stream.write_all(later);
            let asked_to_close = contains(&head.to_ascii_lowercase(), b"connection: close");
            let _ = sender.send(head);
            if !asked_to_close {
                // As a server may: keep the connection open, until the
                // client closes or the read times out.
                let _ = stream.read(&mut [0u8; 1]);
            }
        });
        Ok(HttpPeer {
            addr,
            request,
            release,
            first_part_sent,
            patience,
        })
    }

    /// Wait until the first part of the response is sent (or the client
    /// never asked, within the patience).
    fn wait_for_first_part(&self) {
        let _ = self.first_part_sent.recv_timeout(self.patience);
    }

    /// Send the rest of the response.
    fn release(&self) {
        let _ = self.release.send(());
    }

    /// The request head it received, once the client has come and gone.
    fn finish(self) -> Option<Vec<u8>> {
        self.request.recv_timeout(self.patience).ok()
    }
}

/// Bytes up to and including the blank line, at most 64 KiB.
fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

// ---------------------------------------------------------------------------
// The relay between Chromium and the server

/// One request that passed through the relay, and the answer to it.
#[derive(Debug, Clone, Default)]
struct Exchange {
    /// The request line: `GET /style.css HTTP/1.1`.
    request: String,
    /// The status line of its answer, once it came.
    status: Option<String>,
    content_type: Option<String>,
}

type Exchanges = Arc<Mutex<Vec<Exchange>>>;

/// A TCP relay in front of the server: the browser connects to it, it
/// connects to the server, and it copies bytes both ways, noting each
/// request line and the status line that answers it.
struct Relay {
    addr: SocketAddr,
    exchanges: Exchanges,
    stop: Arc<AtomicBool>,
    /// Every socket it opened, to be shut down at the end.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

/// How long a relayed connection may stay silent before the relay drops it.
const RELAY_IDLE: Duration = Duration::from_secs(60);

impl Relay {
    fn start(server: SocketAddr) -> Check<Relay> {
        let (listener, addr) = local::listener()?;
        listener
            .set_nonblocking(true)
            .map_err(|error| Failure::new(format!("the test could not set up a relay: {error}")))?;
        let relay = Relay {
            addr,
            exchanges: Exchanges::default(),
            stop: Arc::default(),
            sockets: Arc::default(),
        };
        let (exchanges, stop, sockets) = (
            relay.exchanges.clone(),
            relay.stop.clone(),
            relay.sockets.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((browser, _)) => {
                        relay_connection(browser, server, &exchanges, &sockets);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(relay)
    }

    /// Stop relaying; what passed through.
    fn finish(&self) -> Vec<Exchange> {
        self.stop.store(true, Ordering::SeqCst);
        for socket in self.sockets.lock().unwrap().iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let exchanges = self.exchanges.lock().unwrap();
        exchanges.clone()
    }
}

impl Drop for Relay {
    /// A stage that fails early still stops its relay.
    fn drop(&mut self) {
        self.finish();
    }
}

fn relay_connection(
    browser: TcpStream,
    server: SocketAddr,
    exchanges: &Exchanges,
    sockets: &Arc<Mutex<Vec<TcpStream>>>,
) {
    let Ok(upstream) = TcpStream::connect(server) else {
        return;
    };
    let (Ok(browser_reader), Ok(upstream_reader)) = (browser.try_clone(), upstream.try_clone())
    else {
        return;
    };
    for socket in [&browser, &upstream] {
        let _ = socket.set_nonblocking(false);
        let _ = socket.set_read_timeout(Some(RELAY_IDLE));
        if let Ok(clone) = socket.try_clone() {
            sockets.lock().unwrap().push(clone);
        }
    }
    // The exchanges of this connection still waiting for their answer.
    let waiting: Arc<Mutex<VecDeque<usize>>> = Arc::default();
    let (requests, answers) = (exchanges.clone(), exchanges.clone());
    let (waiting_up, waiting_down) = (waiting.clone(), waiting);
    thread::spawn(move || {
        copy_noting_heads(browser_reader, upstream, |head| {
            let mut all = requests.lock().unwrap();
            all.push(Exchange {
                request: head.first_line,
                ..Exchange::default()
            });
            waiting_up.lock().unwrap().push_back(all.len() - 1);
        })
    });
    thread::spawn(move || {
        copy_noting_heads(upstream_reader, browser, |head| {
            if let Some(index) = waiting_down.lock().unwrap().pop_front() {
                let mut all = answers.lock().unwrap();
                all[index].status = Some(head.first_line);
                all[index].content_type = head.content_type;
            }
        })
    });
}

/// What the relay notes of a message's head.
struct Head {
    first_line: String,
    content_type: Option<String>,
    content_length: usize,
}

fn parse_head(bytes: &[u8]) -> Head {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let mut head = Head {
        first_line: lines.next().unwrap_or_default().to_string(),
        content_type: None,
        content_length: 0,
    };
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        if name.trim().eq_ignore_ascii_case("Content-Length") {
            head.content_length = value.trim().parse().unwrap_or(0);
        } else if name.trim().eq_ignore_ascii_case("Content-Type") {
            head.content_type = Some(value.trim().to_string());
        }
    }
    head
}

/// Follows one direction of a connection: head, body, head, body...
#[derive(Default)]
struct Follower {
    /// Bytes of a head not yet complete.
    pending: Vec<u8>,
    /// Body bytes still to skip.
    body_left: usize,
    /// Lost track (a head too long to be real): stop following.
    lost: bool,
}

impl Follower {
    fn feed(&mut self, mut bytes: &[u8], note: &mut impl FnMut(Head)) {
        while !self.lost && !bytes.is_empty() {
            if self.body_left > 0 {
                let skipped = self.body_left.min(bytes.len());
                self.body_left -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            self.pending.extend_from_slice(bytes);
            bytes = &[];
            while let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = self.pending.split_off(end + 4);
                let head = parse_head(&self.pending[..end]);
                self.body_left = head.content_length;
                note(head);
                let skipped = self.body_left.min(rest.len());
                self.body_left -= skipped;
                self.pending = rest[skipped..].to_vec();
            }
            self.lost = self.pending.len() > 64 * 1024;
        }
    }
}

/// Copy `from` to `to`, calling `note` for each message head that passes,
/// before its bytes go on.
fn copy_noting_heads(mut from: TcpStream, mut to: TcpStream, mut note: impl FnMut(Head)) {
    let mut follower = Follower::default();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let count = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(count) => count,
        };
        follower.feed(&buffer[..count], &mut note);
        if to.write_all(&buffer[..count]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn binds_where_asked(ctx: &mut Ctx) -> Check<()> {
    let server = start_server_at_chosen_address(ctx, &["--root", SITE])?;
    let (conn, response) = fetch(ctx, server.addr, &get("/", server.addr), Method::Get)?;
    expect_status(&conn, &response, 200)
}
