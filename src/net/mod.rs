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
