//! The Kleidia workstation agent: a loopback-only HTTP server through which
//! the Kleidia web page drives the YubiKeys on this computer, but only with a
//! ticket signed by the Kleidia server for each state change.

pub mod card;
pub mod config;
pub mod error;
pub mod replay;
pub mod startup;
pub mod state;
pub mod web;
