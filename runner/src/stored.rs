//! What a step returns and a workflow takes and returns: values cairn stores as JSON
//! and reads back on replay.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value cairn stores as JSON and reads back on replay: a step's output, a
/// workflow's input and output, an event's data. Any owned type that is `Serialize` and
/// `Deserialize` is one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored by cairn: it must be `Serialize` and `Deserialize`",
    label = "stored as JSON and read back on replay",
    note = "derive both on your type: `#[derive(serde::Serialize, serde::Deserialize)]`",
    note = "a borrowed type such as `&str` cannot be read back: use an owned one such as `String`"
)]
pub trait Stored: Sized {
    /// The JSON text it is stored as.
    fn to_json(&self) -> serde_json::Result<String>;

    /// Reads it back from the JSON text it was stored as.
    fn from_json(text: &str) -> serde_json::Result<Self>;
}

// The nested bounds would each be reported, with every type serde knows listed; the
// message above says what to do instead.
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Stored for T {
    fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }
}

/// What a workflow takes as its input: read from the run's stored JSON on every
/// execution, so it must be `Deserialize` and own its data.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a workflow's input: it is read from stored JSON",
    label = "read from the run's stored input",
    note = "derive `serde::Deserialize` on your type",
    note = "a borrowed type such as `&str` cannot be read back: use an owned one such as `String`"
)]
pub trait Input: Sized {
    /// Reads it from the run's stored input.
    fn from_input(input: &serde_json::Value) -> serde_json::Result<Self>;
}

// As for `Stored`: the message above says what to do; serde's bounds would not.
#[diagnostic::do_not_recommend]
impl<T: DeserializeOwned> Input for T {
    fn from_input(input: &serde_json::Value) -> serde_json::Result<Self> {
        T::deserialize(input)
    }
}
