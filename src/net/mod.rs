//! The network kit: tools that put load on a server or make the network
//! misbehave on purpose, reproducibly and without root. Each is also a
//! `course` command a student can run.

pub mod load;
pub mod nat;
