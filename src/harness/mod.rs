//! The stage harness: it grades a lesson over real sockets.
//!
//! A lesson's stages (`tests/NN_name.rs`) are [`stage::Stage`]s run by
//! [`runner`]. Each stage gets a [`ctx::Ctx`] to start the program under test
//! ([`process`]), [`conn`] to talk to it and [`local`] for the test's own
//! sockets, and [`failure`] to say what went wrong. Everything a stage does is
//! written in its [`journal`], and a failure is laid out by [`report`], every
//! byte from the program shown through [`escape`].
//!
//! The harness depends on nothing else in the crate: the network kit and the
//! course commands use it, never the other way round.

pub mod bind;
pub mod browser;
pub mod check;
pub mod checkout;
pub mod conn;
pub mod ctx;
pub mod escape;
pub mod failure;
pub mod game;
pub mod journal;
pub mod lesson;
pub mod local;
pub mod mailbox;
pub mod process;
pub mod progress;
pub mod report;
pub mod resources;
pub mod runner;
pub mod schedule;
pub mod seed;
pub mod setup;
pub mod stage;
pub mod target;
pub mod udp;
