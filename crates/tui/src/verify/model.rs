//! What the checker checks against: a sequential model, stepped one operation at a time.
//!
//! [`Model`] is what the search in [`super::checker`] needs of a model. [`KeyModel`] is the
//! one MyRaft uses: the value of one key (or of the single register of a register history),
//! which `get`/`read` observes, `put`/`write` and `delete` set, `append` extends and `cas`
//! sets if it holds what was expected. A key/value map is checked as one such model per key
//! (P-compositionality: a history is linearizable if and only if each key's part is).

use super::{Action, Operation};
use std::hash::Hash;

/// What one operation does to a state, per the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next<S> {
    /// The operation cannot take effect in this state: what it returned contradicts it.
    Illegal,
    /// It can take effect and leaves the state as it was (a read, a cas that did not match).
    Same,
    /// It can take effect and leaves this state.
    To(S),
}

/// A sequential specification: a state and the effect of each operation on it.
pub trait Model {
    /// The model's state; the search interns states, so cloning and hashing are rare.
    type State: Clone + Eq + Hash;
    /// One operation, call and result together.
    type Op;

    /// Whether `op` can take effect in `state`, and the state after it.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Next<Self::State>;
}

/// One key's value (`None`: absent) under get/read, put/write, delete, append and cas.
///
/// An indeterminate operation (one whose outcome is unknown) may or may not have taken
/// effect: the search may place it anywhere after its call, or last of all, which is the
/// same as never. So its step is never [`Next::Illegal`]: an indeterminate read observes
/// nothing, and an indeterminate cas that finds another value than it expects changes
/// nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyModel;

impl Model for KeyModel {
    type State = Option<String>;
    type Op = Operation;

    fn step(&self, state: &Option<String>, op: &Operation) -> Next<Option<String>> {
        let indeterminate = op.ret.is_none();
        match &op.action {
            Action::Read { value } if indeterminate || value == state => Next::Same,
            Action::Read { .. } => Next::Illegal,
            Action::Write { value } => Next::To(value.clone()),
            Action::Append { value } => {
                let mut joined = state.clone().unwrap_or_default();
                joined.push_str(value);
                Next::To(Some(joined))
            }
            Action::Cas { expected, value } if expected == state => Next::To(value.clone()),
            Action::Cas { .. } if indeterminate => Next::Same,
            Action::Cas { .. } => Next::Illegal,
        }
    }
}
