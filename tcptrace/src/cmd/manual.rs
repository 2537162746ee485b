//! What a packager installs beside the binary, generated from the same
//! command-line definition so it never drifts: shell completion scripts
//! (`clap_complete`) and the manual page (`clap_mangen`, roff).

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// `tcptrace completions SHELL`: the completion script on stdout.
pub fn completions(shell: Shell) -> Result<()> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command, "tcptrace", &mut out);
    out.flush().context("writing the completion script")
}

/// `tcptrace man`: the manual page on stdout (`tcptrace man | man -l -`).
pub fn man() -> Result<()> {
    let mut out = std::io::stdout().lock();
    man_page(&mut out)?;
    out.flush().context("writing the manual page")
}

fn man_page(out: &mut impl Write) -> Result<()> {
    let command = Cli::command();
    let page = clap_mangen::Man::new(command.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_subcommands_section(out)?;
    // Each command's own options, under its name.
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        writeln!(
            out,
            ".SH \"{}\"",
            format!("TCPTRACE {}", sub.get_name()).to_uppercase()
        )?;
        clap_mangen::Man::new(sub.clone()).render_options_section(out)?;
    }
    page.render_version_section(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manual_documents_every_visible_command_and_its_options() {
        let mut page = Vec::new();
        man_page(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for heading in ["TCPTRACE TRACE", "TCPTRACE DAEMON", "TCPTRACE DOCTOR"] {
            assert!(page.contains(heading), "{heading} in the manual");
        }
        assert!(
            page.contains("ring\\-buffer\\-mib"),
            "daemon and trace options listed"
        );
        assert!(
            !page.contains("netns\\-opener"),
            "the internal helper is hidden"
        );
    }

    #[test]
    fn completions_know_the_commands_and_their_flags() {
        let mut command = Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(Shell::Bash, &mut command, "tcptrace", &mut script);
        let script = String::from_utf8(script).unwrap();
        for word in ["trace", "daemon", "doctor", "--idle-threshold", "--port"] {
            assert!(script.contains(word), "{word} completes");
        }
    }
}
