//! Differential test: every request script in `tests/corpus/` is replayed against memcached (the
//! oracle, `/usr/bin/memcached`) and against the server under test, each on a fresh process, in
//! one TCP write and split at seeded random points; the replies must match byte for byte after
//! normalising only CAS numbers in `VALUE` lines, the `VERSION` string and `STAT` values.
//!
//! Script format (one file per behaviour, `*.txt`):
//! - `# …` comment. A blank line is a request too: it sends `\r\n` (e.g. a zero-length value).
//! - `@args <flags…>` extra server flags for both servers (before any request).
//! - `@sync` sends `version\r\n` and waits for its reply before sending more. Needed before a
//!   request whose effect on *earlier* pipelined replies depends on TCP timing (memcached drops
//!   unsent replies when it closes a connection, or when a multi-get has a too-long key).
//! - `@gets <key> <var>` syncs, sends `gets <key>` and stores the CAS it returns in `<var>`.
//! - `@raw <text>` sends `<text>` unescaped, with no line ending added.
//! - any other line is sent unescaped followed by `\r\n`.
//!
//! Escapes: `\r \n \t \0 \\ \xHH`, `\{N:text}` (text repeated N times) and `${var}`.
//! A script must not make a value or key contain a line starting with `VERSION `, and must not
//! send `version\r\n` inside a data block: the sync marker counts those.

mod common;

use common::{escape, find, Server, MEMCACHED};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Seeds for the split replays; the one-write replay runs as well.
const SEEDS: [u64; 3] = [0x5eed_0001, 0x5eed_0002, 0x5eed_0003];
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Step {
    /// Escaped text, expanded at run time (it may name captured variables).
    Send(String),
    Sync,
    Gets {
        key: String,
        var: String,
    },
}

#[derive(Debug)]
struct Script {
    name: String,
    args: Vec<String>,
    steps: Vec<Step>,
}

fn parse_script(name: &str, text: &str) -> Result<Script, String> {
    let mut args = Vec::new();
    let mut steps = Vec::new();
    // The file's final newline does not start another (blank) request line.
    let text = text.strip_suffix('\n').unwrap_or(text);
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("@args") {
            if !steps.is_empty() {
                return Err(format!("{name}:{}: @args after a request", i + 1));
            }
            args.extend(rest.split_whitespace().map(str::to_string));
        } else if line == "@sync" {
            steps.push(Step::Sync);
        } else if let Some(rest) = line.strip_prefix("@gets ") {
            let mut it = rest.split_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some(k), Some(v), None) => steps.push(Step::Gets {
                    key: k.into(),
                    var: v.into(),
                }),
                _ => return Err(format!("{name}:{}: usage: @gets <key> <var>", i + 1)),
            }
        } else if let Some(rest) = line.strip_prefix("@raw ") {
            steps.push(Step::Send(rest.to_string()));
        } else if line.starts_with('@') {
            return Err(format!("{name}:{}: unknown directive {line:?}", i + 1));
        } else {
            steps.push(Step::Send(format!("{line}\\r\\n")));
        }
    }
    Ok(Script {
        name: name.into(),
        args,
        steps,
    })
}

/// Expands escapes and `${var}` references into bytes.
fn unescape(s: &str, vars: &HashMap<String, String>) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let c = *b.get(i + 1).ok_or("dangling backslash")?;
                i += 2;
                match c {
                    b'r' => out.push(b'\r'),
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'0' => out.push(0),
                    b'\\' => out.push(b'\\'),
                    b'x' => {
                        let hex = s.get(i..i + 2).ok_or("short \\x escape")?;
                        out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                        i += 2;
                    }
                    b'{' => {
                        let close = matching_brace(s, i).ok_or("unclosed \\{")?;
                        let (n, text) = s[i..close].split_once(':').ok_or("\\{N:text}")?;
                        let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                        let piece = unescape(text, vars)?;
                        for _ in 0..n {
                            out.extend_from_slice(&piece);
                        }
                        i = close + 1;
                    }
                    other => return Err(format!("unknown escape \\{}", other as char)),
                }
            }
            b'$' if b.get(i + 1) == Some(&b'{') => {
                let close = s[i..].find('}').ok_or("unclosed ${")? + i;
                let name = &s[i + 2..close];
                let v = vars.get(name).ok_or(format!("unset variable {name}"))?;
                out.extend_from_slice(v.as_bytes());
                i = close + 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Index of the `}` closing a `\{` whose body starts at `from`; nested `\{…}` count.
fn matching_brace(s: &str, from: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            b'\\' => i += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// splitmix64: tiny, seedable, and good enough to pick split points.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    OneWrite,
    Split(u64),
}

/// Collects everything the server sends, on its own thread so that writing a large script can
/// never deadlock against a server that is blocked writing replies we have not read yet.
/// Bytes received so far and whether the server has closed, plus the wake-up for waiters.
type Received = Arc<(Mutex<(Vec<u8>, bool)>, Condvar)>;

struct Reader {
    state: Received,
    handle: Option<thread::JoinHandle<()>>,
}

impl Reader {
    fn spawn(mut stream: TcpStream) -> Reader {
        let state: Received = Arc::new((Mutex::new((Vec::new(), false)), Condvar::new()));
        let st = Arc::clone(&state);
        let handle = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            // A read timeout only so a wedged server cannot pin this thread forever.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            loop {
                let done = match stream.read(&mut buf) {
                    Ok(0) => true,
                    Ok(n) => {
                        if let Ok(mut g) = st.0.lock() {
                            g.0.extend_from_slice(&buf[..n]);
                        }
                        false
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => false,
                    Err(_) => true,
                };
                if done {
                    if let Ok(mut g) = st.0.lock() {
                        g.1 = true;
                    }
                    st.1.notify_all();
                    return;
                }
                st.1.notify_all();
            }
        });
        Reader {
            state,
            handle: Some(handle),
        }
    }

    /// Waits until `pred(received, eof)` holds; Err on deadline.
    fn wait(&self, what: &str, pred: impl Fn(&[u8], bool) -> bool) -> Result<(), String> {
        let until = Instant::now() + DEADLINE;
        let (lock, cv) = &*self.state;
        let mut g = lock.lock().map_err(|_| "reader poisoned")?;
        loop {
            if pred(&g.0, g.1) {
                return Ok(());
            }
            if g.1 {
                return Err(format!(
                    "connection closed while waiting for {what}; received: {}",
                    escape(tail(&g.0))
                ));
            }
            let now = Instant::now();
            if now >= until {
                return Err(format!(
                    "timed out waiting for {what}; received: {}",
                    escape(tail(&g.0))
                ));
            }
            g = cv
                .wait_timeout(g, until - now)
                .map_err(|_| "reader poisoned")?
                .0;
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state.0.lock().map(|g| g.0.clone()).unwrap_or_default()
    }

    fn finish(mut self) -> Vec<u8> {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.snapshot()
    }
}

fn tail(b: &[u8]) -> &[u8] {
    &b[b.len().saturating_sub(400)..]
}

/// Number of lines in `b` that start with `prefix` (line start = offset 0 or after `\n`).
fn count_line_starts(b: &[u8], prefix: &[u8]) -> usize {
    let mut n = usize::from(b.starts_with(prefix));
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && b[i + 1..].starts_with(prefix) {
            n += 1;
        }
    }
    n
}

/// Writes `bytes` in one call or in seeded random pieces. Stops quietly if the server has
/// closed the connection (a script may end the connection on purpose).
fn write_segment(stream: &mut TcpStream, bytes: &[u8], mode: Mode, rng: &mut Rng) -> bool {
    let pieces: Vec<&[u8]> = match mode {
        Mode::OneWrite => vec![bytes],
        Mode::Split(_) => {
            let mut v = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                // Mostly small pieces so splits land inside tokens, line endings and data
                // blocks; sometimes big ones so large values do not take thousands of writes.
                let max = if rng.below(4) == 0 { 65536 } else { 12 };
                let n = 1 + rng.below(max.min(rest.len()));
                let (a, b) = rest.split_at(n);
                v.push(a);
                rest = b;
            }
            v
        }
    };
    for p in pieces {
        if stream.write_all(p).is_err() {
            return false;
        }
    }
    true
}

/// Replays `script` on a fresh `bin` server; returns the raw transcript.
fn replay(bin: &Path, script: &Script, mode: Mode) -> Result<Vec<u8>, String> {
    let args: Vec<&str> = script.args.iter().map(String::as_str).collect();
    let server = Server::start_bin(bin, &args);
    let result = replay_on(&server, script, mode);
    result.map_err(|e| {
        format!(
            "{e}\n  server {} stderr: {}",
            bin.display(),
            server.stderr_text()
        )
    })
}

fn replay_on(server: &Server, script: &Script, mode: Mode) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect_timeout(&server.addr(), DEADLINE)
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(DEADLINE))
        .map_err(|e| e.to_string())?;
    let reader = Reader::spawn(stream.try_clone().map_err(|e| e.to_string())?);
    let mut rng = Rng(match mode {
        Mode::OneWrite => 0,
        Mode::Split(s) => s,
    });
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut sent_all: Vec<u8> = Vec::new();
    let mut open = true;

    let mut flush = |pending: &mut Vec<u8>, stream: &mut TcpStream, open: &mut bool| {
        if *open && !pending.is_empty() {
            *open = write_segment(stream, pending, mode, &mut rng);
        }
        pending.clear();
    };

    for step in &script.steps {
        match step {
            Step::Send(text) => {
                let bytes = unescape(text, &vars).map_err(|e| format!("script: {e}"))?;
                sent_all.extend_from_slice(&bytes);
                pending.extend_from_slice(&bytes);
            }
            Step::Sync | Step::Gets { .. } => {
                pending.extend_from_slice(b"version\r\n");
                sent_all.extend_from_slice(b"version\r\n");
                flush(&mut pending, &mut stream, &mut open);
                let want = count_line_starts(&sent_all, b"version\r\n");
                reader.wait("sync VERSION reply", |b, _| {
                    b.ends_with(b"\r\n") && count_line_starts(b, b"VERSION ") >= want
                })?;
                if let Step::Gets { key, var } = step {
                    let mark = reader.snapshot().len();
                    let req = format!("gets {key}\r\n");
                    pending.extend_from_slice(req.as_bytes());
                    sent_all.extend_from_slice(req.as_bytes());
                    flush(&mut pending, &mut stream, &mut open);
                    reader.wait("gets reply", |b, _| {
                        b.get(mark..).and_then(common::reply_len).is_some()
                    })?;
                    let got = reader.snapshot();
                    let line = &got[mark..];
                    let line = &line[..find(line, b"\r\n").unwrap_or(line.len())];
                    let text = String::from_utf8_lossy(line);
                    let toks: Vec<&str> = text.split(' ').collect();
                    match (toks.first(), toks.get(4)) {
                        (Some(&"VALUE"), Some(cas)) => {
                            vars.insert(var.clone(), cas.to_string());
                        }
                        _ => return Err(format!("@gets {key}: no CAS in reply {text:?}")),
                    }
                }
            }
        }
    }
    flush(&mut pending, &mut stream, &mut open);
    let _ = stream.shutdown(Shutdown::Write);
    reader.wait("the server to close after our EOF", |_, eof| eof)?;
    Ok(reader.finish())
}

/// Replaces what legitimately differs between servers: CAS numbers in `VALUE` lines, the
/// `VERSION` string and `STAT` values. Data blocks are copied verbatim.
/// A meta command's reply line (`ME` from `me`, the two-letter codes from the others).
fn is_meta_reply(line: &[u8]) -> bool {
    let code = line.split(|&c| c == b' ').next().unwrap_or(line);
    matches!(code, b"VA" | b"HD" | b"EN" | b"NS" | b"EX" | b"NF" | b"ME")
}

/// Masks the clock- and CAS-dependent return flags of a meta reply: `c<n>`, `t<n>` (but
/// not `t-1`), `l<n>`, and `exp=`/`la=`/`cas=` of `me` (but not `exp=-1`).
fn normalise_meta(line: &[u8], out: &mut Vec<u8>) {
    let digits = |t: &[u8]| !t.is_empty() && t.iter().all(u8::is_ascii_digit);
    for (i, tok) in line.split(|&c| c == b' ').enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        let masked: Option<&[u8]> = match tok {
            _ if i < 2 && line.starts_with(b"ME ") => None,
            [b'c', rest @ ..] if digits(rest) => Some(b"c<cas>"),
            [b't', rest @ ..] if digits(rest) => Some(b"t<ttl>"),
            [b'l', rest @ ..] if digits(rest) => Some(b"l<secs>"),
            _ if tok.starts_with(b"cas=") => Some(b"cas=<cas>"),
            _ if tok.starts_with(b"la=") => Some(b"la=<secs>"),
            _ if tok.starts_with(b"exp=") && tok != b"exp=-1" => Some(b"exp=<ttl>"),
            _ => None,
        };
        out.extend_from_slice(masked.unwrap_or(tok));
    }
}

fn normalise(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut pos = 0;
    while pos < raw.len() {
        let rest = &raw[pos..];
        let Some(eol) = find(rest, b"\r\n") else {
            out.extend_from_slice(rest);
            break;
        };
        let line = &rest[..eol];
        pos += eol + 2;
        if line.starts_with(b"VALUE ") {
            let toks: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
            if toks.len() == 5 {
                for t in &toks[..4] {
                    out.extend_from_slice(t);
                    out.push(b' ');
                }
                out.extend_from_slice(b"<cas>");
            } else {
                out.extend_from_slice(line);
            }
            out.extend_from_slice(b"\r\n");
            let len = toks
                .get(3)
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse::<usize>().ok());
            if let Some(len) = len {
                let end = (pos + len + 2).min(raw.len());
                out.extend_from_slice(&raw[pos..end]);
                pos = end;
            }
        } else if is_meta_reply(line) {
            normalise_meta(line, &mut out);
            out.extend_from_slice(b"\r\n");
            if let Some(len) = line.strip_prefix(b"VA ").and_then(|r| {
                let n = r.split(|&c| c == b' ').next()?;
                std::str::from_utf8(n).ok()?.parse::<usize>().ok()
            }) {
                let end = (pos + len + 2).min(raw.len());
                out.extend_from_slice(&raw[pos..end]);
                pos = end;
            }
        } else if line.starts_with(b"VERSION ") {
            out.extend_from_slice(b"VERSION <version>\r\n");
        } else if let Some(rest) = line.strip_prefix(b"STAT ") {
            let name = rest.split(|&c| c == b' ').next().unwrap_or(rest);
            out.extend_from_slice(b"STAT ");
            out.extend_from_slice(name);
            out.extend_from_slice(b" <value>\r\n");
        } else {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn describe_diff(script: &str, mode: Mode, want: &[u8], got: &[u8]) -> String {
    let at = want.iter().zip(got).take_while(|(a, b)| a == b).count();
    let ctx = |b: &[u8]| {
        let lo = at.saturating_sub(160);
        let hi = (at + 160).min(b.len());
        format!(
            "{}[>>>]{}",
            escape(&b[lo.min(b.len())..at.min(b.len())]),
            escape(b.get(at..hi).unwrap_or(&[]))
        )
    };
    format!(
        "MISMATCH in {script} ({mode:?}): first difference at byte {at} \
         (memcached {} bytes, candidate {} bytes)\n  memcached: …{}\n  candidate: …{}",
        want.len(),
        got.len(),
        ctx(want),
        ctx(got)
    )
}

/// With DIFF_DUMP=<dir>, writes memcached's raw one-write transcripts there (for reviewing
/// what a new script actually exercises).
fn dump(name: &str, mode: Mode, raw: &[u8]) {
    if let (Some(dir), Mode::OneWrite) = (std::env::var_os("DIFF_DUMP"), mode) {
        let path = Path::new(&dir).join(format!("{name}.out"));
        if let Err(e) = std::fs::write(&path, escape(raw).replace("\\n", "\\n\n")) {
            eprintln!("DIFF_DUMP {}: {e}", path.display());
        }
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load_corpus() -> Vec<Script> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    // DIFF_FILTER=substring runs only matching scripts (quick loops while writing a script).
    let filter = std::env::var("DIFF_FILTER").unwrap_or_default();
    files
        .iter()
        .filter(|p| p.to_string_lossy().contains(&filter))
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            let text = std::fs::read_to_string(p).expect("read corpus script");
            parse_script(&name, &text).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

#[test]
fn corpus_matches_memcached() {
    if !Path::new(MEMCACHED).is_file() {
        if std::env::var_os("CI").is_some() {
            panic!("{MEMCACHED} is missing: the differential test needs the oracle in CI");
        }
        eprintln!("\n!!!!! SKIPPING differential test: {MEMCACHED} not installed !!!!!\n");
        return;
    }
    let candidate = common::target_binary();
    let scripts = load_corpus();
    assert!(
        !scripts.is_empty(),
        "no scripts in {}",
        corpus_dir().display()
    );

    let mut jobs: Vec<(usize, Mode)> = Vec::new();
    for i in 0..scripts.len() {
        jobs.push((i, Mode::OneWrite));
        for s in SEEDS {
            jobs.push((i, Mode::Split(s)));
        }
    }
    let jobs = Mutex::new(jobs.into_iter());
    let failures = Mutex::new(Vec::<String>::new());
    // Two workers: one per core; each job runs two short-lived servers one after the other.
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let job = jobs.lock().ok().and_then(|mut j| j.next());
                let Some((i, mode)) = job else { return };
                let script = &scripts[i];
                let outcome = replay(Path::new(MEMCACHED), script, mode)
                    .and_then(|want| replay(&candidate, script, mode).map(|got| (want, got)));
                let msg = match outcome {
                    Ok((want, got)) => {
                        dump(&script.name, mode, &want);
                        let (w, g) = (normalise(&want), normalise(&got));
                        (w != g).then(|| describe_diff(&script.name, mode, &w, &g))
                    }
                    Err(e) => Some(format!("ERROR in {} ({mode:?}): {e}", script.name)),
                };
                if let Some(m) = msg {
                    if let Ok(mut f) = failures.lock() {
                        f.push(m);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} of {} replays differ from memcached:\n\n{}",
        failures.len(),
        scripts.len() * (SEEDS.len() + 1),
        failures.join("\n\n")
    );
}

#[test]
fn normalise_masks_only_the_agreed_fields() {
    let raw = b"VALUE k 5 3 123\r\nVALUE\r\nVALUE k 0 1\r\nx\r\nVERSION 1.6.18\r\nSTAT pid 42\r\nSTAT version 1.6.18 x\r\nEND\r\n";
    let want = b"VALUE k 5 3 <cas>\r\nVALUE\r\nVALUE k 0 1\r\nx\r\nVERSION <version>\r\nSTAT pid <value>\r\nSTAT version <value>\r\nEND\r\n";
    assert_eq!(escape(&normalise(raw)), escape(want));
    // A data block that looks like a reply line is not normalised.
    let raw = b"VALUE k 0 16\r\nVERSION 9.9.9\r\nxx\r\nEND\r\n";
    assert_eq!(normalise(raw), raw.to_vec());
    let raw = b"HD c123 t-1 t30 kc1 l2 Oc9\r\nVA 7 c5\r\nHD c1 t\r\nME c1 exp=-1 la=3 cas=9 fetch=no\r\nEN\r\n";
    let want = b"HD c<cas> t-1 t<ttl> kc1 l<secs> Oc9\r\nVA 7 c<cas>\r\nHD c1 t\r\nME c1 exp=-1 la=<secs> cas=<cas> fetch=no\r\nEN\r\n";
    assert_eq!(escape(&normalise(raw)), escape(want));
}

#[test]
fn script_escapes_expand() {
    let mut vars = HashMap::new();
    vars.insert("c".to_string(), "77".to_string());
    let got = unescape(r"a\r\n\t\0\\\x41\{3:ab}${c}$", &vars).expect("valid escapes");
    assert_eq!(got, b"a\r\n\t\0\\Aababab77$".to_vec());
    let nested = unescape(r"\{2:\{3:k}\x20}.${c}", &vars).expect("nested repeat");
    assert_eq!(nested, b"kkk kkk .77".to_vec());
    assert!(unescape(r"\q", &vars).is_err());
    assert!(unescape("${nope}", &vars).is_err());
}
