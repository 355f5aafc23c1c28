//! The process's command line: read once, `--help` and `--version` answered. The option
//! table and the parser are [`crate::options`]; the help text is [`crate::help`].

use crate::exit::Error;
use crate::options::{self, Command, Options};
use std::ffi::OsString;

/// Parse the process's command line; `None` when `--help` or `--version` was answered.
pub fn parse_args(cmd: &Command) -> Result<Option<Options>, Error> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let opts = options::parse(cmd, &args)?;
    if opts.help {
        print!("{}", crate::help::help(cmd));
        return Ok(None);
    }
    if opts.version {
        print!(
            "{}",
            crate::groups::version_text(cmd.name, env!("CARGO_PKG_VERSION"))
        );
        return Ok(None);
    }
    Ok(Some(opts))
}
