//! A tiny command-line parser, so that the binary needs no dependency for it.
//!
//! Each subcommand describes itself with a [`Command`]: its positional arguments, its
//! `--name VALUE` options, each with a default and a line of help, and its `--name` flags. [`Command::parse`] turns
//! the words after the subcommand into [`Matches`], and `--help` text is generated from the
//! same description, so the help can never drift from what is accepted.

use std::fmt;
use std::str::FromStr;

/// One `--name VALUE` option of a subcommand.
pub struct Opt {
    /// Its name, without the dashes.
    pub name: &'static str,
    /// What its value is, in a word, for `--help` (`PORT`, `SECS`).
    pub value: &'static str,
    /// The value when the option is not given; `None`: no value.
    pub default: Option<&'static str>,
    /// One line for `--help`.
    pub help: &'static str,
}

/// A subcommand: its name, what it does, its positional arguments, options and flags.
pub struct Command {
    /// The word after `natchat`; or, for a program of its own that parses its command line
    /// with this module (`natchat-bench`), its name.
    pub name: &'static str,
    /// One line for the overview and `--help`.
    pub about: &'static str,
    /// Each positional argument's name and help line, in order.
    pub positionals: &'static [(&'static str, &'static str)],
    /// The `--name VALUE` options.
    pub options: &'static [Opt],
    /// The `--name` flags (no value: on when given), each with its help line.
    pub flags: &'static [(&'static str, &'static str)],
}

/// Why the command line was not accepted. Printed as one line, exit code 2.
#[derive(Debug)]
pub enum CliError {
    /// `--help` was asked for: print this text and exit 0.
    Help(String),
    /// The command line was wrong: this line says how, and where to look.
    Usage(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Help(text) | CliError::Usage(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for CliError {}

/// The parsed command line of one subcommand.
pub struct Matches {
    command: &'static str,
    positionals: Vec<String>,
    values: Vec<(&'static str, Option<String>)>,
    flags: Vec<&'static str>,
}

impl Command {
    /// Parses `args` (the words after the subcommand's name).
    pub fn parse(&self, args: &[String]) -> Result<Matches, CliError> {
        let mut values: Vec<(&'static str, Option<String>)> = self
            .options
            .iter()
            .map(|o| (o.name, o.default.map(str::to_string)))
            .collect();
        let mut positionals = Vec::new();
        let mut flags = Vec::new();
        let mut words = args.iter();
        while let Some(word) = words.next() {
            if word == "--help" || word == "-h" {
                return Err(CliError::Help(self.help()));
            }
            if let Some(flag) = word.strip_prefix("--") {
                let (name, inline) = match flag.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_string())),
                    None => (flag, None),
                };
                if let Some((known, _)) = self.flags.iter().find(|(n, _)| *n == name) {
                    if inline.is_some() {
                        return Err(self.usage(format!("--{name} takes no value")));
                    }
                    flags.push(*known);
                    continue;
                }
                let slot = values
                    .iter_mut()
                    .find(|(n, _)| *n == name)
                    .ok_or_else(|| self.usage(format!("unknown option --{name}")))?;
                let value = match inline {
                    Some(value) => value,
                    None => words
                        .next()
                        .cloned()
                        .ok_or_else(|| self.usage(format!("--{name} needs a value")))?,
                };
                slot.1 = Some(value);
            } else {
                positionals.push(word.clone());
            }
        }
        if positionals.len() != self.positionals.len() {
            let names: Vec<&str> = self.positionals.iter().map(|p| p.0).collect();
            return Err(self.usage(match names.len() {
                0 => format!("unexpected argument '{}'", positionals[0]),
                _ => format!("expected {} argument(s): {}", names.len(), names.join(" ")),
            }));
        }
        Ok(Matches {
            command: self.name,
            positionals,
            values,
            flags,
        })
    }

    fn usage(&self, problem: String) -> CliError {
        CliError::Usage(format!(
            "{problem}. Try '{} --help'.",
            invocation(self.name)
        ))
    }

    /// The `--help` text, generated from the description.
    pub fn help(&self) -> String {
        let invocation = invocation(self.name);
        let mut text = format!("{invocation}: {}\n\nUsage: {invocation}", self.about);
        for (name, _) in self.positionals {
            text += &format!(" {name}");
        }
        if !self.options.is_empty() {
            text += " [OPTIONS]";
        }
        text += "\n";
        if !self.positionals.is_empty() {
            text += "\nArguments:\n";
            for (name, help) in self.positionals {
                text += &format!("  {name:<24} {help}\n");
            }
        }
        text += "\nOptions:\n";
        for opt in self.options {
            let flag = format!("--{} {}", opt.name, opt.value);
            let default = opt
                .default
                .map(|d| format!(" [default: {d}]"))
                .unwrap_or_default();
            text += &format!("  {flag:<24} {}{default}\n", opt.help);
        }
        for (name, help) in self.flags {
            text += &format!("  {:<24} {help}\n", format!("--{name}"));
        }
        text += &format!("  {:<24} Print this help\n", "-h, --help");
        text
    }
}

impl Matches {
    /// The value of option `name`, parsed; `None` when it has no default and was not given.
    pub fn get<T: FromStr>(&self, name: &str) -> Result<Option<T>, CliError> {
        let raw = self
            .values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref());
        raw.map(|raw| self.convert(&format!("--{name}"), raw))
            .transpose()
    }

    /// The value of an option that has a default, parsed.
    pub fn value<T: FromStr>(&self, name: &str) -> Result<T, CliError> {
        self.get(name)?.ok_or_else(|| {
            CliError::Usage(format!(
                "--{name} is required. Try '{} --help'.",
                invocation(self.command)
            ))
        })
    }

    /// Whether flag `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }

    /// Positional argument `index`, parsed.
    pub fn positional<T: FromStr>(&self, index: usize, name: &str) -> Result<T, CliError> {
        self.convert(name, &self.positionals[index])
    }

    fn convert<T: FromStr>(&self, what: &str, raw: &str) -> Result<T, CliError> {
        raw.parse().map_err(|_| {
            CliError::Usage(format!(
                "invalid value '{raw}' for {what}. Try '{} --help'.",
                invocation(self.command)
            ))
        })
    }
}

/// How a command is typed: `natchat <name>` for a subcommand, the name alone for a program
/// of its own (`natchat-bench`).
fn invocation(name: &str) -> String {
    if name.starts_with("natchat-") {
        name.to_string()
    } else {
        format!("natchat {name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: Command = Command {
        name: "demo",
        about: "a demo",
        positionals: &[("HOST", "where")],
        options: &[Opt {
            name: "port",
            value: "PORT",
            default: Some("10080"),
            help: "the port",
        }],
        flags: &[("quiet", "say less")],
    };

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_flags_and_inline_values() {
        let m = CMD.parse(&words("host")).unwrap();
        assert_eq!(m.value::<u16>("port").unwrap(), 10080);
        assert_eq!(m.positional::<String>(0, "HOST").unwrap(), "host");
        let m = CMD.parse(&words("--port 7 host")).unwrap();
        assert_eq!(m.value::<u16>("port").unwrap(), 7);
        let m = CMD.parse(&words("host --port=8")).unwrap();
        assert_eq!(m.value::<u16>("port").unwrap(), 8);
        assert!(!m.flag("quiet"));
        assert!(CMD.parse(&words("--quiet host")).unwrap().flag("quiet"));
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        assert!(matches!(
            CMD.parse(&words("--nope 1 host")),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            CMD.parse(&words("host --port")),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(CMD.parse(&words("")), Err(CliError::Usage(_))));
        let bad = CMD.parse(&words("host --port 99999")).unwrap();
        assert!(bad.value::<u16>("port").is_err());
        assert!(matches!(
            CMD.parse(&words("--help")),
            Err(CliError::Help(_))
        ));
        assert!(matches!(
            CMD.parse(&words("host --quiet=yes")),
            Err(CliError::Usage(_))
        ));
        match CMD
            .parse(&words("host --port x"))
            .unwrap()
            .value::<u16>("port")
        {
            Err(CliError::Usage(line)) => assert_eq!(
                line,
                "invalid value 'x' for --port. Try 'natchat demo --help'."
            ),
            _ => panic!("a bad port is a usage error"),
        }
    }
}
