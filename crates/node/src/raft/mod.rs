//! The Raft consensus core. Pure: no tokio, no clock, no socket, no file.
