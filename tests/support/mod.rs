//! Support shared by the test targets: the workspace binaries under test,
//! real server and bot processes and a cuttable TCP relay.

#![allow(dead_code)] // Not every target uses every helper.

pub mod binary;
pub mod bot_process;
pub mod process;
pub mod proxy;
