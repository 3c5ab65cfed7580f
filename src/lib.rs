//! The course's own tooling: the stage harness that grades a lesson over real
//! sockets, and the parts of the `course` command.
//!
//! A lesson's stages (`tests/NN_name.rs`) are run by [`stage`]. Each stage
//! gets a [`ctx::Ctx`] to start the program under test, [`conn`] to talk to
//! it, and [`failure`] to say what went wrong. Everything a stage does is
//! written in its [`journal`], and a failure is laid out by [`report`].

pub mod board;
pub mod conn;
pub mod ctx;
pub mod escape;
pub mod failure;
pub mod grade;
pub mod journal;
pub mod lesson;
pub mod load;
pub mod local;
pub mod mailbox;
pub mod process;
pub mod report;
pub mod resources;
pub mod seed;
pub mod slides;
pub mod stage;
pub mod target;

pub use conn::Conn;
pub use ctx::Ctx;
pub use failure::{Check, Failure};
pub use stage::{run_stages, Programs, Stage};
