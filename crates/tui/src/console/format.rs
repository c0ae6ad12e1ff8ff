//! How numbers, sizes and durations read on screen.

use std::time::Duration;

/// `88412` → `88 412`: indexes get long, and groups read faster than digit runs.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Binary units with one decimal: `12.4 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A short delay, as for last contact: `12 ms`, `1.2 s`, `3 min 5 s`.
pub fn millis(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        span(Duration::from_millis(ms))
    }
}

/// A long span in its two largest units: `42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days} d {hours} h")
    } else if hours > 0 {
        format!("{hours} h {mins} min")
    } else if mins > 0 {
        format!("{mins} min {secs} s")
    } else {
        format!("{secs} s")
    }
}

/// Seconds with one decimal, for "updated 0.3 s ago".
pub fn ago(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Keys and values are bytes; show them as text when they are, escaped when not.
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s
            .chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_by_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1 000");
        assert_eq!(count(88_412), "88 412");
        assert_eq!(count(1_234_567), "1 234 567");
    }

    #[test]
    fn sizes_and_spans() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(13_002_342), "12.4 MiB");
        assert_eq!(millis(12), "12 ms");
        assert_eq!(millis(1234), "1.2 s");
        assert_eq!(span(Duration::from_secs(42)), "42 s");
        assert_eq!(
            span(Duration::from_secs(3 * 86_400 + 4 * 3600 + 7)),
            "3 d 4 h"
        );
        assert_eq!(text(b"alpha"), "alpha");
        assert_eq!(text(&[0xff, b'a']), "\\xffa");
    }
}
