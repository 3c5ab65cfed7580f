//! The mailbox protocol of lessons 03 and 04, as their stages speak it.

use std::time::Instant;

use crate::harness::conn::Conn;
use crate::harness::ctx::{output_block, Ctx, Finished};
use crate::harness::failure::{Check, Failure};
use crate::harness::process::describe;

/// The longest request or reply line, its `\n` included.
pub const MAX_LINE: usize = 1024;

/// Read `OK <id>\n`, the answer to a SEND, and return the id.
pub fn expect_id(conn: &mut Conn) -> Check<u64> {
    let line = conn.read_line(MAX_LINE)?;
    let id = std::str::from_utf8(&line)
        .ok()
        .and_then(|text| text.strip_prefix("OK "))
        .and_then(|text| text.strip_suffix('\n'))
        .and_then(|id| id.parse().ok());
    id.ok_or_else(|| {
        conn.fail("SEND should be answered `OK <id>`, a number that names the message")
            .bytes(b"OK <id>\n", &line)
    })
}

/// The stage "owns-its-folder" of lessons 03 and 04: a server with `--data`
/// owns its folder, and checks at start that it can write there. A second
/// server on the same folder exits at once with one line; so does a server
/// given a folder it cannot write in, before it says `listening on`.
pub fn owns_its_folder(ctx: &mut Ctx) -> Check<()> {
    let disk_file = format!("lessons/{}/disk.rs", ctx.lesson().name());
    let data = ctx.temp_dir()?.to_string_lossy().into_owned();
    let first = ctx.start_server(&["--data", &data])?;
    let owner = ctx.process(first.id).pid();

    ctx.step("a second server starts on the same --data folder");
    let expected = format!("error: {data} is in use by another server (pid {owner})\n");
    let second = expect_refused_at_start(ctx, &data, "on a folder another server owns")
        .map_err(|failure| failure.more_hint(owner_hint(&disk_file)))?;
    if second.stderr != expected {
        return Err(Failure::new(
            "the second server should say which folder is in use, and the pid of its owner",
        )
        .bytes(expected.as_bytes(), second.stderr.as_bytes())
        .hint(owner_hint(&disk_file)));
    }

    ctx.step("the first server still serves");
    let mut alice = ctx.connect(first.addr)?;
    alice.send(b"USER alice\nSEND bob 2\nhi")?;
    alice.expect(b"OK\n")?;
    expect_id(&mut alice)?;
    drop(alice);

    ctx.step("after a SIGKILL of the owner, a new server takes the folder");
    ctx.kill(first.id);
    let again = ctx.start_server(&["--data", &data]).map_err(|failure| {
        failure.more_hint(
            "The owner was killed, so its claim must have ended with it. A lock that the \
             system holds for a process (flock, `File::try_lock`) ends when the process \
             does, however it ends; a pid file alone outlives a crash.",
        )
    })?;
    ctx.kill(again.id);

    let (folder, why) = unwritable_folder(ctx)?;
    ctx.step(format!("a server starts with --data {folder}: {why}"));
    expect_refused_at_start(ctx, &folder, "on a folder it cannot write in").map_err(|failure| {
        failure.more_hint(format!(
            "At start, before `listening on`, create a file in the folder, write to it \
                 and remove it (fn check_writable in {disk_file}); on an error, print one \
                 line naming the folder and the reason, and exit. A server that finds out \
                 at the first SEND has told everyone it is ready, then refuses every \
                 message. ({why}.)"
        ))
    })?;
    Ok(())
}

/// Start a server on `folder`, which it must refuse: a non-zero exit within
/// the patience, one line on stderr naming the folder, no `listening on`.
fn expect_refused_at_start(ctx: &mut Ctx, folder: &str, what: &str) -> Check<Finished> {
    let id = ctx.start(&["server", "--bind", "127.0.0.1:0", "--data", folder])?;
    let patience = ctx.patience().exit;
    let running = ctx.process(id);
    let Some(status) = running.wait_exit(Instant::now() + patience) else {
        return Err(Failure::new(format!(
            "started {what}, the server was still running after {:.0}s",
            patience.as_secs_f64()
        ))
        .detail(output_block("its stdout", &running.stdout().last_lines(4)))
        .hint(
            "A server that cannot keep its promises with this folder must not start: it \
             should exit at once, with one line on stderr.",
        ));
    };
    let finished = Finished {
        status,
        stdout: running.stdout().text(),
        stderr: running.stderr().text(),
    };
    ctx.step(format!("it exited ({})", describe(&status)));
    if finished.stdout.contains("listening on") {
        return Err(Failure::new(format!(
            "started {what}, the server printed `listening on` before it exited"
        ))
        .detail(output_block("its stdout", &finished.stdout))
        .hint(
            "`listening on` tells everyone the server is ready. Check the folder before \
             that line, and exit with one line on stderr instead.",
        ));
    }
    ctx.expect_one_line_error(&finished, folder, &format!("started {what}"))
        .map_err(|failure| failure.detail(output_block("its stderr", &finished.stderr)))?;
    Ok(finished)
}

fn owner_hint(disk_file: &str) -> String {
    format!(
        "Two servers on one folder both hand out id 1, and each overwrites the other's \
         files: a message acknowledged with `OK` is lost. A server takes an exclusive lock \
         on a file in its folder and writes its pid there (fn claim in {disk_file}); a \
         second server that cannot take the lock says `error: DIR is in use by another \
         server (pid N)` and exits."
    )
}

/// A folder that this test's user cannot write in, and why. Permission bits
/// do not stop root (CI runs as root): there, a folder in which no user may
/// create a file, or a folder under a regular file, which cannot exist.
fn unwritable_folder(ctx: &mut Ctx) -> Check<(String, &'static str)> {
    let folder = ctx.temp_dir()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let read_only = std::fs::Permissions::from_mode(0o500);
        if std::fs::set_permissions(&folder, read_only).is_ok()
            && std::fs::File::create(folder.join("probe")).is_err()
        {
            let why = "a folder with mode 0500, which its owner may read but not write";
            return Ok((folder.to_string_lossy().into_owned(), why));
        }
        // Root wrote there all the same. Give it back its write bit, so
        // that the stage's end can remove it.
        let _ = std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700));
        if cfg!(target_os = "linux") && std::path::Path::new("/proc/self/fd").is_dir() {
            let why = "a folder of the kernel's /proc, where no user may create a file, \
                       not even root, whom permission bits do not stop";
            return Ok(("/proc/self/fd".to_string(), why));
        }
    }
    let file = folder.join("a-file");
    std::fs::write(&file, b"not a folder\n").map_err(|error| {
        Failure::new(format!(
            "the test could not write {}: {error}",
            file.display()
        ))
    })?;
    let why = "a path under a regular file, which no one may make a folder";
    Ok((file.join("messages").to_string_lossy().into_owned(), why))
}

/// Log in as `user` and ask COUNT of a new, empty mailbox server: `OK`,
/// then `OK 0`. Proof that a mailbox server, and a fresh one, answered.
pub fn expect_fresh_mailbox(conn: &mut Conn, user: &str) -> Check<()> {
    conn.send(format!("USER {user}\nCOUNT\n").as_bytes())?;
    conn.expect(b"OK\nOK 0\n")
}
