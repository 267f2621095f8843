//! The YubiKey fleet: devices and their lifecycle, escrowed secrets,
//! operations authorised by signed tickets, certificates and policies.

pub mod attestation;
pub mod csr;
pub mod db;
pub mod device;
pub mod escrow;
pub mod pki;
pub mod pki_cache;
pub mod policy;
pub mod secrets;
pub mod service;
pub mod settings;
