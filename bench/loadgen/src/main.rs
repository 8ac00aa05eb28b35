//! mcload: a memcached text-protocol load generator (get/set over mio, one poll per
//! client thread) that reports throughput, latency percentiles, errors and its own CPU.

mod args;
mod flags;
mod proto;
mod worker;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Barrier;
use std::time::Instant;

use args::{Format, Options};
use worker::{ThreadStats, Worker};

/// The merged result of every thread.
struct Summary {
    s: ThreadStats,
    secs: f64,
    threads: usize,
    /// CPU of the whole process over every phase (connect, preload, warm-up, measured):
    /// lets a harness subtract the client from machine-wide CPU use.
    process_cpu: f64,
}

impl Summary {
    fn pct_us(&self, q: f64) -> f64 {
        if self.s.hist.is_empty() {
            return 0.0;
        }
        self.s.hist.value_at_quantile(q) as f64 / 1000.0
    }

    fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.s.ops as f64 / self.secs
        } else {
            0.0
        }
    }

    fn cpu(&self) -> f64 {
        (self.s.cpu_user + self.s.cpu_sys).as_secs_f64()
    }

    /// Every figure as (name, value), in the order printed.
    fn fields(&self, o: &Options) -> Vec<(&'static str, String)> {
        let s = &self.s;
        let f2 = |v: f64| format!("{v:.2}");
        let f3 = |v: f64| format!("{v:.3}");
        vec![
            ("ops", s.ops.to_string()),
            ("secs", f3(self.secs)),
            ("ops_per_sec", format!("{:.0}", self.ops_per_sec())),
            ("gets", s.gets.to_string()),
            ("sets", s.sets.to_string()),
            ("hits", s.hits.to_string()),
            ("misses", s.misses.to_string()),
            ("errors", s.errors.to_string()),
            ("proto_errors", s.proto_errors.to_string()),
            ("conns_lost", s.conns_lost.to_string()),
            ("setup_errors", s.setup_errors.to_string()),
            ("timed_out", u8::from(s.timed_out).to_string()),
            ("p50_us", f2(self.pct_us(0.50))),
            ("p99_us", f2(self.pct_us(0.99))),
            ("p999_us", f2(self.pct_us(0.999))),
            ("max_us", f2(s.hist.max() as f64 / 1000.0)),
            ("mean_us", f2(s.hist.mean() / 1000.0)),
            ("client_user_s", f3(s.cpu_user.as_secs_f64())),
            ("client_sys_s", f3(s.cpu_sys.as_secs_f64())),
            (
                "client_cpu_util",
                f3(if self.secs > 0.0 {
                    self.cpu() / self.secs
                } else {
                    0.0
                }),
            ),
            (
                "client_cpu_ns_per_op",
                format!(
                    "{:.0}",
                    if s.ops > 0 {
                        self.cpu() * 1e9 / s.ops as f64
                    } else {
                        0.0
                    }
                ),
            ),
            ("client_total_cpu_s", f3(self.process_cpu)),
            ("all_ops", s.all_ops.to_string()),
            ("preload_ops", s.preload_ops.to_string()),
            ("threads", self.threads.to_string()),
            ("conns", o.conns.to_string()),
            ("pipeline", o.pipeline.to_string()),
            ("keys", o.keys.to_string()),
            ("key_size", o.key_size.to_string()),
            ("value_size", o.value_size.to_string()),
            ("get_ratio", format!("{}", o.get_ratio)),
        ]
    }

    fn ok(&self) -> bool {
        self.s.errors == 0
            && self.s.proto_errors == 0
            && self.s.conns_lost == 0
            && self.s.setup_errors == 0
            && !self.s.timed_out
    }
}

fn render(sum: &Summary, o: &Options) -> String {
    let fields = sum.fields(o);
    match o.format {
        Format::Kv => fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        // Every value is a plain number, so it needs no quoting.
        Format::Json => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Format::Text => {
            let s = &sum.s;
            format!(
                "{} ops in {:.3} s = {:.0} ops/s ({} gets: {} hits, {} misses; {} sets)\n\
                 latency us: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}\n\
                 errors: {} (protocol {}, connections lost {}, preload/warm-up {}){}\n\
                 client cpu: user {:.3} s + sys {:.3} s = {:.0}% of one core over {} thread(s)\n\
                 replies received in all phases: {} (preload {})",
                s.ops,
                sum.secs,
                sum.ops_per_sec(),
                s.gets,
                s.hits,
                s.misses,
                s.sets,
                sum.pct_us(0.50),
                sum.pct_us(0.99),
                sum.pct_us(0.999),
                s.hist.max() as f64 / 1000.0,
                s.hist.mean() / 1000.0,
                s.errors,
                s.proto_errors,
                s.conns_lost,
                s.setup_errors,
                if s.timed_out { "; TIMED OUT" } else { "" },
                s.cpu_user.as_secs_f64(),
                s.cpu_sys.as_secs_f64(),
                if sum.secs > 0.0 {
                    100.0 * sum.cpu() / sum.secs
                } else {
                    0.0
                },
                sum.threads,
                s.all_ops,
                s.preload_ops,
            )
        }
    }
}

fn merge(into: &mut ThreadStats, t: ThreadStats) -> Result<(), String> {
    into.ops += t.ops;
    into.gets += t.gets;
    into.sets += t.sets;
    into.hits += t.hits;
    into.misses += t.misses;
    into.errors += t.errors;
    into.proto_errors += t.proto_errors;
    into.conns_lost += t.conns_lost;
    into.all_ops += t.all_ops;
    into.preload_ops += t.preload_ops;
    into.setup_errors += t.setup_errors;
    into.timed_out |= t.timed_out;
    into.elapsed = into.elapsed.max(t.elapsed);
    into.cpu_user += t.cpu_user;
    into.cpu_sys += t.cpu_sys;
    into.hist
        .add(&t.hist)
        .map_err(|e| format!("histogram: {e}"))
}

/// User + system CPU seconds of this process so far, all threads, reaped ones included.
fn process_cpu() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn resolve(o: &Options) -> Result<SocketAddr, String> {
    (o.host.as_str(), o.port)
        .to_socket_addrs()
        .map_err(|e| format!("{}:{}: {e}", o.host, o.port))?
        .next()
        .ok_or_else(|| format!("{}:{}: no address", o.host, o.port))
}

fn run(o: &Options) -> Result<Summary, String> {
    let addr = resolve(o)?;
    let deadline = Instant::now() + o.timeout;
    let barrier = Barrier::new(o.threads);
    let results: Vec<Result<ThreadStats, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..o.threads)
            .map(|id| {
                let w = Worker {
                    id,
                    conns: o.conns / o.threads + usize::from(id < o.conns % o.threads),
                    opts: o,
                    addr,
                    barrier: &barrier,
                    deadline,
                };
                scope.spawn(move || w.run())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect()
    });
    let mut total: Option<ThreadStats> = None;
    for r in results {
        let t = r?;
        match total.as_mut() {
            None => total = Some(t),
            Some(acc) => merge(acc, t)?,
        }
    }
    let s = total.ok_or("no client threads")?;
    // Duration runs: the phase length. --ops runs: until the slowest thread's last reply.
    let secs = s.elapsed.as_secs_f64();
    Ok(Summary {
        s,
        secs,
        threads: o.threads,
        process_cpu: process_cpu(),
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let opts = match args::parse(&argv) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{}", args::USAGE);
            return;
        }
        Err(e) => {
            eprintln!("mcload: {e}\n{}", args::USAGE);
            std::process::exit(64);
        }
    };
    match run(&opts) {
        Ok(sum) => {
            println!("{}", render(&sum, &opts));
            // Figures from a run with errors are still printed, but the exit status
            // tells a harness not to trust them.
            if !sum.ok() {
                std::process::exit(2);
            }
        }
        Err(e) => {
            eprintln!("mcload: {e}");
            std::process::exit(1);
        }
    }
}
