//! The live terminal view of `--progress=tty`: one line per step with its state and
//! timer, the last lines of output of running steps, and a summary at the end.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::time::Instant;

use strata_solver::progress::ProgressEvent;

struct Step {
    name: String,
    state: &'static str,
    started: Instant,
    finished: Option<f64>,
    tail: VecDeque<String>,
    /// Why it missed the cache (a line under it, kept when it is done).
    reason: Option<String>,
}

pub struct TtyView {
    steps: Vec<Step>,
    index: HashMap<String, usize>,
    drawn_lines: usize,
    last_draw: Instant,
    start: Instant,
}

impl TtyView {
    pub fn new() -> Self {
        TtyView {
            steps: Vec::new(),
            index: HashMap::new(),
            drawn_lines: 0,
            last_draw: Instant::now(),
            start: Instant::now(),
        }
    }

    fn step(&mut self, vertex: &str, name: &str) -> &mut Step {
        let i = *self.index.entry(vertex.to_string()).or_insert_with(|| {
            self.steps.push(Step {
                name: name.to_string(),
                state: "waiting",
                started: Instant::now(),
                finished: None,
                tail: VecDeque::new(),
                reason: None,
            });
            self.steps.len() - 1
        });
        &mut self.steps[i]
    }

    pub fn event(&mut self, ev: &ProgressEvent) {
        match ev {
            ProgressEvent::Started { vertex, name } => {
                let s = self.step(vertex, name);
                s.state = "running";
                s.started = Instant::now();
            }
            ProgressEvent::Cached { vertex, name } => {
                let s = self.step(vertex, name);
                s.state = "CACHED";
                s.finished = Some(0.0);
            }
            ProgressEvent::Done { vertex, name, elapsed } => {
                let s = self.step(vertex, name);
                s.state = "DONE";
                s.finished = Some(elapsed.as_secs_f64());
                s.tail.clear();
            }
            ProgressEvent::Failed { vertex, name, .. } => {
                let s = self.step(vertex, name);
                s.state = "ERROR";
                s.finished = Some(s.started.elapsed().as_secs_f64());
            }
            ProgressEvent::Log { vertex, line, .. } => {
                if let Some(&i) = self.index.get(vertex) {
                    let s = &mut self.steps[i];
                    if s.tail.len() == 6 {
                        s.tail.pop_front();
                    }
                    s.tail.push_back(line.clone());
                }
            }
            ProgressEvent::CacheMiss { vertex, name, reason, dry_run, .. } => {
                let s = self.step(vertex, name);
                s.reason = Some(reason.clone());
                if *dry_run {
                    s.state = "WOULD RUN";
                    s.finished = Some(0.0);
                }
            }
            ProgressEvent::Status { vertex, name, .. } | ProgressEvent::Transfer { vertex, name, .. } => {
                self.step(vertex, name);
            }
            // Printed after the last frame (see `progress::print`).
            ProgressEvent::Warning { .. } => return,
        }
        if self.last_draw.elapsed().as_millis() > 80 {
            self.draw();
        }
    }

    fn draw(&mut self) {
        self.draw_frame(false);
    }

    /// Draw a frame over the previous one. A live frame fits the terminal's height (a
    /// taller one could not be moved back over and would leave copies behind): finished
    /// steps make room first. The final frame shows every step.
    fn draw_frame(&mut self, last: bool) {
        let (width, height) = terminal_size();
        // Back to column 1 first: the terminal's echo of ^C (or anything else typed)
        // moved the cursor, and the frame must not start mid-line.
        let mut out = String::from("\r");
        if self.drawn_lines > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn_lines));
        }
        // (line, belongs to a finished step)
        let mut body: Vec<(String, bool)> = Vec::new();
        for s in &self.steps {
            let t = s.finished.unwrap_or_else(|| s.started.elapsed().as_secs_f64());
            let state =
                if s.state == "running" || s.state == "waiting" { String::new() } else { format!(" {}", s.state) };
            body.push((clip(&format!(" => {}{} {:>6.1}s", s.name, state, t), width), s.finished.is_some()));
            if let Some(r) = &s.reason {
                body.push((clip(&format!("    cache miss: {r}"), width), s.finished.is_some()));
            }
            if s.finished.is_none() {
                for l in &s.tail {
                    body.push((clip(&format!("    {l}"), width), false));
                }
            }
        }
        if !last {
            let room = height.saturating_sub(2).max(1);
            let mut finished = body.iter().filter(|(_, f)| *f).count();
            while body.len() > room {
                match body.iter().position(|(_, f)| *f).filter(|_| finished > 0) {
                    Some(i) => {
                        body.remove(i);
                        finished -= 1;
                    }
                    None => {
                        body.remove(0);
                    }
                }
            }
        }
        let mut lines = vec![format!("[+] Building {:.1}s", self.start.elapsed().as_secs_f64())];
        lines.extend(body.into_iter().map(|(l, _)| l));
        for l in &lines {
            out.push_str("\x1b[2K");
            out.push_str(l);
            out.push('\n');
        }
        // Clear what the previous, longer frame left below.
        for _ in lines.len()..self.drawn_lines {
            out.push_str("\x1b[2K\n");
        }
        let extra = self.drawn_lines.saturating_sub(lines.len());
        if extra > 0 {
            out.push_str(&format!("\x1b[{extra}A"));
        }
        self.drawn_lines = lines.len();
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(out.as_bytes());
        let _ = e.flush();
        self.last_draw = Instant::now();
    }

    /// Redraw on the printer's timer (timers of running steps advance).
    pub fn tick(&mut self) {
        if !self.steps.is_empty() {
            self.draw();
        }
    }

    /// The last frame. A step still running now was abandoned (the build was
    /// cancelled, or another step failed): it is shown as such, not as running.
    pub fn finish(&mut self) {
        for s in &mut self.steps {
            if s.state == "running" {
                s.state = "CANCELED";
                s.finished = Some(s.started.elapsed().as_secs_f64());
            }
        }
        self.draw_frame(true);
    }
}

impl Default for TtyView {
    fn default() -> Self {
        Self::new()
    }
}

/// One screen line of at most `width - 1` columns: the escape sequences and control
/// characters of a step's output (colours, `\r` progress bars, a clear-screen) are
/// dropped, so they cannot move the cursor or wrap the line and break the frame.
/// Non-ASCII characters count as two columns (wide characters never wrap).
fn clip(s: &str, width: usize) -> String {
    let max = width.saturating_sub(1);
    let mut out = String::new();
    let mut used = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC and string commands: up to BEL or ESC \
                Some(']' | 'P' | '_' | '^') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        let c = if c.is_control() { ' ' } else { c };
        let w = if c.is_ascii() { 1 } else { 2 };
        if used + w > max {
            break;
        }
        used += w;
        out.push(c);
    }
    out
}

/// Columns and rows of the terminal on standard error (100x24 when unknown).
fn terminal_size() -> (usize, usize) {
    let ws = rustix::termios::tcgetwinsize(std::io::stderr()).ok();
    let cols = ws.map(|w| w.ws_col as usize).filter(|w| *w > 10).unwrap_or(100);
    let rows = ws.map(|w| w.ws_row as usize).filter(|r| *r > 2).unwrap_or(24);
    (cols, rows)
}
