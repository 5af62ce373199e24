//! Where log lines go while the dashboard owns the terminal: a file, and
//! the last few hundred lines in memory for the dashboard's log pane.
//! Part of the binary.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

/// Lines kept for the log pane.
const KEEP: usize = 500;

/// The recent log lines, shared with the dashboard feed.
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<VecDeque<String>>>);

impl LogLines {
    /// Adds one line (the dashboard's own notes go here too).
    pub fn push(&self, line: String) {
        let mut q = self.0.lock();
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back(line);
    }

    pub fn recent(&self) -> Vec<String> {
        self.0.lock().iter().cloned().collect()
    }
}

/// A tracing writer: every line to the file and to the pane's buffer.
#[derive(Clone)]
pub struct LogSink {
    pub path: PathBuf,
    file: Arc<Mutex<File>>,
    pub lines: LogLines,
}

impl LogSink {
    /// Creates (truncates) the log file at `path`.
    pub fn create(path: PathBuf) -> io::Result<LogSink> {
        let file = File::create(&path)?;
        Ok(LogSink { path, file: Arc::new(Mutex::new(file)), lines: LogLines::default() })
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.lock().write_all(buf)?;
        for line in String::from_utf8_lossy(buf).lines().filter(|l| !l.trim().is_empty()) {
            self.lines.push(line.to_string());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LogSink;
    fn make_writer(&'a self) -> LogSink {
        self.clone()
    }
}
