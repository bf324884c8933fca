//! What the soak saw, as it happened: every request's outcome with its
//! time, the servers' memory and CPU every second, and the faults.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The kinds of request a device makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Auth,
    CheckIn,
    Report,
    Download,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::CheckIn, Op::Report, Op::Download, Op::Auth];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Auth => "auth",
            Op::CheckIn => "check-in",
            Op::Report => "status report",
            Op::Download => "download",
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// No connection (refused: nothing listens).
    Connect,
    /// No answer within the client's timeout.
    Timeout,
    /// The connection broke after the request went out, or the answer was
    /// unreadable.
    Broken,
    /// 401: the token was refused; the device authenticates again.
    Unauthorized,
    /// Any other status that is not the expected one.
    Status(u16),
    /// A 200 whose content is wrong (a download's digest).
    BadAnswer,
}

impl Failure {
    pub fn label(self) -> String {
        match self {
            Failure::Connect => "connect".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Broken => "connection broken".into(),
            Failure::Unauthorized => "401 (re-auth)".into(),
            Failure::Status(code) => format!("HTTP {code}"),
            Failure::BadAnswer => "bad answer".into(),
        }
    }
}

/// One request, as seen by the client. Times are milliseconds since the
/// start of the soak; latency in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub sent_ms: u32,
    pub latency_us: u32,
    pub op: Op,
    pub instance: u8,
    pub failure: Option<Failure>,
}

/// One second's look at a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at_ms: u32,
    /// 0, 1: the server instances; 2: this bench (the load client).
    pub process: usize,
    pub pid: u32,
    pub rss_kib: u64,
    pub cpu_secs: f64,
}

/// A fault the soak injected.
#[derive(Debug, Clone)]
pub struct FaultEvent {
    pub name: String,
    pub at_ms: u32,
    /// How long the action took: the restart command, or from `kill -9`
    /// to the new process's "ready" line.
    pub took: Duration,
    pub error: Option<String>,
    /// Other clients connected to PostgreSQL just before a restart.
    pub others: Vec<(String, i64)>,
}

/// Everything recorded, behind one lock (a few hundred entries a second).
#[derive(Debug)]
pub struct Recorder {
    pub start: Instant,
    inner: Mutex<Recorded>,
}

#[derive(Debug, Default, Clone)]
pub struct Recorded {
    pub outcomes: Vec<Outcome>,
    pub samples: Vec<Sample>,
    /// The whole machine's busy share over each second (all cores, 0–1):
    /// other work on the machine shows here.
    pub machine_busy: Vec<(u32, f64)>,
    pub faults: Vec<FaultEvent>,
    /// Dispatch delays over a second (device due, no free slot): count and
    /// the largest, in milliseconds.
    pub late_dispatches: u64,
    pub max_dispatch_delay_ms: u32,
    /// Targeted devices whose `success` was acknowledged, and when the last
    /// one was.
    pub successes: u64,
    pub last_success_ms: Option<u32>,
    /// Cumulative counters of the soak schema's tables from
    /// `pg_stat_user_tables`, every few seconds: (time, scans, rows written).
    pub db_stats: Vec<(u32, i64, i64)>,
    /// Things a correct server never does, as seen by a device.
    pub anomalies: Vec<String>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            inner: Mutex::default(),
        }
    }

    pub fn ms(&self, at: Instant) -> u32 {
        at.saturating_duration_since(self.start).as_millis() as u32
    }

    fn with<T>(&self, f: impl FnOnce(&mut Recorded) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner)
    }

    pub fn outcome(&self, op: Op, instance: usize, sent: Instant, failure: Option<Failure>) {
        let outcome = Outcome {
            sent_ms: self.ms(sent),
            latency_us: sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
            op,
            instance: instance as u8,
            failure,
        };
        self.with(|r| r.outcomes.push(outcome));
    }

    pub fn sample(&self, sample: Sample) {
        self.with(|r| r.samples.push(sample));
    }

    pub fn machine_busy(&self, at_ms: u32, busy: f64) {
        self.with(|r| r.machine_busy.push((at_ms, busy)));
    }

    pub fn fault(&self, event: FaultEvent) {
        self.with(|r| r.faults.push(event));
    }

    pub fn dispatch_delay(&self, delay: Duration) {
        let ms = delay.as_millis().min(u128::from(u32::MAX)) as u32;
        self.with(|r| {
            r.late_dispatches += 1;
            r.max_dispatch_delay_ms = r.max_dispatch_delay_ms.max(ms);
        });
    }

    pub fn success(&self, at: Instant) {
        let ms = self.ms(at);
        self.with(|r| {
            r.successes += 1;
            r.last_success_ms = Some(r.last_success_ms.map_or(ms, |l| l.max(ms)));
        });
    }

    pub fn db_stats(&self, at: Instant, scans: i64, writes: i64) {
        let ms = self.ms(at);
        self.with(|r| r.db_stats.push((ms, scans, writes)));
    }

    pub fn anomaly(&self, what: String) {
        self.with(|r| r.anomalies.push(what));
    }

    pub fn snapshot(&self) -> Recorded {
        self.with(|r| r.clone())
    }
}
