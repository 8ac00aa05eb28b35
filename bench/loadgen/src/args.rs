//! Command-line options of mcload: parsing, defaults and validation.

use std::time::Duration;

use crate::flags::{num, secs};

/// Largest key memcached accepts (KEY_MAX_LENGTH).
pub const MAX_KEY: usize = 250;
/// Largest value we will send: memcached's default item size limit (-I 1m).
pub const MAX_VALUE: usize = 1 << 20;

/// How the result line is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Kv,
    Json,
}

/// When the measured phase stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Run for this long, counting replies that complete before the deadline.
    Duration(Duration),
    /// Issue exactly this many requests in total and wait for every reply.
    Ops(u64),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub host: String,
    pub port: u16,
    pub conns: usize,
    pub pipeline: usize,
    pub keys: u64,
    pub key_size: usize,
    pub value_size: usize,
    pub get_ratio: f64,
    pub stop: Stop,
    pub warmup: Duration,
    pub threads: usize,
    pub preload: bool,
    pub seed: u64,
    pub timeout: Duration,
    pub format: Format,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: "127.0.0.1".to_string(),
            port: 11211,
            conns: 50,
            pipeline: 1,
            keys: 10_000,
            key_size: 32,
            value_size: 100,
            get_ratio: 0.9,
            stop: Stop::Duration(Duration::from_secs(5)),
            warmup: Duration::ZERO,
            threads: 1,
            preload: false,
            seed: 1,
            timeout: Duration::from_secs(120),
            format: Format::Text,
        }
    }
}

pub const USAGE: &str = "\
usage: mcload [options]
  --host H          server address (default 127.0.0.1)
  --port P          server port (default 11211)
  --conns N         connections (default 50)
  --pipeline D      requests in flight per connection (default 1)
  --keys K          key space: keys 0..K (default 10000)
  --key-size B      key length in bytes (default 32)
  --value-size B    value length for sets (default 100)
  --get-ratio R     fraction of gets, 0..1 (default 0.9)
  --duration S      measured phase length in seconds (default 5)
  --ops N           instead of --duration: issue exactly N requests; 0 = preload only
  --warmup S        unrecorded load before the measured phase (duration mode only)
  --threads T       client threads, each with its own poll (default 1)
  --preload         set every key once before the measured phase
  --seed N          PRNG seed (default 1)
  --timeout S       hard limit on the whole run (default 120)
  --output F        text | kv | json (default text)
  --help";

fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a str, String> {
    it.next()
        .map(String::as_str)
        .ok_or_else(|| format!("{flag} needs a value"))
}

/// Digits needed to print the largest key index below `keys`.
pub fn index_digits(keys: u64) -> usize {
    let mut n = keys.saturating_sub(1);
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Parses the arguments after the program name. `Ok(None)` means help was asked for.
pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut duration = None;
    let mut ops = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        match f {
            "--help" | "-h" => return Ok(None),
            "--preload" => o.preload = true,
            "--host" => o.host = value(&mut it, f)?.to_string(),
            "--port" => o.port = num(value(&mut it, f)?, f)?,
            "--conns" => o.conns = num(value(&mut it, f)?, f)?,
            "--pipeline" => o.pipeline = num(value(&mut it, f)?, f)?,
            "--keys" => o.keys = num(value(&mut it, f)?, f)?,
            "--key-size" => o.key_size = num(value(&mut it, f)?, f)?,
            "--value-size" => o.value_size = num(value(&mut it, f)?, f)?,
            "--get-ratio" => o.get_ratio = num(value(&mut it, f)?, f)?,
            "--duration" => duration = Some(secs(value(&mut it, f)?, f)?),
            "--ops" => ops = Some(num(value(&mut it, f)?, f)?),
            "--warmup" => o.warmup = secs(value(&mut it, f)?, f)?,
            "--threads" => o.threads = num(value(&mut it, f)?, f)?,
            "--seed" => o.seed = num(value(&mut it, f)?, f)?,
            "--timeout" => o.timeout = secs(value(&mut it, f)?, f)?,
            "--output" => {
                o.format = match value(&mut it, f)? {
                    "text" => Format::Text,
                    "kv" => Format::Kv,
                    "json" => Format::Json,
                    other => return Err(format!("--output: unknown format {other:?}")),
                }
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    o.stop = match (duration, ops) {
        (Some(_), Some(_)) => return Err("give --duration or --ops, not both".into()),
        (Some(d), None) => Stop::Duration(d),
        (None, Some(n)) => Stop::Ops(n),
        (None, None) => o.stop,
    };
    validate(&o)?;
    Ok(Some(o))
}

fn validate(o: &Options) -> Result<(), String> {
    if o.conns == 0 || o.conns > 100_000 {
        return Err("--conns must be 1..=100000".into());
    }
    if o.pipeline == 0 || o.pipeline > 4096 {
        return Err("--pipeline must be 1..=4096".into());
    }
    if o.threads == 0 || o.threads > o.conns {
        return Err("--threads must be 1..=conns".into());
    }
    if o.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    // One leading letter keeps keys from being pure numbers; the index fills the rest.
    let need = index_digits(o.keys) + 1;
    if o.key_size < need || o.key_size > MAX_KEY {
        return Err(format!(
            "--key-size must be {need}..={MAX_KEY} for {} keys",
            o.keys
        ));
    }
    if o.value_size > MAX_VALUE {
        return Err(format!("--value-size must be at most {MAX_VALUE}"));
    }
    if !(0.0..=1.0).contains(&o.get_ratio) {
        return Err("--get-ratio must be between 0 and 1".into());
    }
    if o.warmup > Duration::ZERO && matches!(o.stop, Stop::Ops(_)) {
        return Err("--warmup applies to --duration runs only".into());
    }
    if o.timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    if let Stop::Duration(d) = o.stop {
        if d.is_zero() {
            return Err("--duration must be positive".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<Options>, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    #[test]
    fn defaults_and_overrides() {
        let o = p("--port 1234 --conns 8 --pipeline 16 --get-ratio 0.5 --ops 100 --preload")
            .unwrap()
            .unwrap();
        assert_eq!(o.port, 1234);
        assert_eq!(o.conns, 8);
        assert_eq!(o.pipeline, 16);
        assert_eq!(o.get_ratio, 0.5);
        assert_eq!(o.stop, Stop::Ops(100));
        assert!(o.preload);
        assert_eq!(o.host, "127.0.0.1");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(p("--port").is_err());
        assert!(p("--port 70000").is_err());
        assert!(p("--conns 0").is_err());
        assert!(p("--get-ratio 1.5").is_err());
        assert!(p("--duration 1 --ops 5").is_err());
        assert!(p("--keys 1000000 --key-size 6").is_err());
        assert!(p("--keys 1000000 --key-size 7").is_ok());
        assert!(p("--threads 4 --conns 2").is_err());
        assert!(p("--duration nan").is_err());
        assert!(p("--bogus").is_err());
        assert!(p("--output xml").is_err());
        assert!(p("--ops 5 --warmup 1").is_err());
        assert!(p("--help").unwrap().is_none());
    }

    #[test]
    fn digits() {
        assert_eq!(index_digits(1), 1);
        assert_eq!(index_digits(10), 1);
        assert_eq!(index_digits(11), 2);
        assert_eq!(index_digits(1_000_000), 6);
        assert_eq!(index_digits(1_000_001), 7);
    }
}
