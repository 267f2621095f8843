//! The workstation agent against a software YubiKey through pcscd: every
//! endpoint's success path, its errors, and the attacks a hostile web page
//! or a stolen ticket could try.

mod credentials;
mod discovery;
mod keys;
mod loopback;
mod presence;
mod ticket_attacks;
mod web_attacks;
