//! The keys of `tcptrace top`, and the thread that reads them.

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use super::columns::Column;

/// What a key asks of the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    NextSort,
    PreviousSort,
    Sort(Column),
    Up,
    Down,
    ToggleDetail,
    Pause,
    /// One row per process, or per program.
    Group,
    /// The terminal changed size, or a key to ignore: draw again.
    Redraw,
}

/// The action of a key press.
#[must_use]
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('s' | '>') | KeyCode::Right => Action::NextSort,
        KeyCode::Left | KeyCode::Char('<') => Action::PreviousSort,
        KeyCode::Char(digit @ '1'..='9') => Action::Sort(Column::numbered(digit)?),
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Enter => Action::ToggleDetail,
        KeyCode::Char('p' | ' ') => Action::Pause,
        KeyCode::Char('g') => Action::Group,
        _ => return None,
    })
}

/// Reads the terminal's events on a thread of its own (crossterm reads
/// block) and sends the actions they ask for. The thread ends when the
/// receiver is dropped and the next event comes, or with the process.
pub fn spawn_reader() -> std::io::Result<mpsc::UnboundedReceiver<Action>> {
    let (sender, actions) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("tcptrace-keys".to_owned())
        .spawn(move || loop {
            let action = match event::read() {
                Ok(Event::Key(key)) => action(key),
                Ok(Event::Resize(..)) => Some(Action::Redraw),
                Ok(_) => None,
                // The terminal is gone (SIGHUP follows): stop reading.
                Err(_) => Some(Action::Quit),
            };
            if let Some(action) = action {
                let quit = action == Action::Quit;
                if sender.send(action).is_err() || quit {
                    return;
                }
            }
        })?;
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys() {
        assert_eq!(action(key(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(action(key(KeyCode::Esc)), Some(Action::Quit));
        assert_eq!(
            action(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(action(key(KeyCode::Char('c'))), None);
        assert_eq!(action(key(KeyCode::Char('s'))), Some(Action::NextSort));
        assert_eq!(action(key(KeyCode::Left)), Some(Action::PreviousSort));
        assert_eq!(
            action(key(KeyCode::Char('2'))),
            Some(Action::Sort(Column::TimeWait))
        );
        assert_eq!(action(key(KeyCode::Char('9'))), None);
        assert_eq!(action(key(KeyCode::Char('j'))), Some(Action::Down));
        assert_eq!(action(key(KeyCode::Up)), Some(Action::Up));
        assert_eq!(action(key(KeyCode::Enter)), Some(Action::ToggleDetail));
        assert_eq!(action(key(KeyCode::Char('p'))), Some(Action::Pause));
        assert_eq!(action(key(KeyCode::Char('g'))), Some(Action::Group));
    }
}
