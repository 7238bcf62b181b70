//! What tests need besides gradient checks ([`crate::gradcheck`]): a skip
//! that shows.

use std::io::Write;

/// Reports a test that cannot run on this machine (the caller then returns,
/// and the harness counts it as passed): writes `SKIPPED: {test}: {reason}`
/// to stderr.
///
/// Written to `std::io::stderr()` itself, not with `eprintln!`: the test
/// harness captures the print macros and shows what they wrote only for a
/// failing test, so an `eprintln!` skip would be a silent pass. A direct
/// write reaches the terminal under a plain `cargo test`.
pub fn skip(test: &str, reason: &str) {
    // A lost line cannot fail the test: the write's error is ignored.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {test}: {reason}");
}
