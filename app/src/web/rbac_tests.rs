//! Route × role table test (filled in by the next commit).
