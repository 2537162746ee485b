//! What `tcptrace top` shows and how keys change it: the screen's state
//! (sort column, selection, detail pane, pause) and its drawing with
//! ratatui.

use std::time::Duration;

use ratatui::{
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Cell, Paragraph, Row as TableRow, Table, TableState, Wrap},
    Frame,
};

use super::{
    columns::{cells, left_aligned, Column, HEADINGS, WIDTHS},
    keys::Action,
    rows::Row,
    status::Status,
};

/// What is on the screen: the rows as of the last interval (kept as they
/// were while paused) and how they are looked at.
#[derive(Debug)]
pub struct View {
    pub sort: Column,
    /// The selected process, followed as the rows move.
    pub selected: Option<u32>,
    pub detail: bool,
    pub paused: bool,
    /// One row per program (process name and container) instead of one
    /// per process.
    pub by_program: bool,
    /// The rows shown, sorted.
    pub rows: Vec<Row>,
    pub interval: Duration,
    pub status: Status,
    /// Said once under the header (missing hooks, filter warnings).
    pub notes: Vec<String>,
}

impl View {
    #[must_use]
    pub fn new(sort: Column, by_program: bool, interval: Duration, notes: Vec<String>) -> Self {
        Self {
            sort,
            selected: None,
            detail: false,
            paused: false,
            by_program,
            rows: Vec::new(),
            interval,
            status: Status::default(),
            notes,
        }
    }

    /// New rows (unless paused), sorted by the current column.
    pub fn update(&mut self, rows: Vec<Row>, interval: Duration, status: Status) {
        if self.paused {
            return;
        }
        self.rows = rows;
        self.interval = interval;
        self.status = status;
        self.sort_rows();
    }

    /// Other rows now, paused or not (the grouping changed).
    pub fn replace_rows(&mut self, rows: Vec<Row>) {
        self.rows = rows;
        self.sort_rows();
    }

    fn sort_rows(&mut self) {
        let (sort, interval) = (self.sort, self.interval);
        self.rows.sort_by(|a, b| {
            sort.sort_key(b, interval)
                .total_cmp(&sort.sort_key(a, interval))
                .then(a.pid.cmp(&b.pid))
        });
    }

    /// The index of the selected row, if it is still shown.
    #[must_use]
    pub fn selected_index(&self) -> Option<usize> {
        let pid = self.selected?;
        self.rows.iter().position(|r| r.pid == pid)
    }

    /// The selected row.
    #[must_use]
    pub fn selected_row(&self) -> Option<&Row> {
        self.selected_index().map(|i| &self.rows[i])
    }

    /// Applies a key's action; false when it asks to quit.
    pub fn apply(&mut self, action: Action) -> bool {
        match action {
            Action::Quit => return false,
            Action::NextSort => self.set_sort(self.sort.next()),
            Action::PreviousSort => self.set_sort(self.sort.previous()),
            Action::Sort(column) => self.set_sort(column),
            Action::Up => self.move_selection(-1),
            Action::Down => self.move_selection(1),
            Action::ToggleDetail => {
                if self.selected_index().is_none() {
                    self.move_selection(0);
                }
                self.detail = !self.detail;
            }
            Action::Pause => self.paused = !self.paused,
            Action::Group => self.by_program = !self.by_program,
            Action::Redraw => {}
        }
        true
    }

    fn set_sort(&mut self, column: Column) {
        self.sort = column;
        self.sort_rows();
    }

    fn move_selection(&mut self, by: isize) {
        if self.rows.is_empty() {
            self.selected = None;
            return;
        }
        let last = self.rows.len() - 1;
        let index = match self.selected_index() {
            Some(i) => i.saturating_add_signed(by).min(last),
            None => 0,
        };
        self.selected = Some(self.rows[index].pid);
    }

    /// The header's lines.
    #[must_use]
    pub fn header(&self) -> [String; 3] {
        let now = chrono_like_now();
        [
            format!(
                "tcptrace top - {now} - every {:.1}s - {} {} - sorted by {}{}",
                self.interval.as_secs_f64(),
                self.rows.len(),
                if self.by_program {
                    "programs"
                } else {
                    "processes"
                },
                self.sort.heading(),
                if self.paused {
                    " - PAUSED (p resumes)"
                } else {
                    ""
                }
            ),
            self.status.events_line(),
            self.status.loss_line(),
        ]
    }

    /// Draws the screen; `detail` is the detail pane's text, when shown.
    pub fn draw(&self, frame: &mut Frame, detail: Option<&[String]>) {
        let notes = u16::try_from(self.notes.len().min(3)).unwrap_or(3);
        // The pane's lines and its borders, at most half the screen.
        let detail_height = detail.map_or(0, |lines| {
            u16::try_from(lines.len() + 2)
                .unwrap_or(u16::MAX)
                .min(frame.area().height / 2)
        });
        let [header, help, table, pane] = Layout::vertical([
            Constraint::Length(3 + notes),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(detail_height),
        ])
        .areas(frame.area());
        let mut lines: Vec<Line> = self.header().into_iter().map(Line::from).collect();
        if self.status.incomplete() {
            lines[2] = Line::styled(
                lines[2].to_string(),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            );
        }
        lines.extend(self.notes.iter().take(3).map(|n| Line::from(n.as_str())));
        frame.render_widget(Paragraph::new(lines), header);
        frame.render_widget(
            Paragraph::new(
                "q quit  s/</> sort  1-8 sort column  up/down j/k select  Enter details  \
                 g per process/program  p pause",
            )
            .style(Style::new().add_modifier(Modifier::DIM)),
            help,
        );
        self.draw_table(frame, table);
        if let Some(text) = detail {
            let lines: Vec<Line> = text.iter().map(|l| Line::from(l.as_str())).collect();
            frame.render_widget(
                Paragraph::new(lines)
                    .block(Block::bordered().title(" details (Enter closes) "))
                    .wrap(Wrap { trim: false }),
                pane,
            );
        }
    }

    fn draw_table(&self, frame: &mut Frame, area: ratatui::layout::Rect) {
        let sorted_at = self.sort.shown_at();
        let header = TableRow::new(HEADINGS.iter().enumerate().map(|(i, h)| {
            let cell = Cell::from(aligned(h, i));
            if i == sorted_at {
                cell.style(Style::new().add_modifier(Modifier::REVERSED))
            } else {
                cell
            }
        }))
        .style(Style::new().add_modifier(Modifier::BOLD));
        let rows = self.rows.iter().map(|row| {
            TableRow::new(
                cells(row, self.interval)
                    .into_iter()
                    .enumerate()
                    .map(|(i, text)| Cell::from(aligned(&text, i))),
            )
        });
        let widths = WIDTHS.map(Constraint::Length);
        let table = Table::new(rows, widths)
            .header(header)
            .column_spacing(1)
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let mut state = TableState::default().with_selected(self.selected_index());
        frame.render_stateful_widget(table, area, &mut state);
    }
}

/// A cell's text, right-aligned in its column unless it is a name.
fn aligned(text: &str, column: usize) -> String {
    let width = usize::from(WIDTHS[column]);
    if left_aligned(column) {
        text.to_owned()
    } else {
        format!("{text:>width$}")
    }
}

/// The time of day (UTC), `HH:MM:SS`.
#[must_use]
pub fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::top::rows::{Counts, Rows};

    fn rows() -> Vec<Row> {
        let mut rows = Rows::default();
        let opened = |n| Counts {
            opened: n,
            ..Counts::default()
        };
        let peer = Some("10.0.0.1:80".parse().expect("addr"));
        rows.add(1, *b"nginx\0\0\0\0\0\0\0\0\0\0\0", None, opened(3), None);
        rows.add(2, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0", None, opened(9), peer);
        rows.end_interval();
        rows.sorted(Column::Connections, Duration::from_secs(1))
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn keys_move_the_selection_and_sort() {
        let mut view = View::new(
            Column::Retransmits,
            false,
            Duration::from_secs(1),
            Vec::new(),
        );
        view.update(rows(), Duration::from_secs(1), Status::default());
        assert!(view.apply(Action::Sort(Column::Connections)));
        assert_eq!(view.rows[0].pid, 2, "most connections first");
        assert!(view.apply(Action::ToggleDetail));
        assert_eq!(
            view.selected,
            Some(2),
            "the detail pane selects the top row"
        );
        assert!(view.apply(Action::Down));
        assert!(view.apply(Action::Down));
        assert_eq!(view.selected, Some(1), "stops at the last row");
        assert!(view.apply(Action::Up));
        assert_eq!(view.selected, Some(2));
        assert!(view.apply(Action::Pause));
        view.update(Vec::new(), Duration::from_secs(1), Status::default());
        assert_eq!(view.rows.len(), 2, "paused: the screen stays");
        assert!(view.apply(Action::Group));
        assert!(view.by_program);
        assert!(view.header()[0].contains("programs"), "{:?}", view.header());
        assert!(!view.apply(Action::Quit));
    }

    #[test]
    fn draws_the_rows_and_the_detail_pane() {
        let mut view = View::new(
            Column::Connections,
            false,
            Duration::from_secs(1),
            Vec::new(),
        );
        view.update(rows(), Duration::from_secs(1), Status::default());
        let mut terminal = Terminal::new(TestBackend::new(140, 30)).expect("terminal");
        let detail = vec!["Top peers (connections opened):".to_owned()];
        terminal
            .draw(|frame| view.draw(frame, Some(&detail)))
            .expect("draw");
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .map(ratatui::buffer::Cell::symbol)
            .collect();
        assert!(screen.contains("CONN/s"), "{screen}");
        assert!(screen.contains("curl"), "{screen}");
        assert!(screen.contains("Top peers"), "{screen}");
        assert!(screen.contains("lost: none"), "{screen}");
    }
}
