//! `--progress=tty` as a person sees it: strata runs in a detached tmux session of a
//! fixed size, and the tests read the rendered screen (`tmux capture-pane`) and the raw
//! bytes strata wrote (`tmux pipe-pane`). They check the live view (step lines, a
//! running step's output, ticking timers), the last frame and the summary, a frame
//! taller than the terminal, output with escape sequences, and Ctrl-C: the build ends
//! within seconds, says it was cancelled, leaves the screen clean and leaves no runc
//! container and no overlay mount behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// A tmux server of its own (socket in a temp dir) with one session running a command
/// in a pane of a fixed size. The pane stays after the command ends
/// (`remain-on-exit`), so its last screen can be read. The exit status comes from the
/// wrapping shell (tmux 3.3's own `pane_dead_status` is sometimes never set: it can
/// leave the exited child unreaped).
struct Tmux {
    dir: tempfile::TempDir,
    session: String,
}

impl Tmux {
    /// Start `program args` in a `cols` x `rows` pane. It waits for a go file, so that
    /// `pipe-pane` records every byte it writes from the start.
    fn start(program: &Path, args: &[&str], cols: u16, rows: u16) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().map(|o| !o.status.success()).unwrap_or(true) {
            skipped("tmux is not installed (tests/setup installs it): tty progress NOT tested");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tmux.conf"),
            "set -g remain-on-exit on\nset -g history-limit 5000\nset -g default-shell /bin/sh\n",
        )
        .unwrap();
        let t = Tmux { dir, session: "strata".into() };
        let (go, status) = (t.dir.path().join("go"), t.dir.path().join("status"));
        // The shell outlives the program to record its status; its INT trap makes it
        // wait for the program on Ctrl-C (the program's own SIGINT stays default).
        let mut cmd =
            format!("trap true INT; while [ ! -e {} ]; do sleep 0.02; done; env RUST_BACKTRACE=1", quote(&go));
        cmd.push(' ');
        cmd.push_str(&quote(program));
        for a in args {
            cmd.push(' ');
            cmd.push_str(&quote(a));
        }
        cmd.push_str(&format!("; echo $? > {s}.tmp && mv {s}.tmp {s}", s = quote(&status)));
        let (c, r) = (cols.to_string(), rows.to_string());
        t.ok(&["new-session", "-d", "-s", &t.session, "-x", &c, "-y", &r, &cmd]);
        let raw = t.dir.path().join("raw");
        t.ok(&["pipe-pane", "-t", &t.session, "-o", &format!("cat > {}", quote(&raw))]);
        // pipe-pane starts its shell asynchronously: wait until the file exists.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !raw.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::write(&go, "").unwrap();
        Some(t)
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(self.dir.path().join("sock"))
            .arg("-f")
            .arg(self.dir.path().join("tmux.conf"))
            .args(args)
            .env("TERM", "xterm")
            .env_remove("TMUX")
            .output()
            .expect("run tmux")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.tmux(args);
        assert!(o.status.success(), "tmux {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The visible screen, as rendered text.
    fn screen(&self) -> String {
        self.ok(&["capture-pane", "-p", "-t", &self.session])
    }

    /// The whole pane, scrollback included, wrapped lines joined, without tmux's own
    /// "Pane is dead" line (which also scrolls the screen up by one line).
    fn everything(&self) -> String {
        let all = self.ok(&["capture-pane", "-p", "-J", "-S", "-", "-t", &self.session]);
        let lines: Vec<&str> = all.lines().filter(|l| !l.starts_with("Pane is dead")).collect();
        let end = lines.iter().rposition(|l| !l.trim().is_empty()).map(|i| i + 1).unwrap_or(0);
        lines[..end].join("\n") + "\n"
    }

    /// Every byte written to the terminal so far.
    fn raw(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.path().join("raw")).unwrap_or_default()).into_owned()
    }

    /// The program's exit status (128 + N when signal N killed it), None while it runs.
    fn status(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("status")).ok().and_then(|s| s.trim().parse().ok())
    }

    /// Whether tmux has read everything up to the end of the pane's output.
    fn pane_closed(&self) -> bool {
        self.ok(&["display-message", "-p", "-t", &self.session, "#{pane_dead}"]).trim() == "1"
    }

    /// The exit status, once the output has all reached the screen.
    fn wait_exit(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.status() {
                let closing = Instant::now() + Duration::from_secs(5);
                while !self.pane_closed() && Instant::now() < closing {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Some(code);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Poll the screen until `pred` holds; returns that screen.
    fn wait_screen(&self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; screen:\n{s}\nraw:\n{:?}", self.raw());
            assert!(self.status().is_none(), "strata ended while waiting for {what}:\n{}", self.everything());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn quote(s: impl AsRef<std::ffi::OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', r"'\''"))
}

/// The rendered screen shows text only: no escape sequence was left half-interpreted
/// or printed literally, and the frames were all drawn over each other (one header).
fn assert_clean_screen(all: &str) {
    for bad in ["\x1b", "[2K", "[?25", "[1A", "^["] {
        assert!(!all.contains(bad), "{bad:?} shows on the screen:\n{all}");
    }
    let headers: Vec<&str> = all.lines().filter(|l| l.contains("[+] Building")).collect();
    assert_eq!(headers.len(), 1, "one frame on the screen, not copies of it:\n{all}");
    assert!(headers[0].starts_with("[+] Building "), "the frame starts in column 1: {:?}\n{all}", headers[0]);
}

/// If strata hides the cursor, the last such sequence is undone before it exits.
fn assert_cursor_restored(raw: &str) {
    if let Some(hide) = raw.rfind("\x1b[?25l") {
        let show = raw.rfind("\x1b[?25h");
        assert!(show.is_some_and(|s| s > hide), "the cursor stays hidden after strata exits: {raw:?}");
    }
}

fn context(dockerfile: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(d.path().join("file.txt"), "from the context\n").unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

fn tty_build(root: &Path, ctx: &Path, env: &std::collections::HashMap<String, String>, tag: &str) -> Vec<String> {
    vec![
        "--root".into(),
        root.display().to_string(),
        "build".into(),
        "--progress=tty".into(),
        "--build-context".into(),
        busybox_context(env),
        "-t".into(),
        tag.into(),
        ctx.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Step lines of the last frame: ` => NAME[ STATE] 1.2s`.
fn step_line<'a>(all: &'a str, name: &str) -> &'a str {
    let prefix = format!(" => {name}");
    all.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no step line {prefix:?}:\n{all}"))
}

#[test]
fn tty_build_shows_steps_and_ends_with_the_summary() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let (_c, ctx) =
        context("FROM busybox\nRUN echo first-step-output && sleep 1\nCOPY file.txt /file.txt\nRUN cat /file.txt\n");
    let tag = unique_name("tty-test");
    let args = tty_build(root.path(), &ctx, &env, &tag);
    let started = Instant::now();
    let Some(t) = Tmux::start(&strata_bin(), &strs(&args), 120, 40) else { return };
    // The live view shows the running step and its output while it runs.
    let live = t.wait_screen(Duration::from_secs(60), "the running RUN step", |s| {
        s.contains(" => [2/4] RUN echo first-step-output && sleep 1 ") && s.contains("    first-step-output")
    });
    assert!(live.starts_with("[+] Building "), "{live}");
    assert_eq!(t.wait_exit(Duration::from_secs(120)), Some(0), "{}", t.everything());
    let all = t.everything();
    eprintln!("first build: {:?}\n{all}", started.elapsed());
    assert_clean_screen(&all);
    assert_cursor_restored(&t.raw());
    assert!(step_line(&all, "[2/4] RUN echo first-step-output && sleep 1").contains(" DONE "), "{all}");
    assert!(step_line(&all, "[3/4] COPY file.txt /file.txt").contains(" DONE "), "{all}");
    assert!(step_line(&all, "[4/4] RUN cat /file.txt").contains(" DONE "), "{all}");
    assert!(step_line(&all, "exporting to image").contains(" DONE "), "{all}");
    assert!(!all.contains("    first-step-output"), "a finished step's output is folded away:\n{all}");
    let last = all.lines().last().unwrap();
    assert!(last.starts_with("Build complete in ") && last.contains(": 3 steps run, 0 cached. Image sha256:"), "{all}");
    assert_no_panic(&all);
    drop(t);

    // Again: every step is CACHED.
    let Some(t) = Tmux::start(&strata_bin(), &strs(&args), 120, 40) else { return };
    assert_eq!(t.wait_exit(Duration::from_secs(60)), Some(0), "{}", t.everything());
    let all = t.everything();
    assert_clean_screen(&all);
    for step in
        ["[2/4] RUN echo first-step-output && sleep 1", "[3/4] COPY file.txt /file.txt", "[4/4] RUN cat /file.txt"]
    {
        assert!(step_line(&all, step).contains(" CACHED "), "{all}");
    }
    let last = all.lines().last().unwrap();
    assert!(last.starts_with("Build complete in ") && last.contains(": 0 steps run, 3 cached."), "{all}");
    drop(t);

    // A file changes: the reason of each miss is a line under its step.
    std::fs::write(ctx.join("file.txt"), "changed\n").unwrap();
    let Some(t) = Tmux::start(&strata_bin(), &strs(&args), 120, 40) else { return };
    assert_eq!(t.wait_exit(Duration::from_secs(60)), Some(0), "{}", t.everything());
    let all = t.everything();
    assert_clean_screen(&all);
    let lines: Vec<&str> = all.lines().collect();
    let under = |step: &str| {
        let i = lines.iter().position(|l| l.contains(step)).unwrap_or_else(|| panic!("no {step}:\n{all}"));
        lines.get(i + 1).copied().unwrap_or_default()
    };
    assert_eq!(
        under("[3/4] COPY file.txt /file.txt"),
        "    cache miss: COPY file.txt /file.txt: 1 file changed: file.txt (content)",
        "{all}"
    );
    assert_eq!(
        under("[4/4] RUN cat /file.txt"),
        "    cache miss: RUN cat /file.txt: the step before it changed (Dockerfile:3)",
        "{all}"
    );
}

#[test]
fn tall_frames_and_escape_sequences_in_output_do_not_garble_the_screen() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    // More steps than the terminal has lines, and a step whose output has colours, a
    // tab, a carriage-return progress bar and a clear-screen.
    let mut df = String::from("FROM busybox\n");
    for i in 1..=14 {
        df.push_str(&format!("RUN echo step-{i}\n"));
    }
    df.push_str(
        r#"RUN printf '\033[31mred\033[0m\tafter-tab\n\033[2Jafter-clear\nprogress 10%%\rprogress 100%%\n' && sleep 1"#,
    );
    df.push('\n');
    let (_c, ctx) = context(&df);
    let tag = unique_name("tty-tall");
    let args = tty_build(root.path(), &ctx, &env, &tag);
    let Some(t) = Tmux::start(&strata_bin(), &strs(&args), 100, 12) else { return };
    let live = t.wait_screen(Duration::from_secs(120), "the escape-laden output", |s| s.contains("\n    after-clear"));
    // The live frame fits the 12 lines, keeps the header and the running step, and
    // shows the output as plain text.
    assert!(live.lines().next().unwrap().starts_with("[+] Building "), "{live}");
    assert!(live.contains("    red after-tab"), "{live}");
    assert!(live.contains("    progress 10% progress 100%"), "{live}");
    // (A step's cache-miss line quotes its instruction, whose text holds `\033[31m`.)
    assert!(
        !live.lines().any(|l| l.starts_with("    ") && !l.starts_with("    cache miss: ") && l.contains("[31m")),
        "{live}"
    );
    assert_eq!(t.wait_exit(Duration::from_secs(120)), Some(0), "{}", t.everything());
    let all = t.everything();
    assert_clean_screen(&all);
    // The last frame lists every step, once.
    for i in 1..=14 {
        let name = format!("RUN echo step-{i}");
        let n = all.lines().filter(|l| l.starts_with(" => [") && l.contains(&format!("] {name} "))).count();
        assert_eq!(n, 1, "{name}:\n{all}");
    }
    assert!(all.contains("Build complete in "), "{all}");
}

#[test]
fn ctrl_c_cancels_the_build_and_leaves_nothing_behind() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let (_c, ctx) = context("FROM busybox\nRUN echo one\nRUN echo sleeping-now && sleep 300\nRUN echo never-runs\n");
    let tag = unique_name("tty-cancel");
    let args = tty_build(root.path(), &ctx, &env, &tag);
    let Some(t) = Tmux::start(&strata_bin(), &strs(&args), 120, 40) else { return };
    let running = "[3/4] RUN echo sleeping-now && sleep 300";
    let live = t.wait_screen(Duration::from_secs(60), "the sleeping step", |s| s.contains("    sleeping-now"));
    assert!(live.contains(&format!(" => {running} ")), "{live}");
    // The timer of the running step ticks while nothing else happens.
    let timer = |s: &str| step_line(s, running).split_whitespace().last().unwrap().to_string();
    let before = timer(&live);
    let later = t.wait_screen(Duration::from_secs(60), "the timer to advance", |s| timer(s) != before);
    assert!(later.contains("    sleeping-now"), "{later}");

    // While it runs there is a container and an overlay mount: what must go away.
    let runc_root = root.path().join("runc");
    assert!(!runc_containers(&runc_root).is_empty(), "no runc container while the step runs?");
    assert!(!mounts_under(root.path()).is_empty(), "no overlay mount while the step runs?");

    let pressed = Instant::now();
    t.ok(&["send-keys", "-t", &t.session, "C-c"]);
    // The step sleeps for 300 s: an exit within 120 s means the Ctrl-C stopped it.
    let status = t.wait_exit(Duration::from_secs(120));
    let took = pressed.elapsed();
    let all = t.everything();
    eprintln!("Ctrl-C to exit: {took:?}\n{all}");
    assert!(status.is_some(), "strata still runs {took:?} after Ctrl-C:\n{all}");
    assert_ne!(status, Some(0), "a cancelled build does not succeed:\n{all}");
    assert_eq!(status, Some(1), "a cancelled build exits 1 (130: SIGINT killed it):\n{all}");

    assert_clean_screen(&all);
    assert_cursor_restored(&t.raw());
    assert_no_panic(&all);
    let tail: Vec<&str> = all.lines().rev().take(3).collect();
    assert!(tail.iter().any(|l| l.contains("cancelled")), "the last lines say it was cancelled:\n{all}");
    assert!(step_line(&all, running).contains(" CANCELED "), "the step is shown as cancelled:\n{all}");
    assert!(!all.contains(" => [4/4]"), "the next step never started:\n{all}");
    assert!(!all.contains("Build complete"), "{all}");

    // Nothing left behind.
    assert_eq!(runc_containers(&runc_root), Vec::<String>::new(), "runc containers left");
    assert_eq!(mounts_under(root.path()), Vec::<String>::new(), "mounts left under the root");
}

/// Containers in strata's runc state directory (`ROOT/runc`).
fn runc_containers(runc_root: &Path) -> Vec<String> {
    let o = Command::new("runc").arg("--root").arg(runc_root).args(["list", "-q"]).output().expect("run runc");
    assert!(o.status.success() || !runc_root.exists(), "runc list: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// Mount points under `dir` (from /proc/self/mountinfo; field 5 is the mount point).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap().display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_warning_printed_during_the_build_stays_readable() {
    let Some(env) = test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let (_c, ctx) = context("FROM busybox\nRUN echo working && sleep 0.5\n");
    // No -t and no -o: strata warns that the result is only in the build cache.
    let args = [
        "--root".to_string(),
        root.path().display().to_string(),
        "build".into(),
        "--progress=tty".into(),
        "--build-context".into(),
        busybox_context(&env),
        ctx.display().to_string(),
    ];
    let Some(t) = Tmux::start(&strata_bin(), &strs(&args), 120, 40) else { return };
    assert_eq!(t.wait_exit(Duration::from_secs(60)), Some(0), "{}", t.everything());
    let all = t.everything();
    assert!(all.contains("warning: no output specified"), "the warning was overwritten:\n{all}");
    assert_clean_screen(&all);
}
