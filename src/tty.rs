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
            ProgressEvent::Status { vertex, name, .. } | ProgressEvent::Transfer { vertex, name, .. } => {
                self.step(vertex, name);
            }
        }
        if self.last_draw.elapsed().as_millis() > 80 {
            self.draw();
        }
    }

    fn draw(&mut self) {
        let width = terminal_width();
        let mut out = String::new();
        if self.drawn_lines > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn_lines));
        }
        let mut lines = vec![format!("[+] Building {:.1}s", self.start.elapsed().as_secs_f64())];
        for s in &self.steps {
            let t = s.finished.unwrap_or_else(|| s.started.elapsed().as_secs_f64());
            let state =
                if s.state == "running" || s.state == "waiting" { String::new() } else { format!(" {}", s.state) };
            lines.push(clip(&format!(" => {}{} {:>6.1}s", s.name, state, t), width));
            if s.finished.is_none() {
                for l in &s.tail {
                    lines.push(clip(&format!("    {l}"), width));
                }
            }
        }
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

    pub fn finish(&mut self) {
        self.draw();
    }
}

impl Default for TtyView {
    fn default() -> Self {
        Self::new()
    }
}

fn clip(s: &str, width: usize) -> String {
    s.chars().take(width.saturating_sub(1)).collect()
}

fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stderr()).map(|w| w.ws_col as usize).ok().filter(|w| *w > 10).unwrap_or(100)
}
