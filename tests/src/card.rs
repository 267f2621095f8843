//! Harness for tests that plug software YubiKeys into pcscd through vpcd.
