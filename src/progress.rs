//! Progress printers: `plain` (stable, greppable lines for CI logs, in BuildKit's
//! style), `tty` (a live view of the running steps), `rawjson` (one JSON event per
//! line) and `quiet`. All write to standard error; standard output is for results.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use strata_solver::progress::{ProgressEvent, ProgressSink};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cli::ProgressMode;
use crate::units::human_bytes;

/// Resolve `auto` to what the terminal supports.
pub fn effective_mode(mode: ProgressMode, quiet: bool) -> ProgressMode {
    if quiet {
        return ProgressMode::Quiet;
    }
    match mode {
        ProgressMode::Auto => {
            use std::io::IsTerminal;
            if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
                ProgressMode::Tty
            } else {
                ProgressMode::Plain
            }
        }
        m => m,
    }
}

/// Consume events until the channel closes; returns a summary of what ran.
/// The progress printer of one command: events go to [`Progress::sink`], and
/// [`Progress::finish`] waits for the printer to drain them (once every clone of the
/// sink is dropped) and gives the summary.
pub struct Progress {
    sink: ProgressSink,
    printer: tokio::task::JoinHandle<Summary>,
}

impl Progress {
    pub fn start(mode: ProgressMode) -> Progress {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Progress { sink: ProgressSink::new(tx), printer: tokio::spawn(print(mode, rx)) }
    }

    pub fn sink(&self) -> &ProgressSink {
        &self.sink
    }

    pub async fn finish(self) -> Summary {
        drop(self.sink);
        self.printer.await.unwrap_or_default()
    }
}

pub async fn print(mode: ProgressMode, mut rx: UnboundedReceiver<ProgressEvent>) -> Summary {
    let start = Instant::now();
    let mut numbers: HashMap<String, usize> = HashMap::new();
    let mut summary = Summary::default();
    let mut cached: std::collections::HashSet<String> = Default::default();
    let mut announced: std::collections::HashSet<String> = Default::default();
    // Warnings wait until the live view's last frame, or it would draw over them.
    let mut warnings: Vec<String> = Vec::new();
    let mut tty = if mode == ProgressMode::Tty { Some(crate::tty::TtyView::new()) } else { None };
    let stderr = std::io::stderr();
    // The live view redraws on a timer too: running steps' timers tick, and an event
    // that came within the view's redraw throttle still shows while nothing else happens.
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let next = match tty.as_mut() {
            Some(t) => tokio::select! {
                ev = rx.recv() => ev,
                _ = ticker.tick() => {
                    t.tick();
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(ev) = next else { break };
        match &ev {
            ProgressEvent::Cached { name, vertex } if is_step(name) => {
                summary.cached += 1;
                cached.insert(vertex.clone());
            }
            ProgressEvent::Done { name, vertex, .. } if is_step(name) => {
                summary.ran += 1;
                // An imported record refused after all: the step ran.
                if cached.remove(vertex) {
                    summary.cached -= 1;
                }
            }
            ProgressEvent::Failed { name, .. } if is_step(name) => summary.failed += 1,
            ProgressEvent::CacheMiss { name, dry_run: true, .. } if is_step(name) => summary.would_run += 1,
            _ => {}
        }
        match mode {
            ProgressMode::Quiet => {
                if let ProgressEvent::Warning { message } = &ev {
                    let _ = writeln!(stderr.lock(), "{message}");
                }
            }
            ProgressMode::Rawjson => {
                let mut e = stderr.lock();
                let _ = serde_json::to_writer(&mut e, &ev);
                let _ = writeln!(e);
            }
            ProgressMode::Tty => {
                if let ProgressEvent::Warning { message } = &ev {
                    warnings.push(message.clone());
                } else if let Some(t) = tty.as_mut() {
                    t.event(&ev);
                }
            }
            _ if matches!(ev, ProgressEvent::Warning { .. }) => {
                if let ProgressEvent::Warning { message } = &ev {
                    let _ = writeln!(stderr.lock(), "{message}");
                }
            }
            _ => {
                let next = numbers.len() + 1;
                let vertex = vertex_of(&ev).to_string();
                let n = *numbers.entry(vertex).or_insert(next);
                let mut e = stderr.lock();
                let _ = match &ev {
                    // A step whose miss was explained has shown its name already.
                    ProgressEvent::Started { name, vertex } if !announced.contains(vertex) => {
                        writeln!(e, "#{n} {name}")
                    }
                    ProgressEvent::Started { .. } => Ok(()),
                    ProgressEvent::Cached { name, .. } => writeln!(e, "#{n} {name}\n#{n} CACHED"),
                    ProgressEvent::CacheMiss { name, reason, dry_run: true, .. } => {
                        writeln!(e, "#{n} {name}\n#{n} WOULD RUN: {reason}")
                    }
                    ProgressEvent::CacheMiss { name, reason, vertex, .. } => {
                        announced.insert(vertex.clone());
                        writeln!(e, "#{n} {name}\n#{n} CACHE MISS: {reason}")
                    }
                    ProgressEvent::Log { line, .. } => writeln!(e, "#{n} {:.3} {line}", start.elapsed().as_secs_f64()),
                    ProgressEvent::Done { elapsed, .. } => writeln!(e, "#{n} DONE {:.1}s", elapsed.as_secs_f64()),
                    ProgressEvent::Failed { error, .. } => writeln!(e, "#{n} ERROR: {error}"),
                    ProgressEvent::Transfer { name, current, total, .. } => match total {
                        Some(t) => writeln!(e, "#{n} {name} {} / {}", human_bytes(*current), human_bytes(*t)),
                        None => writeln!(e, "#{n} {name} {}", human_bytes(*current)),
                    },
                    ProgressEvent::Status { name, message, .. } => writeln!(e, "#{n} {name}: {message}"),
                    ProgressEvent::Warning { message } => writeln!(e, "{message}"),
                };
            }
        }
    }
    if let Some(t) = tty.as_mut() {
        t.finish();
        let mut e = stderr.lock();
        for w in &warnings {
            let _ = writeln!(e, "{w}");
        }
    }
    summary.elapsed = start.elapsed();
    summary
}

/// Build steps (not image loads or the export) count in the summary.
fn is_step(name: &str) -> bool {
    name.starts_with('[') && !name.starts_with("[internal]")
}

fn vertex_of(ev: &ProgressEvent) -> &str {
    match ev {
        ProgressEvent::Started { vertex, .. }
        | ProgressEvent::Cached { vertex, .. }
        | ProgressEvent::CacheMiss { vertex, .. }
        | ProgressEvent::Log { vertex, .. }
        | ProgressEvent::Done { vertex, .. }
        | ProgressEvent::Failed { vertex, .. }
        | ProgressEvent::Transfer { vertex, .. }
        | ProgressEvent::Status { vertex, .. } => vertex,
        ProgressEvent::Warning { .. } => "",
    }
}

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    /// `--dry-run`: steps that would run.
    pub would_run: usize,
    pub elapsed: std::time::Duration,
}
