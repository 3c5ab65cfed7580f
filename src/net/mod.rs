//! The network kit: tools that put load on a server or make the network
//! misbehave on purpose, reproducibly and without root. Each is also a
//! `course` command a student can run.

pub mod game_bench;
pub mod load;
pub mod lossy;
pub mod nat;
pub mod proxy;
pub mod push_bench;
pub mod tap;
pub mod webbench;

/// What the kit's own tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::io;
    use std::net::{Shutdown, SocketAddr, TcpListener};
    use std::thread;

    /// An echo server on a thread (what lesson 01 builds), on a free port:
    /// something for a relay to stand in front of.
    pub fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let _ = io::copy(&mut reader, &mut &stream);
                    let _ = stream.shutdown(Shutdown::Write);
                });
            }
        });
        addr
    }
}
