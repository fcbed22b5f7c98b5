//! The agent's own command line, parsed by hand.
//!
//! Why not clap (which `pithctl` uses): the agent has ten long flags and no
//! subcommands, and clap's builder was ~125 kB of the static guest binary,
//! whose budget is 4 MiB. The grammar and the messages follow clap's: `--flag
//! VALUE` or `--flag=VALUE`, `-h`/`--help`, `-V`/`--version`, exit status 2
//! with `error: ...` on stderr for a command line that cannot be used.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::AGENT_VERSION;

/// Everything the command line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// `--server-addr`, repeatable: addresses to listen on.
    pub server_addrs: Vec<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--config-file`: the TOML file (overrides `agent.config_file`).
    pub config_file: Option<PathBuf>,
    /// `--hotplug-timeout` in seconds.
    pub hotplug_timeout: Option<String>,
    /// `--cmdline`: the file to read the kernel command line from.
    pub cmdline: PathBuf,
    /// `--kmsg`: also log to the kernel log.
    pub kmsg: bool,
    /// `--kmsg-path`: the kernel log device.
    pub kmsg_path: PathBuf,
    /// `--state-dir`: container state and bundles.
    pub state_dir: PathBuf,
    /// `--resolv-conf`: the guest's resolv.conf.
    pub resolv_conf: PathBuf,
    /// `--sandbox-resolv-conf`: where CreateSandbox writes the sandbox's DNS.
    pub sandbox_resolv_conf: PathBuf,
    /// `--keeper`: run under a keeper that outlives the agent.
    pub keeper: bool,
}

/// One flag: its name, the value's name in help and errors (`None`: takes no
/// value), its default as help shows it, and its help line.
struct Flag {
    name: &'static str,
    value: Option<&'static str>,
    default: Option<&'static str>,
    help: &'static str,
}

const fn flag(
    name: &'static str,
    value: Option<&'static str>,
    default: Option<&'static str>,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        value,
        default,
        help,
    }
}

/// Every flag, in help order. [`Args::set`] gives each its meaning.
const FLAGS: &[Flag] = &[
    flag(
        "server-addr",
        Some("ADDR"),
        None,
        "Address to listen on (vsock://CID:PORT or unix:///path); repeat for several",
    ),
    flag(
        "log-level",
        Some("LEVEL"),
        None,
        "Log level: critical, error, warn, info, debug or trace",
    ),
    flag(
        "config-file",
        Some("FILE"),
        None,
        "TOML configuration file (overrides agent.config_file)",
    ),
    flag(
        "hotplug-timeout",
        Some("SECS"),
        None,
        "Seconds to wait for a hot-plugged device",
    ),
    flag(
        "cmdline",
        Some("FILE"),
        Some("/proc/cmdline"),
        "File to read the kernel command line from",
    ),
    flag(
        "kmsg",
        None,
        None,
        "Also write logs to the kernel log (always on when running as PID 1)",
    ),
    flag(
        "kmsg-path",
        Some("FILE"),
        Some("/dev/kmsg"),
        "Kernel log device to use with --kmsg",
    ),
    flag(
        "state-dir",
        Some("DIR"),
        Some("/run/pith"),
        "Directory for container state and bundles",
    ),
    flag(
        "resolv-conf",
        Some("FILE"),
        Some("/etc/resolv.conf"),
        "The guest's resolv.conf: CreateSandbox mounts the sandbox's DNS over it (when it exists, as kata-agent)",
    ),
    flag(
        "sandbox-resolv-conf",
        Some("FILE"),
        Some(crate::sandbox::dns::SANDBOX_RESOLV_CONF),
        "File CreateSandbox writes the sandbox's DNS servers to",
    ),
    flag(
        "keeper",
        None,
        None,
        "Run under a keeper: a small parent process that outlives the agent, holds the containers' stdio and exits, and restarts a crashed agent, which takes every container back from the state directory",
    ),
];

const ABOUT: &str = "The pith agent: runs containers inside a VM for a host runtime, speaking the Kata \
Containers agent protocol over vsock.\n\nConfiguration is read from the kernel command line (agent.* keys), \
then the TOML file named by agent.config_file, then PITH_AGENT_SERVER_ADDR / KATA_AGENT_SERVER_ADDR / \
PITH_AGENT_LOG_LEVEL, then these flags.";

const USAGE: &str = "Usage: pith-agent [OPTIONS]";

/// What a command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Run the agent.
    Run(Box<Args>),
    /// Print [`help`] and exit 0.
    Help,
    /// Print [`version`] and exit 0.
    Version,
    /// Print what this binary is and reads, as JSON, and exit 0: what an
    /// agent about to hand itself over to this binary checks first.
    UpgradeCheck,
}

/// A command line that cannot be used; `Display` is clap's wording, without the
/// leading `error: `.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum FlagError {
    /// An argument that is no flag of the agent (or a positional argument).
    #[error("unexpected argument '{0}' found")]
    Unexpected(String),
    /// A flag that needs a value came last.
    #[error("a value is required for '--{0} <{1}>' but none was supplied")]
    MissingValue(&'static str, &'static str),
    /// `--flag=value` for a flag that takes none.
    #[error("unexpected value '{1}' for '--{0}' found; no more were expected")]
    UnexpectedValue(&'static str, String),
    /// A single-valued flag given twice.
    #[error("the argument '--{0}{1}' cannot be used multiple times")]
    Repeated(&'static str, String),
    /// A value that is not UTF-8 where text is needed.
    #[error("invalid UTF-8 was detected in the value of '--{0}'")]
    NotUtf8(&'static str),
}

impl Default for Args {
    fn default() -> Self {
        let default = |name: &str| {
            let f = FLAGS.iter().find(|f| f.name == name).expect("a known flag");
            PathBuf::from(f.default.expect("a flag with a default"))
        };
        Args {
            server_addrs: Vec::new(),
            log_level: None,
            config_file: None,
            hotplug_timeout: None,
            cmdline: default("cmdline"),
            kmsg: false,
            kmsg_path: default("kmsg-path"),
            state_dir: default("state-dir"),
            resolv_conf: default("resolv-conf"),
            sandbox_resolv_conf: default("sandbox-resolv-conf"),
            keeper: false,
        }
    }
}

impl Args {
    /// Parses this process's arguments; prints help, the version or the error
    /// and exits as clap does (0, 0, 2) for anything but a run.
    pub fn from_env() -> Args {
        match parse(std::env::args_os().skip(1)) {
            Ok(Command::Run(args)) => *args,
            Ok(Command::Help) => {
                print!("{}", help());
                std::process::exit(0)
            }
            Ok(Command::Version) => {
                println!("{}", version());
                std::process::exit(0)
            }
            Ok(Command::UpgradeCheck) => {
                println!("{}", crate::upgrade::identity::Identity::ours().to_json());
                std::process::exit(0)
            }
            Err(e) => {
                let usage = match e {
                    FlagError::MissingValue(..) => String::new(),
                    _ => format!("{USAGE}\n\n"),
                };
                eprint!("error: {e}\n\n{usage}For more information, try '--help'.\n");
                std::process::exit(2)
            }
        }
    }

    /// Gives `value` to the flag `name` (one of [`FLAGS`]); `seen` says whether
    /// it was given before.
    fn set(&mut self, f: &'static Flag, value: Option<OsString>, seen: bool) -> Result<(), FlagError> {
        let text = |v: OsString| v.into_string().map_err(|_| FlagError::NotUtf8(f.name));
        if seen && f.name != "server-addr" {
            let shown = f.value.map(|v| format!(" <{v}>")).unwrap_or_default();
            return Err(FlagError::Repeated(f.name, shown));
        }
        let value = value.unwrap_or_default();
        match f.name {
            "server-addr" => self.server_addrs.push(text(value)?),
            "log-level" => self.log_level = Some(text(value)?),
            "config-file" => self.config_file = Some(value.into()),
            "hotplug-timeout" => self.hotplug_timeout = Some(text(value)?),
            "cmdline" => self.cmdline = value.into(),
            "kmsg" => self.kmsg = true,
            "kmsg-path" => self.kmsg_path = value.into(),
            "state-dir" => self.state_dir = value.into(),
            "resolv-conf" => self.resolv_conf = value.into(),
            "sandbox-resolv-conf" => self.sandbox_resolv_conf = value.into(),
            "keeper" => self.keeper = true,
            other => unreachable!("flag --{other} is in FLAGS but has no meaning"),
        }
        Ok(())
    }
}

/// Parses arguments (without the program name).
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Command, FlagError> {
    let mut args = Args::default();
    let mut seen = [false; FLAGS.len()];
    let mut argv = argv.into_iter();
    while let Some(arg) = argv.next() {
        let shown = arg.to_string_lossy().into_owned();
        let Some(body) = arg.to_str().and_then(|a| a.strip_prefix("--")) else {
            match shown.as_str() {
                "-h" => return Ok(Command::Help),
                "-V" => return Ok(Command::Version),
                _ => return Err(FlagError::Unexpected(shown)),
            }
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(OsString::from(v))),
            None => (body, None),
        };
        match name {
            "help" if inline.is_none() => return Ok(Command::Help),
            "version" if inline.is_none() => return Ok(Command::Version),
            "upgrade-check" if inline.is_none() => return Ok(Command::UpgradeCheck),
            _ => {}
        }
        let Some(i) = FLAGS.iter().position(|f| f.name == name) else {
            return Err(FlagError::Unexpected(shown));
        };
        let f = &FLAGS[i];
        let value = match (f.value, inline) {
            (None, Some(v)) => return Err(FlagError::UnexpectedValue(f.name, v.to_string_lossy().into_owned())),
            (None, None) => None,
            (Some(_), Some(v)) => Some(v),
            (Some(v), None) => Some(argv.next().ok_or(FlagError::MissingValue(f.name, v))?),
        };
        args.set(f, value, seen[i])?;
        seen[i] = true;
    }
    Ok(Command::Run(Box::new(args)))
}

/// `--version`'s line.
pub fn version() -> String {
    format!("pith-agent {AGENT_VERSION}")
}

/// `--help`'s text.
pub fn help() -> String {
    let mut out = format!("{ABOUT}\n\n{USAGE}\n\nOptions:\n");
    for f in FLAGS {
        let value = f.value.map(|v| format!(" <{v}>")).unwrap_or_default();
        let default = f.default.map(|d| format!(" [default: {d}]")).unwrap_or_default();
        out.push_str(&format!("      --{}{value}\n          {}{default}\n\n", f.name, f.help));
    }
    out.push_str("      --upgrade-check\n          Print this binary's version and the state versions it reads, as JSON (what an agent checks before it upgrades to this binary)\n\n");
    out.push_str("  -h, --help\n          Print help\n\n  -V, --version\n          Print version\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str]) -> Result<Args, FlagError> {
        match parse(argv.iter().map(OsString::from))? {
            Command::Run(a) => Ok(*a),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn no_flags_gives_the_defaults() {
        let a = run(&[]).unwrap();
        assert_eq!(a.cmdline, PathBuf::from("/proc/cmdline"));
        assert_eq!(a.kmsg_path, PathBuf::from("/dev/kmsg"));
        assert_eq!(a.state_dir, PathBuf::from("/run/pith"));
        assert_eq!(a.resolv_conf, PathBuf::from("/etc/resolv.conf"));
        assert_eq!(
            a.sandbox_resolv_conf,
            PathBuf::from(crate::sandbox::dns::SANDBOX_RESOLV_CONF)
        );
        assert!(a.server_addrs.is_empty() && a.log_level.is_none() && !a.kmsg);
    }

    #[test]
    fn every_flag_in_both_spellings() {
        let a = run(&[
            "--server-addr",
            "unix:///a",
            "--server-addr=vsock://-1:1024",
            "--log-level=debug",
            "--config-file",
            "/c.toml",
            "--hotplug-timeout",
            "7",
            "--cmdline=/dev/null",
            "--kmsg",
            "--kmsg-path",
            "/k",
            "--state-dir",
            "/s",
            "--resolv-conf=/r",
            "--sandbox-resolv-conf",
            "/sr",
        ])
        .unwrap();
        assert_eq!(a.server_addrs, ["unix:///a", "vsock://-1:1024"]);
        assert_eq!(a.log_level.as_deref(), Some("debug"));
        assert_eq!(a.config_file, Some(PathBuf::from("/c.toml")));
        assert_eq!(a.hotplug_timeout.as_deref(), Some("7"));
        assert_eq!(a.cmdline, PathBuf::from("/dev/null"));
        assert!(a.kmsg);
        assert_eq!(a.kmsg_path, PathBuf::from("/k"));
        assert_eq!(a.state_dir, PathBuf::from("/s"));
        assert_eq!(a.resolv_conf, PathBuf::from("/r"));
        assert_eq!(a.sandbox_resolv_conf, PathBuf::from("/sr"));
    }

    #[test]
    fn a_value_may_look_like_a_flag_or_be_empty() {
        let a = run(&["--log-level", "--kmsg", "--state-dir="]).unwrap();
        assert_eq!(a.log_level.as_deref(), Some("--kmsg"));
        assert!(!a.kmsg);
        assert_eq!(a.state_dir, PathBuf::from(""));
    }

    #[test]
    fn help_and_version() {
        for h in ["-h", "--help"] {
            assert_eq!(parse([OsString::from(h)]), Ok(Command::Help));
        }
        for v in ["-V", "--version"] {
            assert_eq!(parse([OsString::from(v)]), Ok(Command::Version));
        }
        // Help is answered where it comes: a later bad flag is not looked at.
        assert_eq!(
            parse(["--kmsg", "--help", "--bogus"].map(OsString::from)),
            Ok(Command::Help)
        );
        let text = help();
        for f in FLAGS {
            assert!(text.contains(&format!("--{}", f.name)), "{text}");
        }
        assert!(text.contains("[default: /run/pith]"), "{text}");
        assert_eq!(version(), format!("pith-agent {AGENT_VERSION}"));
    }

    #[test]
    fn bad_command_lines_are_named_as_clap_names_them() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bogus"], "unexpected argument '--bogus' found"),
            (&["--bogus=1"], "unexpected argument '--bogus=1' found"),
            (&["stray"], "unexpected argument 'stray' found"),
            (&["-x"], "unexpected argument '-x' found"),
            (
                &["--log-level"],
                "a value is required for '--log-level <LEVEL>' but none was supplied",
            ),
            (
                &["--kmsg=yes"],
                "unexpected value 'yes' for '--kmsg' found; no more were expected",
            ),
            (
                &["--state-dir", "/a", "--state-dir", "/b"],
                "the argument '--state-dir <DIR>' cannot be used multiple times",
            ),
            (
                &["--kmsg", "--kmsg"],
                "the argument '--kmsg' cannot be used multiple times",
            ),
            (&["--help=1"], "unexpected argument '--help=1' found"),
        ];
        for (argv, want) in cases {
            let err = run(argv).err().unwrap_or_else(|| panic!("{argv:?} parsed"));
            assert_eq!(err.to_string(), *want, "{argv:?}");
        }
    }

    #[test]
    fn a_path_need_not_be_utf8_but_text_must() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(b"/st\xffate".to_vec());
        let a = match parse([OsString::from("--state-dir"), raw.clone()]).unwrap() {
            Command::Run(a) => a,
            other => panic!("{other:?}"),
        };
        assert_eq!(a.state_dir.as_os_str(), raw.as_os_str());
        assert_eq!(
            parse([OsString::from("--log-level"), raw]),
            Err(FlagError::NotUtf8("log-level"))
        );
    }
}
