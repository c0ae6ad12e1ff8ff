//! Every key the console knows, as one table. The `?` overlay and the hint line are drawn
//! from it and key handling looks actions up in it, so the three cannot disagree.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Down,
    Up,
    SwitchPane,
    Details,
    Put,
    Get,
    Delete,
    History,
    Stop,
    Remove,
    Transfer,
    Approve,
    Reject,
    Refresh,
    Help,
    Quit,
    /// Closes the open popup, or answers "no" to a confirmation.
    Close,
    Submit,
    NextField,
    Yes,
    No,
    Toggle,
}

/// Where a binding applies. The main screen reads the first three; a popup reads only its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Context {
    /// Even inside a popup.
    Always,
    /// The main screen.
    Global,
    /// Acts on the selected member.
    Peers,
    /// Acts on the selected pending join.
    Pending,
    Input,
    Confirm,
    /// The help overlay and the get / history result popups.
    View,
}

impl Context {
    pub fn title(self) -> &'static str {
        match self {
            Context::Always => "anywhere",
            Context::Global => "main screen",
            Context::Peers => "selected peer",
            Context::Pending => "selected pending join",
            Context::Input => "input popup",
            Context::Confirm => "confirmation",
            Context::View => "result / help",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

const fn plain(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        mods: KeyModifiers::NONE,
    }
}

const fn code(code: KeyCode) -> Key {
    Key {
        code,
        mods: KeyModifiers::NONE,
    }
}

const fn ctrl(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        mods: KeyModifiers::CONTROL,
    }
}

pub struct Binding {
    pub keys: &'static [Key],
    /// How the keys are written in the help and the hints.
    pub label: &'static str,
    pub action: Action,
    /// A word or two for the hint line; empty to leave the binding out of it.
    pub hint: &'static str,
    pub description: &'static str,
    pub context: Context,
}

const fn bind(
    keys: &'static [Key],
    label: &'static str,
    action: Action,
    hint: &'static str,
    description: &'static str,
    context: Context,
) -> Binding {
    Binding {
        keys,
        label,
        action,
        hint,
        description,
        context,
    }
}

use Action as A;
use Context as C;

#[rustfmt::skip]
pub static KEYS: &[Binding] = &[
    bind(&[plain('j'), code(KeyCode::Down)], "j/↓", A::Down, "", "move down", C::Global),
    bind(&[plain('k'), code(KeyCode::Up)], "k/↑", A::Up, "", "move up", C::Global),
    bind(&[code(KeyCode::Tab)], "Tab", A::SwitchPane, "", "switch pane: peers / pending joins", C::Global),
    bind(&[code(KeyCode::Enter)], "Enter", A::Details, "", "open / refresh the selected node's details", C::Peers),
    bind(&[plain('p')], "p", A::Put, "put", "put a key: asks for key, then value", C::Global),
    bind(&[plain('g')], "g", A::Get, "get", "get a key: value, revision, version", C::Global),
    bind(&[plain('d')], "d", A::Delete, "del", "delete a key (asks first)", C::Global),
    bind(&[plain('h')], "h", A::History, "history", "list every retained version of a key", C::Global),
    bind(&[plain('s')], "s", A::Stop, "stop", "stop its process; it stays a member (asks first)", C::Peers),
    bind(&[plain('r')], "r", A::Remove, "remove", "take it out of the cluster (asks first)", C::Peers),
    bind(&[plain('t')], "t", A::Transfer, "transfer", "transfer leadership to the node", C::Peers),
    bind(&[plain('a')], "a", A::Approve, "approve", "approve the join", C::Pending),
    bind(&[plain('x')], "x", A::Reject, "reject", "reject the join (asks first)", C::Pending),
    bind(&[plain('R'), code(KeyCode::F(5))], "R/F5", A::Refresh, "", "refresh now", C::Global),
    bind(&[plain('?')], "?", A::Help, "help", "show / hide this help", C::Global),
    bind(&[plain('q')], "q", A::Quit, "quit", "quit", C::Global),
    bind(&[ctrl('c')], "Ctrl-C", A::Quit, "", "quit, even from a popup", C::Always),
    bind(&[code(KeyCode::Enter)], "Enter", A::Submit, "next / submit", "next field, then send", C::Input),
    bind(&[code(KeyCode::Tab)], "Tab", A::NextField, "switch field", "switch between key and value", C::Input),
    bind(&[code(KeyCode::Esc)], "Esc", A::Close, "cancel", "close without sending", C::Input),
    bind(&[plain('y')], "y", A::Yes, "yes", "yes, do it", C::Confirm),
    bind(&[plain('n'), code(KeyCode::Esc)], "n/Esc", A::No, "no", "no, leave it", C::Confirm),
    bind(&[code(KeyCode::Left), code(KeyCode::Right), code(KeyCode::Tab)], "←/→/Tab", A::Toggle, "choose", "move between No and Yes", C::Confirm),
    bind(&[code(KeyCode::Enter)], "Enter", A::Submit, "answer", "answer the chosen one; No at first", C::Confirm),
    bind(&[plain('j'), code(KeyCode::Down)], "j/↓", A::Down, "", "scroll down", C::View),
    bind(&[plain('k'), code(KeyCode::Up)], "k/↑", A::Up, "", "scroll up", C::View),
    bind(&[code(KeyCode::Esc), code(KeyCode::Enter), plain('q'), plain('?')], "Esc/q", A::Close, "close", "close", C::View),
];

fn matches(key: &Key, event: &KeyEvent) -> bool {
    // Terminals disagree on whether an upper-case letter carries SHIFT; the letter says it.
    let significant = KeyModifiers::CONTROL | KeyModifiers::ALT;
    key.code == event.code && key.mods == event.modifiers & significant
}

/// The action bound to `event` in any of `contexts`.
pub fn action(contexts: &[Context], event: &KeyEvent) -> Option<Action> {
    KEYS.iter()
        .filter(|b| contexts.contains(&b.context))
        .find(|b| b.keys.iter().any(|k| matches(k, event)))
        .map(|b| b.action)
}

/// The bindings shown in the hint line for `contexts`, in table order.
pub fn hints(contexts: &[Context]) -> impl Iterator<Item = &'static Binding> + '_ {
    KEYS.iter()
        .filter(move |b| !b.hint.is_empty() && contexts.contains(&b.context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_is_bound_twice_in_one_context() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                let main = [C::Always, C::Global, C::Peers, C::Pending];
                let overlap = a.context == b.context
                    || (main.contains(&a.context) && main.contains(&b.context));
                if overlap {
                    for k in a.keys {
                        assert!(!b.keys.contains(k), "{:?} bound twice: {}", k, a.label);
                    }
                }
            }
        }
    }

    #[test]
    fn upper_case_matches_with_or_without_shift() {
        let shifted = KeyEvent::new(KeyCode::Char('R'), KeyModifiers::SHIFT);
        let bare = KeyEvent::new(KeyCode::Char('R'), KeyModifiers::NONE);
        assert_eq!(action(&[C::Global], &shifted), Some(A::Refresh));
        assert_eq!(action(&[C::Global], &bare), Some(A::Refresh));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action(&[C::Always], &ctrl_c), Some(A::Quit));
        assert_eq!(action(&[C::Input], &ctrl_c), None);
    }
}
