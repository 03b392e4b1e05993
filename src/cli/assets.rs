//! `adaptive-workers generate-assets DIR`: the man pages and shell
//! completions that the packages ship, generated from the CLI definition so
//! that they can never drift from it.
//!
//! Layout written under DIR (the package manifests in Cargo.toml pick the
//! files up from there):
//!
//! ```text
//! DIR/man/adaptive-workers.1            the command
//! DIR/man/adaptive-workers-SUBCMD.1     one page per visible subcommand
//! DIR/completions/adaptive-workers.bash
//! DIR/completions/_adaptive-workers     zsh
//! DIR/completions/adaptive-workers.fish
//! ```

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// Writes every asset under `dir`, creating it if needed, and returns the
/// paths written (sorted) so that callers and tests can list them.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>> {
    let man_dir = dir.join("man");
    let completions_dir = dir.join("completions");
    for d in [&man_dir, &completions_dir] {
        fs::create_dir_all(d).with_context(|| format!("failed to create {}", d.display()))?;
    }

    let cmd = Cli::command();
    let name = cmd.get_name().to_owned();

    // One page for the command and one per visible subcommand; hidden
    // subcommands (this one among them) get none.
    clap_mangen::generate_to(cmd.clone(), &man_dir)
        .with_context(|| format!("failed to write man pages to {}", man_dir.display()))?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let file_name = match shell {
            Shell::Zsh => format!("_{name}"),
            other => format!("{name}.{other}"),
        };
        let path = completions_dir.join(file_name);
        write_file(&path, |w| {
            clap_complete::generate(shell, &mut cmd.clone(), &name, w);
            Ok(())
        })?;
    }

    let mut written = Vec::new();
    for d in [&man_dir, &completions_dir] {
        for entry in fs::read_dir(d).with_context(|| format!("failed to list {}", d.display()))? {
            written.push(entry?.path());
        }
    }
    written.sort();
    Ok(written)
}

fn write_file(path: &Path, body: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let file =
        File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
    let mut w = BufWriter::new(file);
    body(&mut w)?;
    w.flush()
        .with_context(|| format!("failed to write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_man_pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        for expected in [
            "man/adaptive-workers.1",
            "man/adaptive-workers-daemon.1",
            "completions/adaptive-workers.bash",
            "completions/_adaptive-workers",
            "completions/adaptive-workers.fish",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        // The packaging-only subcommand stays out of the user's manual.
        assert!(
            !names.iter().any(|n| n.contains("generate-assets")),
            "{names:?}"
        );

        let page = fs::read_to_string(dir.path().join("man/adaptive-workers.1")).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH"),
            "not roff: {page:.80}"
        );
        assert!(page.contains("daemon"), "subcommand not listed");
        let bash =
            fs::read_to_string(dir.path().join("completions/adaptive-workers.bash")).unwrap();
        assert!(bash.contains("complete -F"), "not a bash completion");
    }
}
