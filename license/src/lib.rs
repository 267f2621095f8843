//! Kleidia license service and vendor tool.
//!
//! - `serve`: the cluster-internal HTTP service ([`startup::Application`]);
//! - `keygen`, `issue`, `inspect`: the vendor's commands ([`vendor`], [`keys`]);
//!
//! The app asks the service through `kleidia-license-client` (license/client/).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod clock;
pub mod config;
pub mod document;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod service;
pub mod startup;
pub mod store;
pub mod vendor;
pub mod web;
