//! `meshctl inject` / `meshctl uninject` flags, kept beside the commands so
//! main.rs only dispatches.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use mesh_injector::Settings;

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// YAML to mesh (several documents allowed); - reads stdin
    #[arg(
        short = 'f',
        long = "filename",
        env = "MESH_FILENAME",
        value_name = "FILE|-"
    )]
    pub file: PathBuf,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Args)]
pub struct UninjectArgs {
    /// YAML to remove the mesh from; - reads stdin
    #[arg(
        short = 'f',
        long = "filename",
        env = "MESH_FILENAME",
        value_name = "FILE|-"
    )]
    pub file: PathBuf,
}

/// The text of `file` (or stdin), and the name to show in errors.
fn read(file: &PathBuf) -> anyhow::Result<(String, String)> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        return Ok(("<stdin>".to_owned(), text));
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok((file.display().to_string(), text))
}

fn write(docs: &[serde_json::Value], notes: &[super::Note], verb: &str) -> anyhow::Result<()> {
    crate::cli::write_stdout(&super::render(docs))?;
    for n in notes {
        match (&n.reason, n.changed) {
            (_, true) => eprintln!("{verb} {}", n.object),
            (Some(reason), false) => eprintln!("unchanged {}: {reason}", n.object),
            (None, false) => eprintln!("unchanged {}", n.object),
        }
    }
    Ok(())
}

pub fn inject(args: InjectArgs) -> anyhow::Result<()> {
    let (name, text) = read(&args.file)?;
    let mut docs = super::parse(&name, &text)?;
    let notes = super::inject(&name, &mut docs, &args.settings)?;
    write(&docs, &notes, "injected")
}

pub fn uninject(args: UninjectArgs) -> anyhow::Result<()> {
    let (name, text) = read(&args.file)?;
    let mut docs = super::parse(&name, &text)?;
    let notes = super::uninject(&name, &mut docs)?;
    write(&docs, &notes, "uninjected")
}
