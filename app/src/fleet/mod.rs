//! The YubiKey fleet: devices and their lifecycle, escrowed secrets,
//! operations authorised by signed tickets, certificates and policies.
//!
//! Services take the pool and what else they need (the escrow, the PKI, the
//! [`context::FleetContext`]) and return their own error types; the web
//! layer turns those into responses. Nothing here knows about HTTP.
//!
//! - `access`: who may see and do what to a device;
//! - `registry`: register, move through the lifecycle, assign an owner;
//! - `offboarding`: what disabling a user does to their devices and certificates;
//! - `claim`: a plain user registers a card to themselves by showing it;
//! - `operations`: authorise, reissue and report agent operations;
//! - `certificates`: sign an attested key's CSR, revoke;
//! - `approvals`: a certificate in another person's name waits for their approval;
//! - `details`: what a device's page shows;
//! - `agent`: the workstation agent's key on a session;
//! - `db`: the SQL, per table.

pub mod access;
pub mod agent;
pub mod approvals;
pub mod attestation;
// s4-fleet: bulk work.
pub mod bulk;
pub mod certificates;
pub mod claim;
pub mod context;
pub mod csr;
pub mod db;
pub mod details;
pub mod escrow;
// s4-fleet: CSV imports.
pub mod import;
// s4-fleet: expiry notices.
pub mod notices;
pub mod offboarding;
pub mod operations;
pub mod pki;
pub mod pki_cache;
pub mod policy;
pub mod presence;
pub mod registry;
pub mod secrets;
pub mod settings;
