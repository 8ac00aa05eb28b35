//! man/repcached.1 against the option parser and `repcached -h`: every option and extended
//! option is documented in both, with the parser's own wording, and nothing else is.
//!
//! The man page is hand-written roff, so this test reads it the way a reader does: the tag of
//! each `.TP` entry under OPTIONS names the option, the paragraph below it describes it.

use std::collections::BTreeMap;
use std::process::Command;

use repcached::config::{self, ExtArg, EXTENDED, OPTIONS};

const MAN_PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man/repcached.1");

/// One documented option: its value placeholder (if any) and its description, plain text.
#[derive(Debug, Default, Clone)]
struct Entry {
    value: Option<String>,
    text: String,
}

/// What a document says about the options: flags (`-p`, `--port`) and `-o` names.
#[derive(Debug, Default)]
struct Documented {
    flags: BTreeMap<String, Entry>,
    extended: BTreeMap<String, Entry>,
}

fn man_source() -> String {
    std::fs::read_to_string(MAN_PAGE).unwrap_or_else(|e| panic!("read {MAN_PAGE}: {e}"))
}

fn help_output() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_repcached"))
        .arg("-h")
        .env_remove("RUST_LOG")
        .output()
        .expect("start the repcached binary");
    assert_eq!(out.status.code(), Some(0), "repcached -h failed");
    String::from_utf8(out.stdout).expect("-h prints UTF-8")
}

/// Collapses every run of white space into one space.
fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Turns one line of roff text into what the reader sees (fonts dropped, escapes resolved).
fn deroff(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('f') => {
                // \fB, \fI, \fR, \fP: a font change, nothing printed.
                chars.next();
            }
            Some('(') => {
                let name: String = chars.by_ref().take(2).collect();
                out.push_str(match name.as_str() {
                    "aq" => "'",
                    "dq" => "\"",
                    _ => "?",
                });
            }
            Some('-') => out.push('-'),
            Some('e') => out.push('\\'),
            Some('&') => {}
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Splits a macro's arguments as roff does: on spaces, except inside double quotes.
fn macro_args(rest: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    args
}

/// The visible text of a line: a text line, or the arguments of a font macro (`.B`, `.BR`...).
/// Other requests (`.PP`, `.RS`...) print nothing themselves.
fn visible(line: &str) -> Option<String> {
    if let Some(req) = line.strip_prefix('.') {
        let (name, rest) = req.split_once(' ').unwrap_or((req, ""));
        let font_macro = matches!(name, "B" | "I" | "BR" | "RB" | "BI" | "IB" | "IR" | "RI");
        return font_macro.then(|| {
            // Alternating-font macros join their arguments without spaces.
            let joiner = if name.len() == 2 { "" } else { " " };
            deroff(&macro_args(rest).join(joiner))
        });
    }
    Some(deroff(line))
}

/// Splits an option tag such as `-p, --port=num` or `-D char` into (name, value) pairs. The
/// value is written once, after the last name, and belongs to every name of the entry.
fn flag_tag(tag: &str) -> Vec<(String, Option<String>)> {
    let mut parts: Vec<(String, Option<String>)> = tag
        .split(", ")
        .map(|part| {
            let part = part.trim();
            match part.find(['=', ' ']) {
                Some(i) => (
                    part[..i].to_string(),
                    Some(part[i + 1..].trim().to_string()),
                ),
                None => (part.to_string(), None),
            }
        })
        .collect();
    let value = parts.iter().find_map(|(_, v)| v.clone());
    for (_, v) in &mut parts {
        if v.is_none() {
            v.clone_from(&value);
        }
    }
    parts
}

/// Splits an extended-option tag: `hashpower=n`, `slab_automove[=0|1|2]`, `modern`.
fn ext_tag(tag: &str) -> (String, Option<String>) {
    let tag = tag.trim();
    match tag.find(['=', '[']) {
        Some(i) => {
            let value = tag[i..]
                .trim_start_matches(['[', '='])
                .trim_end_matches(']');
            (tag[..i].to_string(), Some(value.to_string()))
        }
        None => (tag.to_string(), None),
    }
}

/// Reads the `.TP` entries of the man page's OPTIONS section.
fn parse_man(src: &str) -> Documented {
    let mut doc = Documented::default();
    let mut in_options = false;
    let mut in_extended = false;
    // (names of the entry being read, whether it is an extended option)
    let mut current: Option<(Vec<String>, bool)> = None;
    let mut expect_tag = false;
    for line in src.lines() {
        if line.starts_with(".\\\"") {
            continue;
        }
        if let Some(title) = line.strip_prefix(".SH ") {
            in_options = title.trim_matches('"') == "OPTIONS";
            in_extended = false;
            current = None;
            continue;
        }
        if let Some(title) = line.strip_prefix(".SS ") {
            in_extended = title.trim_matches('"') == "Extended options";
            current = None;
            continue;
        }
        if !in_options {
            continue;
        }
        if line == ".TP" {
            expect_tag = true;
            current = None;
            continue;
        }
        let Some(text) = visible(line) else {
            continue;
        };
        if expect_tag {
            expect_tag = false;
            let mut names = Vec::new();
            if in_extended {
                let (name, value) = ext_tag(&text);
                doc.extended.insert(
                    name.clone(),
                    Entry {
                        value,
                        text: String::new(),
                    },
                );
                names.push(name);
            } else {
                for (name, value) in flag_tag(&text) {
                    doc.flags.insert(
                        name.clone(),
                        Entry {
                            value,
                            text: String::new(),
                        },
                    );
                    names.push(name);
                }
            }
            current = Some((names, in_extended));
            continue;
        }
        if let Some((names, ext)) = &current {
            let map = if *ext {
                &mut doc.extended
            } else {
                &mut doc.flags
            };
            for n in names {
                if let Some(e) = map.get_mut(n) {
                    e.text.push(' ');
                    e.text.push_str(&text);
                }
            }
        }
    }
    for e in doc.flags.values_mut().chain(doc.extended.values_mut()) {
        e.text = normalize(&e.text);
    }
    doc
}

/// Reads `repcached -h`: a 30-column left side naming the option, its description to the
/// right, continuation lines indented to the description column.
fn parse_help(help: &str) -> Documented {
    const COL: usize = 30;
    let mut doc = Documented::default();
    let mut extended = false;
    let mut started = false;
    let mut current: Vec<String> = Vec::new();
    for line in help.lines() {
        if line.starts_with("Usage:") {
            started = true;
            continue;
        }
        if line.starts_with("Extended options") {
            extended = true;
            current.clear();
            continue;
        }
        if !started || line.trim().is_empty() || !line.starts_with(' ') {
            current.clear();
            continue;
        }
        let map = if extended {
            &mut doc.extended
        } else {
            &mut doc.flags
        };
        if line.len() > COL && line[..COL].trim().is_empty() {
            for n in &current {
                if let Some(e) = map.get_mut(n) {
                    e.text.push(' ');
                    e.text.push_str(line.trim());
                }
            }
            continue;
        }
        let (left, desc) = match line.get(COL - 1..COL) {
            Some(" ") if line.len() > COL => (&line[..COL], &line[COL..]),
            _ => (line, ""),
        };
        let left = left.trim().replace(['<', '>'], "");
        current.clear();
        let parsed = if extended {
            vec![ext_tag(&left)]
        } else {
            flag_tag(&left)
        };
        for (name, value) in parsed {
            map.insert(
                name.clone(),
                Entry {
                    value,
                    text: desc.trim().to_string(),
                },
            );
            current.push(name);
        }
    }
    for e in doc.flags.values_mut().chain(doc.extended.values_mut()) {
        e.text = normalize(&e.text);
    }
    doc
}

fn ext_value(arg: ExtArg) -> Option<String> {
    match arg {
        ExtArg::None => None,
        ExtArg::Required(v) | ExtArg::Optional(v) => Some(v.to_string()),
    }
}

/// Every way the document can fall short of the parser's tables, as readable lines.
/// `exact` asks for the description to be the help text and nothing more (`-h`); otherwise
/// it must contain it (the man page may say more).
fn shortfalls(what: &str, doc: &Documented, exact: bool) -> Vec<String> {
    let mut bad = Vec::new();
    let mut check = |name: String, entry: Option<&Entry>, value: Option<String>, help: &str| {
        let Some(e) = entry else {
            bad.push(format!("{what}: {name} is not documented"));
            return;
        };
        if e.value != value {
            bad.push(format!(
                "{what}: {name} takes {value:?} in the parser but is shown with {:?}",
                e.value
            ));
        }
        let help = normalize(help);
        let ok = if exact {
            e.text == help
        } else {
            e.text.contains(&help)
        };
        if !ok {
            bad.push(format!(
                "{what}: {name} is not described with the parser's words\n  parser: {help}\n  {what}: {}",
                e.text
            ));
        }
    };
    for o in OPTIONS {
        let value = o.value.map(str::to_string);
        if !o.short.is_empty() {
            let name = format!("-{}", o.short);
            check(name.clone(), doc.flags.get(&name), value.clone(), o.help);
        }
        if !o.long.is_empty() {
            let name = format!("--{}", o.long);
            check(name.clone(), doc.flags.get(&name), value.clone(), o.help);
        }
    }
    for e in EXTENDED {
        check(
            format!("-o {}", e.name),
            doc.extended.get(e.name),
            ext_value(e.arg),
            e.help,
        );
    }
    // The other way round: a documented option the parser does not know is stale.
    for name in doc.flags.keys() {
        let known = OPTIONS.iter().any(|o| {
            (!o.short.is_empty() && *name == format!("-{}", o.short))
                || (!o.long.is_empty() && *name == format!("--{}", o.long))
        });
        if !known {
            bad.push(format!(
                "{what}: documents {name}, which the parser does not define"
            ));
        }
    }
    for name in doc.extended.keys() {
        if !EXTENDED.iter().any(|e| e.name == name) {
            bad.push(format!(
                "{what}: documents -o {name}, which the parser does not accept"
            ));
        }
    }
    bad
}

#[test]
fn man_page_documents_every_option_in_the_help_wording() {
    let doc = parse_man(&man_source());
    let bad = shortfalls("man page", &doc, false);
    assert!(bad.is_empty(), "man/repcached.1:\n{}", bad.join("\n"));
    // Every long option of the parser, by the library's own list, has its entry.
    for long in config::long_options() {
        assert!(doc.flags.contains_key(&format!("--{long}")), "--{long}");
    }
}

#[test]
fn help_documents_every_option_in_the_parser_wording() {
    let doc = parse_help(&help_output());
    let bad = shortfalls("-h", &doc, true);
    assert!(bad.is_empty(), "repcached -h:\n{}", bad.join("\n"));
}

#[test]
fn man_page_has_the_sections_a_reader_looks_for() {
    let src = man_source();
    let sections: Vec<String> = src
        .lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|t| t.trim_matches('"').to_string())
        .collect();
    for want in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "REPLICATION",
        "SIGNALS",
        "FILES",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(sections.iter().any(|s| s == want), "no {want} section");
    }
    let th = src
        .lines()
        .find(|l| l.starts_with(".TH "))
        .expect("a .TH line");
    assert!(
        th.contains(&format!("\"repcached {}\"", repcached::VERSION)),
        "the .TH line names another version: {th}"
    );
}

/// The statuses EXIT STATUS lists, with their first line of explanation.
fn exit_statuses(src: &str) -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    let mut in_section = false;
    let mut lines = src.lines();
    while let Some(line) = lines.next() {
        if let Some(t) = line.strip_prefix(".SH ") {
            in_section = t.trim_matches('"') == "EXIT STATUS";
            continue;
        }
        if in_section && line == ".TP" {
            let tag = lines.next().and_then(visible).unwrap_or_default();
            let body = lines.next().and_then(visible).unwrap_or_default();
            if let Ok(code) = tag.trim().parse::<i32>() {
                out.insert(code, body);
            }
        }
    }
    out
}

#[test]
fn man_page_exit_statuses_are_the_ones_the_binary_uses() {
    let codes = exit_statuses(&man_source());
    let listed: Vec<i32> = codes.keys().copied().collect();
    let mut want = vec![0, 1, config::EXIT_USAGE, repcached::daemon::EXIT_OSERR];
    want.sort_unstable();
    assert_eq!(listed, want, "EXIT STATUS lists {codes:?}");
    let usage = codes.get(&config::EXIT_USAGE).cloned().unwrap_or_default();
    assert!(usage.contains("usage"), "{usage}");
    // And the binary agrees: a bad value is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_repcached"))
        .args(["-m", "lots"])
        .env_remove("RUST_LOG")
        .output()
        .expect("start the repcached binary");
    assert_eq!(out.status.code(), Some(config::EXIT_USAGE));
}

#[test]
fn the_readers_are_not_fooled_by_roff() {
    assert_eq!(deroff(r"\fB\-\-port\fR=\fInum\fR"), "--port=num");
    assert_eq!(deroff(r"printf \(aqstats\er\en\(aq"), r"printf 'stats\r\n'");
    assert_eq!(
        visible(r#".BR "repcached \-h" ."#).as_deref(),
        Some("repcached -h.")
    );
    assert_eq!(visible(".PP"), None);
    assert_eq!(
        flag_tag("-p, --port=num"),
        vec![
            ("-p".to_string(), Some("num".to_string())),
            ("--port".to_string(), Some("num".to_string()))
        ]
    );
    assert_eq!(
        flag_tag("-D char"),
        vec![("-D".into(), Some("char".into()))]
    );
    assert_eq!(
        ext_tag("slab_automove[=0|1|2]"),
        ("slab_automove".into(), Some("0|1|2".into()))
    );
    assert_eq!(ext_tag("modern"), ("modern".into(), None));
    // A man page missing one option is caught, with the option named.
    let src = man_source();
    let cut = src.replacen(".TP\n\\fB\\-\\-cluster\\-name\\fR=\\fIname\\fR\n", "", 1);
    assert_ne!(cut, src, "the --cluster-name entry moved; update this test");
    let bad = shortfalls("man page", &parse_man(&cut), false);
    assert!(
        bad.iter()
            .any(|b| b.contains("--cluster-name is not documented")),
        "{bad:?}"
    );
}
