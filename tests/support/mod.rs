//! Support shared by the test targets: the workspace binaries under test
//! and real server processes.

#![allow(dead_code)] // Not every target uses every helper.

pub mod binary;
pub mod process;
