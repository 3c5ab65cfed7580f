//! The parts of the `course` command that are not network tools: the board,
//! grading, the handout, and the check of slides against code.

pub mod bench;
pub mod board;
pub mod classroom;
pub mod files;
pub mod grade;
pub mod gradebook;
pub mod grading_copy;
pub mod handout;
pub mod named_files;
pub mod slides;
