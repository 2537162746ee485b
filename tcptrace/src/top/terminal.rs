//! The terminal while `tcptrace top` draws: raw mode and the alternate
//! screen, given back whatever the way out. The guard restores the
//! terminal when dropped (a quit, an error, SIGINT, SIGTERM or SIGHUP:
//! the view's loop ends and drops it), and a panic hook restores it
//! before the panic message is printed, so the message is readable and
//! the shell is usable after.

use std::{
    io::{self, BufWriter, Stdout, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Once,
    },
};

use anyhow::{Context, Result};
use ratatui::{
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
        ExecutableCommand,
    },
    Terminal,
};

/// Whether the terminal is in raw mode on the alternate screen now.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();

/// Owns the terminal in raw mode on the alternate screen.
pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<BufWriter<Stdout>>>,
}

/// Room for a whole frame: it goes to the terminal in one write when the
/// frame is done, never half drawn (stdout alone writes every 1 KiB, and a
/// terminal or tmux shows the pieces as they come, over SSH too).
const FRAME_BYTES: usize = 1024 * 1024;

impl TerminalGuard {
    /// Takes the terminal: raw mode (keys one at a time, no echo, Ctrl-C
    /// a key), the alternate screen, the cursor hidden.
    pub fn enter() -> Result<Self> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut stdout = io::stdout();
        let entered = stdout
            .execute(EnterAlternateScreen)
            .and_then(|out| out.execute(cursor::Hide))
            .map(|_| ());
        if let Err(err) = entered {
            restore();
            return Err(err).context("switching to the alternate screen");
        }
        match Terminal::new(CrosstermBackend::new(BufWriter::with_capacity(
            FRAME_BYTES,
            stdout,
        ))) {
            Ok(terminal) => Ok(Self { terminal }),
            Err(err) => {
                restore();
                Err(err).context("starting the terminal view")
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        // A frame still buffered goes to the alternate screen, not after it.
        let _ = ratatui::backend::Backend::flush(self.terminal.backend_mut());
        restore();
    }
}

/// Leaves the alternate screen, shows the cursor and ends raw mode, once
/// (the guard and the panic hook may both call it). Errors are ignored:
/// a terminal that went away (SIGHUP, the SSH connection dropped) has
/// nothing to restore.
pub fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut stdout = io::stdout();
    let _ = stdout.execute(LeaveAlternateScreen);
    let _ = stdout.execute(cursor::Show);
    let _ = stdout.flush();
    let _ = terminal::disable_raw_mode();
}

/// Whether standard output is a terminal the view can draw on.
#[must_use]
pub fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal()
}
