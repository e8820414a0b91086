//! `hab`'s manual pages and shell completions, generated from its clap definition
//!
//! `cargo run -p hab --example gen_docs -- OUTDIR` writes
//!
//! - `OUTDIR/man1/hab.1` and one page per subcommand (`hab-status.1`, ...),
//!   each with a SEE ALSO section;
//! - `OUTDIR/completions/hab.bash`, `_hab` (zsh) and `hab.fish`.
//!
//! The pages are dated by `SOURCE_DATE_EPOCH` when it is set (as
//! reproducible builds date things), else today.
//!
//! `make deb` (scripts/deb.sh) installs them into the `hab` package. An
//! example rather than a build script or a subcommand, so the `hab` binary
//! does not carry clap_mangen and clap_complete. The output depends only on
//! the clap definition: the same sources give the same bytes.

use std::fs;
use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// The manual these pages belong to, in their title line.
const MANUAL: &str = "ha-balancer";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [outdir] = args.as_slice() else {
        eprintln!("usage: gen_docs OUTDIR");
        return ExitCode::from(64);
    };
    match generate(Path::new(outdir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_docs: {outdir}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(outdir: &Path) -> io::Result<()> {
    let mut cmd = hab::Cli::command().disable_help_subcommand(true);
    cmd.build();

    let date = date()?;
    let man1 = outdir.join("man1");
    fs::create_dir_all(&man1)?;
    let pages = pages(&cmd);
    for page in &pages {
        let mut roff = Vec::new();
        clap_mangen::Man::new(page.cmd.clone())
            .title(page.name.to_uppercase())
            .manual(MANUAL)
            .date(date.as_str())
            .source(format!("hab {}", env!("CARGO_PKG_VERSION")))
            .render(&mut roff)?;
        roff.extend_from_slice(see_also(page, &pages).as_bytes());
        fs::write(man1.join(format!("{}.1", page.name)), roff)?;
    }

    let completions = outdir.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, file) in [
        (Shell::Bash, "hab.bash"),
        (Shell::Zsh, "_hab"),
        (Shell::Fish, "hab.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "hab", &mut script);
        fs::write(completions.join(file), script)?;
    }
    Ok(())
}

/// `SOURCE_DATE_EPOCH` (else now) as YYYY-MM-DD, in UTC.
fn date() -> io::Result<String> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse::<u64>().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("SOURCE_DATE_EPOCH {s:?} is not a number of seconds"),
            )
        })?,
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    // days since 1970-01-01 to a civil date (Howard Hinnant's
    // civil_from_days, for days >= 0)
    let z = secs / 86_400 + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    Ok(format!("{year:04}-{month:02}-{day:02}"))
}

/// One manual page: `hab`, or a subcommand as `hab-status`.
struct Page {
    name: String,
    cmd: Command,
}

/// `hab` and each visible subcommand, named as git names its pages; the
/// subcommand's own name in its synopsis becomes `hab status`.
fn pages(cmd: &Command) -> Vec<Page> {
    let mut pages = vec![Page {
        name: cmd.get_name().to_owned(),
        cmd: cmd.clone(),
    }];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{}-{}", cmd.get_name(), sub.get_name());
        let usage = format!("{} {}", cmd.get_name(), sub.get_name());
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(usage)
            .version(env!("CARGO_PKG_VERSION"));
        pages.push(Page { name, cmd: sub });
    }
    pages
}

/// A SEE ALSO section naming the other pages of `hab` and the module's
/// directives page (ngx_http_upstream_ha_module(5), in the module's package).
fn see_also(page: &Page, pages: &[Page]) -> String {
    let refs: Vec<String> = pages
        .iter()
        .filter(|p| p.name != page.name)
        .map(|p| format!("\\fB{}\\fR(1)", p.name.replace('-', "\\-")))
        .chain(["\\fBngx_http_upstream_ha_module\\fR(5)".to_owned()])
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", refs.join(",\n"))
}
