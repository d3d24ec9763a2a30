//! `/proc`: parsers for per-process files (tested on fixture text) and thin
//! readers that take the procfs root.

pub mod fds;
pub mod parse;
pub mod tree;
