//! Starting a server on an address the test chose, to check that `--bind`
//! is obeyed.
//!
//! Every other stage starts a server with `--bind 127.0.0.1:0`, and a server
//! that ignores `--bind` and binds its default port still prints its own,
//! true address there: those stages cannot tell. Here the test picks a free
//! port itself, and the server must print, and serve, exactly that address.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use crate::harness::ctx::{Ctx, Server};
use crate::harness::failure::{Check, Failure};
use crate::harness::local;

/// A free port can be taken by another program between the moment the test
/// releases it and the moment the server binds it: then the test tries
/// another, as many times as this.
const ATTEMPTS: usize = 3;

/// Start `server --bind 127.0.0.1:PORT` and the `extra` words, on a free
/// port the test chose, and check that the server printed that address. The
/// stage then talks to the returned address: the only server there is the
/// one it started.
pub fn start_server_at_chosen_address(ctx: &mut Ctx, extra: &[&str]) -> Check<Server> {
    let mut attempt = 1;
    loop {
        let chosen = local::unused_address()?;
        ctx.step(format!("the test chose the free address {chosen}"));
        let bind = chosen.to_string();
        let mut args = vec!["server", "--bind", &bind];
        args.extend_from_slice(extra);
        match ctx.start_server_with(&args) {
            Ok(server) if server.addr == chosen => return Ok(server),
            Ok(server) => return Err(printed_another_address(ctx, chosen, server.addr)),
            // Someone else took the port in the meantime: not the server's fault.
            Err(_) if attempt < ATTEMPTS && taken(chosen) => attempt += 1,
            Err(failure) => return Err(failure),
        }
    }
}

/// Taken for TCP or for UDP: a UDP server's port can be held by another
/// program's UDP socket, which a TCP bind does not see.
fn taken(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_err() || UdpSocket::bind(addr).is_err()
}

fn printed_another_address(ctx: &Ctx, chosen: SocketAddr, printed: SocketAddr) -> Failure {
    let lesson = ctx.lesson();
    let failure = Failure::new(format!(
        "started with `--bind {chosen}`, the server printed `listening on {printed}`"
    ));
    let failure = if printed.port() == lesson.default_port() {
        failure.hint(format!(
            "{printed} is the lesson's default address: your server binds it whatever \
             `--bind` says. The other stages start it with `--bind 127.0.0.1:0`, and a server \
             that ignores that still prints its true address, so only this stage can tell."
        ))
    } else {
        failure.hint("The server must bind the address given with `--bind`, as given.")
    };
    failure.more_hint(format!(
        "Follow the `bind` argument from lessons/{}/main.rs to the call that binds the \
         listener, and bind that address: an instructor, a lab machine or a second host \
         chooses where the server listens.",
        lesson.name()
    ))
}
