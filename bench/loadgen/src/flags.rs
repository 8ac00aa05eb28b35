//! Command-line value parsing shared by mcload and mcprobe: numbers and durations with
//! errors that name the flag.

use std::time::Duration;

/// Parses `s` as a number for `flag`.
pub fn num<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{flag}: cannot parse {s:?} as a number"))
}

/// Parses `s` as seconds (fractions allowed), at most a day.
pub fn secs(s: &str, flag: &str) -> Result<Duration, String> {
    let f: f64 = num(s, flag)?;
    if !f.is_finite() || !(0.0..=86_400.0).contains(&f) {
        return Err(format!("{flag}: {s} is not between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(f))
}
