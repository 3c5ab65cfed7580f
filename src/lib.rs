//! The course's own tooling, in three parts:
//!
//! - [`harness`]: the stage harness that grades a lesson over real sockets;
//! - [`net`]: the network kit (a load tool, and the misbehaving networks the
//!   later lessons need);
//! - [`commands`]: the rest of the `course` command (the board, grading, the
//!   slides check).
//!
//! `commands` and `net` use `harness`; `harness` uses neither.

pub mod commands;
pub mod harness;
pub mod net;

pub use harness::conn::Conn;
pub use harness::ctx::Ctx;
pub use harness::failure::{Check, Failure};
pub use harness::runner::run_stages;
pub use harness::setup::Programs;
pub use harness::stage::Stage;
