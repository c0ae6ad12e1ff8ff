//! The entrance against fake nodes and a raw client, all in-process on 127.0.0.1.
//! Every wait is for a reply or an event, bounded by a timeout that only a failing test
//! reaches.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

mod admission;
mod health;
mod hygiene;
mod routing;
mod support;
