//! The `--help` text, generated from the tables: the option table (forms, value names,
//! defaults, help lines), the variables' table (read, removed from prog's environment
//! unless `-Z`, set for prog) and the exit codes' table. The documentation test reads it
//! back and compares it with the tables and the manual pages.

use crate::options::{Command, Groups, Initially};
use crate::variables;

/// The heading of the variables a program reads.
pub const READ: &str = "environment read:";
/// The heading of the variables removed from prog's environment unless `-Z`.
pub const REMOVED: &str = "removed from prog's environment unless -Z:";
/// The heading of the variables set for prog.
pub const GIVEN: &str = "set for prog:";

/// The `--help` text of `cmd`.
pub fn help(cmd: &Command) -> String {
    let mut s = String::from(cmd.usage);
    s.push_str("\noptions:\n");
    for o in cmd.options() {
        let mut forms = String::new();
        if let Some(c) = o.short {
            forms.push('-');
            forms.push(c);
            if let Some(a) = o.arg {
                forms.push(' ');
                forms.push_str(a);
            }
            forms.push_str(", ");
        }
        forms.push_str("--");
        forms.push_str(o.long);
        if let Some(a) = o.arg {
            forms.push('=');
            forms.push_str(a);
        }
        let default = match o.default {
            Initially::Unsaid => String::new(),
            Initially::Set => " (default)".into(),
            Initially::Value(v) | Initially::Words(v) => format!(" (default: {v})"),
        };
        s.push_str(&format!("  {forms:<32} {}{default}\n", o.help));
    }
    s.push('\n');
    let names = |vars: &mut dyn Iterator<Item = &variables::Var>| {
        vars.map(|v| v.name).collect::<Vec<_>>().join(" ")
    };
    s.push_str(&format!(
        "{READ} {}\n",
        names(&mut variables::read_by(cmd.groups))
    ));
    s.push_str(&format!("{REMOVED} {}\n", names(&mut variables::secrets())));
    s.push_str(&format!(
        "{GIVEN} {}\n",
        names(&mut variables::given_by(cmd.groups))
    ));
    if cmd.groups.contains(Groups::LISTEN) {
        // The server's own status: a connection's status is its process's, only logged.
        s.push_str(
            "\nexit status:\n  zero after SIGTERM or SIGINT (a connection's status is its process's, logged with -v 2), or\n",
        );
    } else {
        s.push_str(
            "\nexit status:\n  the child's status (128+N when it was killed by signal N), or\n",
        );
    }
    for (code, what) in crate::exit::CODES {
        s.push_str(&format!("  {code:<4} {what}\n"));
    }
    s.push_str(&format!("\nSee {}(1) for the whole interface.\n", cmd.name));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_option_and_its_default() {
        let cmd = Command {
            name: "server",
            groups: Groups::COMMON.with(Groups::SERVER),
            usage: "usage: server\n",
        };
        let h = help(&cmd);
        for o in cmd.options() {
            assert!(h.contains(&format!("--{}", o.long)), "{}", o.long);
        }
        assert!(h.contains("-K DUR, --handshake-timeout=DUR"), "{h}");
        assert!(h.contains("(0: none) (default: 30s)\n"), "{h}");
        assert!(h.contains("keep reading (default)\n"), "{h}");
        assert!(
            h.contains("\nenvironment read: CERTFILE KEYFILE CERTFILE:name"),
            "{h}"
        );
        assert!(
            h.contains(" TICKETKEYFILE TICKETLIFETIME OPENSSL_CONF\n"),
            "{h}"
        );
    }
}
