//! The compiler's answers to an author's common mistakes, pinned: each names the type
//! and says what to write; and what an author may write instead (`tests/ui/pass`). `TRYBUILD=overwrite cargo test --test compile_fail` updates
//! the pinned answers after a deliberate change.

#[test]
fn mistakes_get_short_answers_that_say_what_to_write() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
