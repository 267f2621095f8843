//! See `domain`.
