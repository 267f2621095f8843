//! Kleidia server library. `main.rs` only parses arguments and calls
//! [`cli::run`]; tests build the same [`startup::Application`] on port 0.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod licensing;
pub mod metrics;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod vault;
pub mod web;

#[cfg(test)]
mod layering;
