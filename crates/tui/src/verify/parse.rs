//! The history formats of the [module docs](super): JSON lines, Jepsen EDN and the Jepsen
//! log, each into a [`History`].

use super::{Action, History, Operation};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// A line the parser could not take, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// From 1.
    pub line: usize,
    pub message: String,
}

impl ParseError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

/// The formats [`parse`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// MyRaft's own: one JSON object per line.
    JsonLines,
    /// Jepsen's `history.edn`: one EDN map per line.
    JepsenEdn,
    /// The `jepsen.util` lines of a Jepsen log, over one register.
    JepsenLog,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::JsonLines => "JSON lines",
            Format::JepsenEdn => "Jepsen EDN",
            Format::JepsenLog => "Jepsen log",
        })
    }
}

/// The format of `text`, from its first non-blank line: `Ok(None)` if it has none.
pub fn detect(text: &str) -> Result<Option<Format>, ParseError> {
    let Some((n, line)) = text
        .lines()
        .enumerate()
        .find(|(_, line)| !line.trim().is_empty())
    else {
        return Ok(None);
    };
    let line = line.trim_start();
    if line.starts_with("{:") {
        Ok(Some(Format::JepsenEdn))
    } else if line.starts_with('{') {
        Ok(Some(Format::JsonLines))
    } else if line.split_whitespace().any(|t| t == "jepsen.util") {
        Ok(Some(Format::JepsenLog))
    } else {
        Err(ParseError::new(
            n + 1,
            "not a history: expected a JSON object ({\"process\":..}), a Jepsen EDN map \
             ({:process ..}) or a Jepsen log line (INFO jepsen.util - ..)",
        ))
    }
}

/// Reads a history in whichever format `text` is in; an empty text is an empty history.
pub fn parse(text: &str) -> Result<History, ParseError> {
    match detect(text)? {
        None => Ok(History::default()),
        Some(Format::JsonLines) => parse_json_lines(text),
        Some(Format::JepsenEdn) => parse_edn(text),
        Some(Format::JepsenLog) => parse_jepsen_log(text),
    }
}

/// What a line says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl Kind {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "invoke" => Kind::Invoke,
            "ok" => Kind::Ok,
            "fail" => Kind::Fail,
            "info" => Kind::Info,
            _ => return None,
        })
    }
}

/// The function an operation calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Get,
    Put,
    Delete,
    Append,
    Cas,
}

impl Verb {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "get" | "read" => Verb::Get,
            "put" | "write" => Verb::Put,
            "delete" => Verb::Delete,
            "append" => Verb::Append,
            "cas" => Verb::Cas,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Put => "put",
            Verb::Delete => "delete",
            Verb::Append => "append",
            Verb::Cas => "cas",
        }
    }
}

const VERBS: &str = "get/read, put/write, delete, append or cas";
const KINDS: &str = "invoke, ok, fail or info";

/// Pairs invocations with completions, process by process.
#[derive(Default)]
struct Builder {
    /// In invocation order; `None` once failed.
    slots: Vec<Option<Operation>>,
    /// Each process's pending invocation: its slot and function.
    pending: HashMap<u64, (usize, Verb)>,
    failed: usize,
}

impl Builder {
    fn invoke(
        &mut self,
        process: u64,
        key: String,
        action: Action,
        verb: Verb,
        time: u64,
        line: usize,
    ) {
        // A process with a pending operation that calls again gave up waiting on it.
        self.pending.insert(process, (self.slots.len(), verb));
        self.slots.push(Some(Operation {
            process,
            key,
            action,
            call: time,
            ret: None,
            line,
        }));
    }

    /// Completes `process`'s pending invocation; `read` is what an ok get returned.
    fn complete(
        &mut self,
        process: u64,
        kind: Kind,
        verb: Verb,
        read: Option<String>,
        time: u64,
        line: usize,
    ) -> Result<(), ParseError> {
        let Some((slot, invoked)) = self.pending.remove(&process) else {
            return Err(ParseError::new(
                line,
                format!(
                    "process {process} completes a {} it never invoked",
                    verb.name()
                ),
            ));
        };
        let Some(op) = self.slots[slot].as_mut() else {
            return Ok(());
        };
        if invoked != verb {
            return Err(ParseError::new(
                line,
                format!(
                    "process {process} completes a {}, but its invocation on line {} is a {}",
                    verb.name(),
                    op.line,
                    invoked.name()
                ),
            ));
        }
        match kind {
            Kind::Ok => {
                if time < op.call {
                    return Err(ParseError::new(
                        line,
                        format!(
                            "completed at {time}, before its invocation on line {} at {}",
                            op.line, op.call
                        ),
                    ));
                }
                op.ret = Some(time);
                if let Action::Read { value } = &mut op.action {
                    *value = read;
                }
            }
            Kind::Fail => {
                self.slots[slot] = None;
                self.failed += 1;
            }
            // Leaves it indeterminate.
            Kind::Info | Kind::Invoke => {}
        }
        Ok(())
    }

    fn finish(self, initial: Option<String>) -> History {
        History {
            ops: self.slots.into_iter().flatten().collect(),
            failed: self.failed,
            initial,
        }
    }
}

/// The action an invocation of `verb` starts, from its value(s).
fn action(verb: Verb, value: Option<String>, expected: Option<String>) -> Option<Action> {
    Some(match verb {
        Verb::Get => Action::Read { value: None },
        Verb::Put => Action::Write { value },
        Verb::Delete => Action::Write { value: None },
        Verb::Append => Action::Append { value: value? },
        Verb::Cas => Action::Cas { expected, value },
    })
}

/// MyRaft's JSON lines; see the module docs.
pub fn parse_json_lines(text: &str) -> Result<History, ParseError> {
    struct Line {
        n: usize,
        process: u64,
        kind: Kind,
        verb: Verb,
        key: String,
        value: Option<String>,
        expected: Option<String>,
        time: Option<u64>,
    }
    let mut lines = Vec::new();
    for (i, text) in text.lines().enumerate() {
        let n = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        let object: Value =
            serde_json::from_str(text).map_err(|e| ParseError::new(n, format!("not JSON: {e}")))?;
        let Some(object) = object.as_object() else {
            return Err(ParseError::new(n, "not a JSON object"));
        };
        let field = |name: &str| object.get(name).filter(|v| !v.is_null());
        let process = field("process")
            .and_then(Value::as_u64)
            .ok_or_else(|| ParseError::new(n, "\"process\" is missing or not an integer ≥ 0"))?;
        let kind = field("type")
            .and_then(Value::as_str)
            .and_then(Kind::from_name)
            .ok_or_else(|| ParseError::new(n, format!("\"type\" is missing or not {KINDS}")))?;
        let verb = field("f")
            .and_then(Value::as_str)
            .and_then(Verb::from_name)
            .ok_or_else(|| ParseError::new(n, format!("\"f\" is missing or not {VERBS}")))?;
        let text_of = |name: &str| -> Result<Option<String>, ParseError> {
            match field(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(x)) => Ok(Some(x.to_string())),
                Some(_) => Err(ParseError::new(
                    n,
                    format!("\"{name}\" is not a string, a number or null"),
                )),
            }
        };
        let time = match field("time_ns") {
            None => None,
            Some(t) => Some(
                t.as_u64()
                    .ok_or_else(|| ParseError::new(n, "\"time_ns\" is not an integer ≥ 0"))?,
            ),
        };
        lines.push(Line {
            n,
            process,
            kind,
            verb,
            key: text_of("key")?.unwrap_or_default(),
            value: text_of("value")?,
            expected: text_of("expected")?,
            time,
        });
    }
    let timed = lines.iter().any(|l| l.time.is_some());
    let mut builder = Builder::default();
    for (index, line) in lines.into_iter().enumerate() {
        let time = match (timed, line.time) {
            (true, Some(t)) if t < u64::MAX => t,
            (true, Some(_)) => return Err(ParseError::new(line.n, "\"time_ns\" is too large")),
            (true, None) => {
                return Err(ParseError::new(
                    line.n,
                    "\"time_ns\" is missing: give it on every line or on none",
                ))
            }
            (false, _) => index as u64,
        };
        if line.kind == Kind::Invoke {
            let verb = line.verb;
            let action = action(verb, line.value, line.expected)
                .ok_or_else(|| ParseError::new(line.n, "an append needs a \"value\" to append"))?;
            builder.invoke(line.process, line.key, action, verb, time, line.n);
        } else {
            builder.complete(line.process, line.kind, line.verb, line.value, time, line.n)?;
        }
    }
    Ok(builder.finish(None))
}

/// Jepsen's EDN history lines; see the module docs.
pub fn parse_edn(text: &str) -> Result<History, ParseError> {
    let mut builder = Builder::default();
    let mut keyed = false;
    for (i, text) in text.lines().enumerate() {
        let n = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        let map = match Reader::new(text).value() {
            Ok(Edn::Map(map)) => map,
            Ok(_) => return Err(ParseError::new(n, "not an EDN map {:process .., ..}")),
            Err(e) => return Err(ParseError::new(n, format!("not EDN: {e}"))),
        };
        let field = |name: &str| {
            map.iter()
                .find(|(k, _)| matches!(k, Edn::Keyword(k) if k == name))
                .map(|(_, v)| v)
        };
        let process = match field("process") {
            Some(Edn::Int(p)) if *p >= 0 => *p as u64,
            // The nemesis, and other non-clients.
            Some(Edn::Keyword(_)) => continue,
            _ => {
                return Err(ParseError::new(
                    n,
                    ":process is missing or not an integer ≥ 0",
                ))
            }
        };
        let key = match field("key") {
            None => None,
            Some(key) => Some(
                key.text()
                    .ok_or_else(|| ParseError::new(n, ":key is not a string or a number"))?,
            ),
        };
        keyed |= key.is_some();
        let kind = keyword(field("type"));
        let verb = keyword(field("f"));
        let value = field("value").unwrap_or(&Edn::Nil);
        event(
            &mut builder,
            process,
            kind,
            verb,
            key.unwrap_or_default(),
            value,
            i,
            n,
        )?;
    }
    Ok(builder.finish(keyed.then(String::new)))
}

/// The `jepsen.util` lines of a Jepsen log: `INFO  jepsen.util - 3 :invoke :cas [3 0]`.
pub fn parse_jepsen_log(text: &str) -> Result<History, ParseError> {
    let mut builder = Builder::default();
    for (i, text) in text.lines().enumerate() {
        let n = i + 1;
        let mut tokens = text.split_whitespace();
        if !tokens.by_ref().any(|t| t == "jepsen.util") {
            continue;
        }
        let (Some("-"), Some(process)) = (tokens.next(), tokens.next()) else {
            return Err(ParseError::new(
                n,
                "expected `jepsen.util - PROCESS :TYPE :F VALUE`",
            ));
        };
        let Ok(process) = process.parse::<u64>() else {
            // The nemesis, and other non-clients.
            continue;
        };
        let kind = tokens.next().and_then(|t| t.strip_prefix(':'));
        let verb = tokens.next().and_then(|t| t.strip_prefix(':'));
        let rest = tokens.collect::<Vec<_>>().join(" ");
        let value = if rest.is_empty() {
            Edn::Nil
        } else {
            Reader::new(&rest)
                .value()
                .map_err(|e| ParseError::new(n, format!("bad value {rest:?}: {e}")))?
        };
        event(
            &mut builder,
            process,
            kind,
            verb,
            String::new(),
            &value,
            i,
            n,
        )?;
    }
    Ok(builder.finish(None))
}

fn keyword(value: Option<&Edn>) -> Option<&str> {
    match value {
        Some(Edn::Keyword(k)) => Some(k),
        _ => None,
    }
}

/// One EDN or log line's event; the line index is the time.
#[allow(clippy::too_many_arguments)]
fn event(
    builder: &mut Builder,
    process: u64,
    kind: Option<&str>,
    verb: Option<&str>,
    key: String,
    value: &Edn,
    index: usize,
    n: usize,
) -> Result<(), ParseError> {
    let kind = kind
        .and_then(Kind::from_name)
        .ok_or_else(|| ParseError::new(n, format!("the type is missing or not :{KINDS}")))?;
    let verb = verb
        .and_then(Verb::from_name)
        .ok_or_else(|| ParseError::new(n, format!("the function is missing or not :{VERBS}")))?;
    let time = index as u64;
    let text = |v: &Edn| {
        v.value()
            .ok_or_else(|| ParseError::new(n, format!("{v} is not a string, a number or nil")))
    };
    if kind != Kind::Invoke {
        // Only an ok read's value matters: what it read.
        let read = match (kind, verb) {
            (Kind::Ok, Verb::Get) => text(value)?,
            _ => None,
        };
        return builder.complete(process, kind, verb, read, time, n);
    }
    let action = match (verb, value) {
        (Verb::Cas, Edn::Vector(pair)) if pair.len() == 2 => Action::Cas {
            expected: text(&pair[0])?,
            value: text(&pair[1])?,
        },
        (Verb::Cas, _) => return Err(ParseError::new(n, "a cas takes [EXPECTED NEW]")),
        (Verb::Append, v) => Action::Append {
            value: text(v)?.ok_or_else(|| ParseError::new(n, "an append needs a value"))?,
        },
        (verb, v) => action(verb, text(v)?, None)
            .ok_or_else(|| ParseError::new(n, "an append needs a value"))?,
    };
    builder.invoke(process, key, action, verb, time, n);
    Ok(())
}

/// The EDN the histories use: nil, booleans, numbers, strings, keywords, symbols, vectors,
/// lists and maps.
#[derive(Clone, Debug, PartialEq)]
enum Edn {
    Nil,
    Int(i64),
    Str(String),
    Keyword(String),
    /// Anything else bare: true, false, floats, symbols.
    Symbol(String),
    Vector(Vec<Edn>),
    Map(Vec<(Edn, Edn)>),
}

impl Edn {
    /// As a value of the model: nil is absent, a number its decimal text.
    fn value(&self) -> Option<Option<String>> {
        match self {
            Edn::Nil => Some(None),
            other => other.text().map(Some),
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Edn::Int(i) => Some(i.to_string()),
            Edn::Str(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl fmt::Display for Edn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edn::Nil => f.write_str("nil"),
            Edn::Int(i) => write!(f, "{i}"),
            Edn::Str(s) => write!(f, "{s:?}"),
            Edn::Keyword(k) => write!(f, ":{k}"),
            Edn::Symbol(s) => f.write_str(s),
            Edn::Vector(items) => {
                let items: Vec<String> = items.iter().map(Edn::to_string).collect();
                write!(f, "[{}]", items.join(" "))
            }
            Edn::Map(_) => f.write_str("{..}"),
        }
    }
}

/// A recursive-descent reader of one EDN value.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }

    /// Whitespace and commas, which EDN counts as whitespace.
    fn skip(&mut self) {
        while self.peek().is_some_and(|c| c.is_whitespace() || c == ',') {
            self.bump();
        }
    }

    /// The whole text as one value.
    fn value(&mut self) -> Result<Edn, String> {
        let v = self.item()?;
        self.skip();
        match self.peek() {
            None => Ok(v),
            Some(c) => Err(format!("unexpected {c:?} after the value")),
        }
    }

    fn item(&mut self) -> Result<Edn, String> {
        self.skip();
        match self.peek() {
            None => Err("the line ends early".to_owned()),
            Some('{') => {
                self.bump();
                let items = self.items('}')?;
                if items.len() % 2 != 0 {
                    return Err("a map with a key but no value".to_owned());
                }
                let mut map = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    map.push((k, v));
                }
                Ok(Edn::Map(map))
            }
            Some('[') => {
                self.bump();
                self.items(']').map(Edn::Vector)
            }
            Some('(') => {
                self.bump();
                self.items(')').map(Edn::Vector)
            }
            Some('"') => {
                self.bump();
                self.string().map(Edn::Str)
            }
            Some(':') => {
                self.bump();
                let word = self.word();
                if word.is_empty() {
                    return Err("a ':' with no keyword".to_owned());
                }
                Ok(Edn::Keyword(word.to_owned()))
            }
            Some(c) if c == '}' || c == ']' || c == ')' => Err(format!("unexpected {c:?}")),
            Some(_) => {
                let word = self.word();
                if word.is_empty() {
                    return Err(format!("unexpected {:?}", self.peek().unwrap_or(' ')));
                }
                Ok(match word {
                    "nil" => Edn::Nil,
                    w => w
                        .parse::<i64>()
                        .map_or_else(|_| Edn::Symbol(w.to_owned()), Edn::Int),
                })
            }
        }
    }

    fn items(&mut self, close: char) -> Result<Vec<Edn>, String> {
        let mut items = Vec::new();
        loop {
            self.skip();
            match self.peek() {
                Some(c) if c == close => {
                    self.bump();
                    return Ok(items);
                }
                None => return Err(format!("no closing {close:?}")),
                Some(_) => items.push(self.item()?),
            }
        }
    }

    /// A bare token: up to whitespace, a comma or a delimiter.
    fn word(&mut self) -> &'a str {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| !c.is_whitespace() && !",{}[]()\"".contains(c))
        {
            self.bump();
        }
        &self.text[start..self.at]
    }

    /// The rest of a string whose opening quote was read.
    fn string(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err("a string with no closing quote".to_owned()),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(c) => out.push(c),
                    None => return Err("a string with no closing quote".to_owned()),
                },
                Some(c) => out.push(c),
            }
        }
    }
}
