//! Progress bars that respect `--quiet`. On a terminal they redraw in place; where stderr is not
//! one (a batch job's log file), indicatif would draw nothing, so a bar writes its line there
//! every [`LOG_EVERY`] and once more at its end.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);

/// How often a bar writes its line into a log.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Called once by the CLI for `--quiet`.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A bar over `len` units of work (rows, steps, files…) named by `unit`.
pub fn bar(len: u64, message: &str, unit: &str) -> ProgressBar {
    if is_quiet() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let template = format!("{{msg:>12}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})");
    pb.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
    pb.set_message(message.to_owned());
    to_log_unless_terminal(&pb);
    pb
}

/// A count of work whose total is not known up front (the rows of files not read yet), under a
/// `message` the caller may update.
pub fn counter(message: &str, unit: &str) -> ProgressBar {
    if is_quiet() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    let template = format!("{{spinner}} {{msg}} · {{human_pos}} {unit} [{{elapsed}}]");
    pb.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    pb.set_message(message.to_owned());
    to_log_unless_terminal(&pb);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

fn to_log_unless_terminal(pb: &ProgressBar) {
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::term_like_with_hz(Box::new(LogLines::default()), 1));
    }
}

/// A bar's lines as a log takes them: written every `LOG_EVERY`, the last one kept back until
/// the bar is dropped (its final state), cursor moves ignored.
#[derive(Debug, Default)]
struct LogLines {
    /// When a line was last written, and the newest line not written yet.
    state: Mutex<(Option<Instant>, Option<String>)>,
}

impl LogLines {
    fn take(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let mut state = self.state.lock().expect("progress log lock");
        if state.0.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            eprintln!("{line}");
            *state = (Some(Instant::now()), None);
        } else {
            state.1 = Some(line.to_owned());
        }
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        if let Some(line) = self.state.get_mut().ok().and_then(|s| s.1.take()) {
            eprintln!("{line}");
        }
    }
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        120
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.take(s);
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.take(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}
