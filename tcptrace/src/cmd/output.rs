//! How live lines are written: the same flags for `trace` and `report`.

use std::io;

use anyhow::{bail, Result};
use clap::Args;
use tcptrace::output::{
    fields::{Field, CSV_DEFAULT},
    CsvLines, JsonLines, LineBuffer, Sink, TextLines,
};

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// How live lines are written: `text` for people, `json` (one object
    /// per line, every field) for scripts, `csv` (one table; the summary
    /// and report go to standard error) for spreadsheets.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// The same as `-o json`.
    #[arg(long, conflicts_with = "output")]
    json: bool,
    /// The columns of text and CSV lines, comma-separated, e.g.
    /// `time,comm,remote,event,pod` [default for text:
    /// `time,pid,comm,local,remote,event,in_old,by`; every field for CSV].
    #[arg(long, value_enum, value_delimiter = ',')]
    fields: Vec<Field>,
}

/// `-o`: how live lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
    Csv,
}

impl OutputArgs {
    /// Refuses what cannot be done as asked, before anything starts.
    pub fn check(&self) -> Result<()> {
        if !self.fields.is_empty() && self.format() == OutputFormat::Json {
            bail!(
                "--fields chooses the columns of text and CSV lines; JSON lines carry every \
                 field (pick them with jq)"
            );
        }
        Ok(())
    }

    /// The sink writing to `out` in the format asked for.
    pub fn sink(self, out: impl LineBuffer + Send + 'static) -> Box<dyn Sink + Send> {
        match self.format() {
            OutputFormat::Json => Box::new(JsonLines::new(out)),
            OutputFormat::Text if self.fields.is_empty() => Box::new(TextLines::new(out)),
            OutputFormat::Text => Box::new(TextLines::with_fields(out, self.fields)),
            OutputFormat::Csv => {
                let fields = if self.fields.is_empty() {
                    CSV_DEFAULT.to_vec()
                } else {
                    self.fields
                };
                Box::new(CsvLines::new(out, fields, io::stderr()))
            }
        }
    }

    fn format(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            self.output
        }
    }
}
