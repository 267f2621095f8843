//! The software YubiKey through the same code paths as hardware: the
//! `yubikey` crate over pcscd, cross-checked with `ykman` and
//! `yubico-piv-tool`.

mod certificates;
mod credentials;
mod keys;
mod oath;
mod readers;
