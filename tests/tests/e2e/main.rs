//! End-to-end tests against real PostgreSQL and OpenBao with the Kleidia
//! processes started from the workspace binaries, through the harness in
//! `tests/src` (`kleidia_tests::TestApp`). One module per feature.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// s5-bench
mod agent_start;
mod api_schema;
mod attestation_attacks;
mod audit_anchor;
mod audit_log;
mod backup_audit;
// s4-fleet
mod bulk_work;
mod certificate_approval;
mod certificates;
mod devices;
mod escrow_history;
mod exports;
mod host_check;
mod https_listener;
mod license_enforcement;
mod license_fallback;
mod license_service;
mod license_status_and_upload;
mod load;
mod newcomer_pages;
// s4-fleet
mod notices;
mod offboarding;
mod oidc_sign_in;
mod one_time_passwords;
mod openbao_auth;
mod openbao_backup;
mod openbao_license_auth;
mod openbao_tls;
mod operations;
// s5-faults: operations whose ticket expired with no result.
mod operation_expiry;
mod outages;
mod parallel_guesses;
mod presence_attacks;
mod revocation;
mod secrets_resume_post;
mod serial_squatting;
mod session_cache;
mod sessions;
mod shared_proxy_throttle;
mod sign_in;
mod sign_in_redirects;
mod users;
mod web_hardening;
mod wiring;
