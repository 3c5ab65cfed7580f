//! Zero copies: on Linux, the kernel can echo a connection by itself.
//!
//! The loop in server.rs copies every byte twice: from the kernel into our
//! buffer, then from our buffer back into the kernel. `splice(2)` moves
//! bytes between a pipe and another descriptor without either copy, so here
//! they go from the socket into a pipe and from the pipe back into the
//! socket, and never enter this program. Only Linux has `splice`; elsewhere
//! [`echo`] answers `None` and server.rs runs its loop.
//!
//! What it buys is measured in slides/01-echo.md, "Zero copies". What it
//! costs is this file: `unsafe` calls to the system that `std::net` does not
//! make for us, and a path that one system alone takes.

use std::io;
use std::net::TcpStream;

/// How many bytes the pipe may hold, and so how many one `splice` may move:
/// 1 MiB, the most Linux grants a program without privileges
/// (`/proc/sys/fs/pipe-max-size`). A new pipe holds 64 KiB: to echo 64 MiB,
/// `strace -c` counted 2055 calls with one, 143 with this. The pages are the
/// socket's own, lent to the pipe rather than copied, and only while bytes
/// are in it.
#[cfg(target_os = "linux")]
const PIPE_BYTES: usize = 1024 * 1024;

/// Send back every byte until the client shuts down its sending side, as
/// server.rs's loop does, but through a pipe. `None`, with nothing read,
/// where this cannot be done: not Linux, no pipe to be had (the process is
/// out of file descriptors), or a kernel that cannot splice this socket.
#[cfg(target_os = "linux")]
pub fn echo(stream: &TcpStream) -> Option<io::Result<()>> {
    let (from_pipe, into_pipe) = io::pipe().ok()?;
    grow(&into_pipe);
    match splice(stream, &into_pipe, PIPE_BYTES) {
        // EINVAL: this kernel (or a sandbox standing in for one) cannot
        // splice from a socket. Nothing has been read, so the loop can
        // still echo every byte.
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => None,
        first_read => Some(
            first_read.and_then(|count| echo_through_pipe(stream, &from_pipe, &into_pipe, count)),
        ),
    }
}

/// The echo, once the first read has put `count` bytes in the pipe.
#[cfg(target_os = "linux")]
fn echo_through_pipe(
    stream: &TcpStream,
    from_pipe: &io::PipeReader,
    into_pipe: &io::PipeWriter,
    mut count: usize,
) -> io::Result<()> {
    // TODO 5 (slides/01-echo.md, "Zero copies: socket, pipe, socket"), once
    // every stage passes: `echo`'s loop in server.rs, with the pipe where
    // the buffer was. Until `count` is 0 (the client is done sending), send
    // the `count` bytes in the pipe to `stream` (`splice(from_pipe, stream,
    // n)` may move fewer than n: go on until every one is sent), then read
    // the next ones into the pipe (`splice(stream, into_pipe, PIPE_BYTES)`).
    let _ = (from_pipe, into_pipe, count);
    Err(io::Error::other(
        "TODO 5 in lessons/01-echo/zero_copy.rs: echo through the pipe \
         (read slides/01-echo.md, \"Zero copies: socket, pipe, socket\")",
    ))
}

/// Elsewhere, the loop in server.rs does the work.
#[cfg(not(target_os = "linux"))]
pub fn echo(_stream: &TcpStream) -> Option<io::Result<()>> {
    None
}

/// Ask for a pipe of [`PIPE_BYTES`]. Refused (a system whose limit was
/// lowered), the pipe keeps its 64 KiB and only makes more calls.
#[cfg(target_os = "linux")]
fn grow(pipe: &io::PipeWriter) {
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETPIPE_SZ reads and writes no memory of this program, and
    // `pipe` is borrowed, so its descriptor is open for the whole call.
    unsafe {
        libc::fcntl(
            pipe.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            PIPE_BYTES as libc::c_int,
        );
    }
}

/// Move at most `most` bytes from `from` to `to` inside the kernel: what
/// has arrived, waiting for something if nothing has, as `read` does. One
/// of the two must be a pipe. A call cut short by a signal is made again,
/// as `write_all` does.
#[cfg(target_os = "linux")]
fn splice(
    from: &impl std::os::fd::AsRawFd,
    to: &impl std::os::fd::AsRawFd,
    most: usize,
) -> io::Result<usize> {
    loop {
        // SAFETY: `splice` reads and writes no memory of this program: the
        // two offsets are null (sockets and pipes have none). Both
        // descriptors are borrowed, so open, for the whole call.
        let moved = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                most,
                0,
            )
        };
        match usize::try_from(moved) {
            Ok(moved) => return Ok(moved),
            Err(_) => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}
