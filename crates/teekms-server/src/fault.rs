//! Fault hooks for the test suite, compiled into debug builds only: a release build has
//! none of them, whatever its environment says. They let a test put a node exactly where
//! a crash or a silent host would (spec/freshness-v1.md's fork, through the binary).

/// `TEEKMS_TEST_EXIT_AFTER_COMMIT=FILE`: once FILE exists, the node exits right after a
/// state change commits, before any member is told: a writer killed between the
/// database's commit and the acknowledgements.
pub fn exit_after_commit() {
    if let Some(file) = std::env::var_os("TEEKMS_TEST_EXIT_AFTER_COMMIT")
        && std::path::Path::new(&file).exists()
    {
        tracing::error!("fault hook: exiting after a commit, before its acknowledgements");
        std::process::exit(137);
    }
}

/// `TEEKMS_TEST_NO_WATCH=1`: the node does not compare its store with its memory every
/// second; it still does at every write, every owner's request and every member's
/// question (a node that has not looked yet, pinned down).
pub fn no_watch() -> bool {
    std::env::var_os("TEEKMS_TEST_NO_WATCH").is_some()
}
