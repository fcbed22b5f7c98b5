//! Agent configuration, layered: kernel command line, then the TOML file named by
//! `agent.config_file`, then the environment, then command-line flags. A later
//! layer overrides an earlier one key by key. A malformed value of a known key is
//! reported as a warning naming key and value, and the default (or the earlier
//! layer's value) stays.

pub mod cmdline;
pub mod file;
pub mod flags;

use std::path::{Path, PathBuf};
use std::time::Duration;

use protocols::addr::{self, Address};

/// The agent's default listen address, as Kata's agent.
pub const DEFAULT_SERVER_ADDR: &str = "vsock://-1:1024";
/// Default wait for a hot-plugged device.
pub const DEFAULT_HOTPLUG_TIMEOUT: Duration = Duration::from_secs(3);
/// Default vsock port of the debug console.
pub const DEFAULT_DEBUG_CONSOLE_VPORT: u32 = 1026;

/// Everything the agent reads at start.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Minimum level of log records (`agent.log`).
    pub log_level: slog::Level,
    /// Addresses to listen on, all at once (`agent.server_addr`, comma-separated).
    pub server_addrs: Vec<Address>,
    /// How long to wait for a hot-plugged device (`agent.hotplug_timeout`, seconds).
    pub hotplug_timeout: Duration,
    /// Start a shell on a vsock port (`agent.debug_console`).
    pub debug_console: bool,
    /// vsock port of the debug console (`agent.debug_console_vport`).
    pub debug_console_vport: u32,
    /// Pipe size for container stdio in bytes (`agent.container_pipe_size`); 0: the kernel's
    /// default for stdin, 1 MiB for stdout/stderr (see `sandbox::DEFAULT_OUTPUT_PIPE_SIZE`).
    pub container_pipe_size: u32,
    /// vsock port to stream logs to, 0 = off (`agent.log_vport`).
    pub log_vport: u32,
    /// Developer mode: debug logs, core dumps allowed (`agent.devmode`).
    pub dev_mode: bool,
    /// TOML file read after the kernel command line (`agent.config_file`).
    pub config_file: Option<PathBuf>,
    /// Also log to `/dev/kmsg` (always on when PID 1; `agent.log_kmsg` or `--kmsg`).
    pub log_kmsg: bool,
    /// Kernel modules to load at start, dependencies resolved from each `.ko`
    /// (`agent.kernel_modules=virtio_pci,vsock,...`, comma-separated; pith's own key).
    pub kernel_modules: Vec<String>,
    /// Connections served at once (`agent.max_connections`; pith's own key); `None`: half
    /// the open-file limit (see `server::limits`).
    pub max_connections: Option<usize>,
    /// A request frame must arrive whole this long after its first byte
    /// (`agent.frame_timeout`, seconds; pith's own key).
    pub frame_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            log_level: slog::Level::Info,
            server_addrs: vec![DEFAULT_SERVER_ADDR.parse().expect("default address parses")],
            hotplug_timeout: DEFAULT_HOTPLUG_TIMEOUT,
            debug_console: false,
            debug_console_vport: DEFAULT_DEBUG_CONSOLE_VPORT,
            container_pipe_size: 0,
            log_vport: 0,
            dev_mode: false,
            config_file: None,
            log_kmsg: false,
            kernel_modules: Vec::new(),
            max_connections: None,
            frame_timeout: crate::server::limits::DEFAULT_FRAME_TIMEOUT,
        }
    }
}

/// Values given on the agent's own command line; `None` leaves a key alone.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FlagOverrides {
    /// `--server-addr`, repeatable.
    pub server_addrs: Vec<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--config-file`.
    pub config_file: Option<PathBuf>,
    /// `--hotplug-timeout` in seconds.
    pub hotplug_timeout: Option<String>,
    /// `--kmsg`.
    pub log_kmsg: bool,
}

/// Where the layers come from; tests point these at files of their own.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// Kernel command line text (normally `/proc/cmdline`).
    pub cmdline: &'a str,
    /// Environment lookup.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Flags.
    pub flags: &'a FlagOverrides,
}

/// A loaded configuration and what was wrong with its inputs.
#[derive(Debug)]
pub struct Loaded {
    /// The merged configuration.
    pub config: AgentConfig,
    /// One line per ignored or malformed input, to log once logging is up.
    pub warnings: Vec<String>,
}

impl AgentConfig {
    /// Merges every layer; never fails: bad inputs become warnings.
    pub fn load(src: &Sources<'_>) -> Loaded {
        let mut cfg = AgentConfig::default();
        let mut warnings = Vec::new();

        for (key, value) in cmdline::parse(src.cmdline) {
            if let Some(k) = key.strip_prefix("agent.") {
                cfg.apply("kernel command line", k, value.as_deref(), &mut warnings);
            }
        }

        if let Some(path) = &src.flags.config_file {
            cfg.config_file = Some(path.clone());
        }
        if let Some(path) = cfg.config_file.clone() {
            match file::read(&path) {
                Ok(values) => {
                    warnings.extend(values.warnings);
                    let origin = format!("config file {}", path.display());
                    for (k, v) in values.pairs {
                        cfg.apply(&origin, k, Some(&v), &mut warnings);
                    }
                }
                Err(e) => warnings.push(format!("{e}; continuing without it")),
            }
        }

        for (var, key) in [
            ("KATA_AGENT_SERVER_ADDR", "server_addr"),
            ("PITH_AGENT_SERVER_ADDR", "server_addr"),
            ("PITH_AGENT_LOG_LEVEL", "log"),
        ] {
            if let Some(v) = (src.env)(var) {
                cfg.apply(&format!("environment {var}"), key, Some(&v), &mut warnings);
            }
        }

        let flags = src.flags;
        if !flags.server_addrs.is_empty() {
            let joined = flags.server_addrs.join(",");
            cfg.apply("flag --server-addr", "server_addr", Some(&joined), &mut warnings);
        }
        if let Some(v) = &flags.log_level {
            cfg.apply("flag --log-level", "log", Some(v), &mut warnings);
        }
        if let Some(v) = &flags.hotplug_timeout {
            cfg.apply("flag --hotplug-timeout", "hotplug_timeout", Some(v), &mut warnings);
        }
        if flags.log_kmsg {
            cfg.log_kmsg = true;
        }
        if cfg.dev_mode && cfg.log_level < slog::Level::Debug {
            cfg.log_level = slog::Level::Debug;
        }
        Loaded { config: cfg, warnings }
    }

    /// Sets one key from text; a bad value leaves the field as it was and warns.
    fn apply(&mut self, origin: &str, key: &str, value: Option<&str>, warnings: &mut Vec<String>) {
        let result: Result<(), String> = match key {
            "log" => need(value).and_then(parse_level).map(|l| self.log_level = l),
            "server_addr" => need(value)
                .and_then(|v| addr::parse_list(v).map_err(|e| e.to_string()))
                .and_then(|l| {
                    if l.is_empty() {
                        Err("no address given".into())
                    } else {
                        Ok(l)
                    }
                })
                .map(|l| self.server_addrs = l),
            "hotplug_timeout" => need(value).and_then(parse_seconds).map(|d| self.hotplug_timeout = d),
            "debug_console" => parse_flag(value).map(|b| self.debug_console = b),
            "devmode" => parse_flag(value).map(|b| self.dev_mode = b),
            "log_kmsg" => parse_flag(value).map(|b| self.log_kmsg = b),
            "debug_console_vport" => need(value).and_then(parse_u32).map(|p| self.debug_console_vport = p),
            "container_pipe_size" => need(value).and_then(parse_u32).map(|p| self.container_pipe_size = p),
            "log_vport" => need(value).and_then(parse_u32).map(|p| self.log_vport = p),
            "config_file" => need(value).map(|p| self.config_file = Some(PathBuf::from(p))),
            "kernel_modules" => need(value).and_then(parse_module_list).map(|l| self.kernel_modules = l),
            "max_connections" => need(value)
                .and_then(parse_u32)
                .and_then(|n| {
                    if n == 0 {
                        Err("must be at least 1".into())
                    } else {
                        Ok(n)
                    }
                })
                .map(|n| self.max_connections = Some(n as usize)),
            "frame_timeout" => need(value).and_then(parse_seconds).map(|d| self.frame_timeout = d),
            _ => Ok(()), // unknown keys are ignored, as Kata's agent does
        };
        if let Err(why) = result {
            let shown = value.map(|v| format!("={v:?}")).unwrap_or_default();
            warnings.push(format!(
                "{origin}: ignoring malformed agent.{key}{shown}: {why}; keeping {}",
                self.describe(key)
            ));
        }
    }

    fn describe(&self, key: &str) -> String {
        match key {
            "log" => format!("{:?}", self.log_level).to_lowercase(),
            "server_addr" => self
                .server_addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            "hotplug_timeout" => format!("{}s", self.hotplug_timeout.as_secs_f64()),
            "debug_console" => self.debug_console.to_string(),
            "devmode" => self.dev_mode.to_string(),
            "log_kmsg" => self.log_kmsg.to_string(),
            "debug_console_vport" => self.debug_console_vport.to_string(),
            "container_pipe_size" => self.container_pipe_size.to_string(),
            "log_vport" => self.log_vport.to_string(),
            "kernel_modules" => format!("{:?}", self.kernel_modules),
            "max_connections" => self
                .max_connections
                .map_or_else(|| "half the open-file limit".to_string(), |n| n.to_string()),
            "frame_timeout" => format!("{}s", self.frame_timeout.as_secs_f64()),
            _ => "the previous value".into(),
        }
    }
}

fn need(value: Option<&str>) -> Result<&str, String> {
    value.ok_or_else(|| "a value is required".to_string())
}

/// Parses a log level name as Kata accepts them.
pub fn parse_level(v: &str) -> Result<slog::Level, String> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "critical" | "fatal" | "panic" => slog::Level::Critical,
        "error" => slog::Level::Error,
        "warn" | "warning" => slog::Level::Warning,
        "info" => slog::Level::Info,
        "debug" => slog::Level::Debug,
        "trace" => slog::Level::Trace,
        _ => return Err("not one of critical, error, warn, info, debug, trace".into()),
    })
}

fn parse_seconds(v: &str) -> Result<Duration, String> {
    match v.parse::<u64>() {
        Ok(s) if s > 0 && s <= 3600 => Ok(Duration::from_secs(s)),
        _ => Err("not a whole number of seconds in 1..=3600".into()),
    }
}

/// A comma-separated list of module names; each a plain file name stem.
fn parse_module_list(v: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    match names.iter().find(|n| n.contains('/') || n.starts_with('.')) {
        Some(bad) => Err(format!("{bad:?} is not a module name")),
        None => Ok(names),
    }
}

fn parse_u32(v: &str) -> Result<u32, String> {
    v.parse::<u32>().map_err(|_| "not a number in 0..=4294967295".into())
}

fn parse_flag(v: Option<&str>) -> Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("1") | Some("true") | Some("yes") | Some("on") => Ok(true),
        Some("0") | Some("false") | Some("no") | Some("off") => Ok(false),
        Some(_) => Err("not a boolean (true/false, 1/0, yes/no, on/off)".into()),
    }
}

/// Reads a kernel command line file, `""` when it does not exist.
pub fn read_cmdline(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    fn load(cmdline: &str, env: &[(&str, &str)], flags: &FlagOverrides) -> Loaded {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |k: &str| env.get(k).cloned();
        AgentConfig::load(&Sources {
            cmdline,
            env: &lookup,
            flags,
        })
    }

    #[test]
    fn defaults_without_input() {
        let l = load("", &[], &FlagOverrides::default());
        assert_eq!(l.config, AgentConfig::default());
        assert!(l.warnings.is_empty());
        assert_eq!(l.config.server_addrs[0].to_string(), "vsock://-1:1024");
    }

    #[test]
    fn kernel_command_line_keys() {
        let l = load(
            "quiet agent.log=debug agent.server_addr=unix:///tmp/x.sock agent.hotplug_timeout=10 \
             agent.debug_console agent.debug_console_vport=2000 agent.container_pipe_size=65536 \
             agent.log_vport=1025 agent.trace=true agent.kernel_modules=virtio_pci,vmw_vsock_virtio_transport",
            &[],
            &FlagOverrides::default(),
        );
        let c = &l.config;
        assert_eq!(c.log_level, slog::Level::Debug);
        assert_eq!(c.server_addrs, vec![Address::Unix("/tmp/x.sock".into())]);
        assert_eq!(c.hotplug_timeout, Duration::from_secs(10));
        assert!(c.debug_console);
        assert_eq!(c.debug_console_vport, 2000);
        assert_eq!(c.container_pipe_size, 65536);
        assert_eq!(c.log_vport, 1025);
        assert_eq!(c.kernel_modules, ["virtio_pci", "vmw_vsock_virtio_transport"]);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let l = load(
            "agent.max_connections=64 agent.frame_timeout=2",
            &[],
            &FlagOverrides::default(),
        );
        assert_eq!(l.config.max_connections, Some(64));
        assert_eq!(l.config.frame_timeout, Duration::from_secs(2));
        let l = load(
            "agent.max_connections=0 agent.frame_timeout=0",
            &[],
            &FlagOverrides::default(),
        );
        assert_eq!(
            (l.config.max_connections, l.config.frame_timeout),
            (None, Duration::from_secs(10))
        );
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        let l = load("agent.kernel_modules=../evil", &[], &FlagOverrides::default());
        assert!(l.config.kernel_modules.is_empty());
        assert!(l.warnings[0].contains("not a module name"), "{:?}", l.warnings);
    }

    #[test]
    fn malformed_values_warn_and_keep_default() {
        let l = load(
            "agent.hotplug_timeout=soon agent.log=loud agent.server_addr=tcp://1:2 agent.debug_console=maybe",
            &[],
            &FlagOverrides::default(),
        );
        assert_eq!(l.config, AgentConfig::default());
        assert_eq!(l.warnings.len(), 4, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("agent.hotplug_timeout=\"soon\"") && l.warnings[0].contains("keeping 3s"));
        assert!(l.warnings[1].contains("agent.log=\"loud\""));
        assert!(l.warnings[2].contains("agent.server_addr=\"tcp://1:2\""));
        assert!(l.warnings[3].contains("agent.debug_console=\"maybe\""));
    }

    #[test]
    fn layers_override_in_order() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "log_level = \"warn\"\nhotplug_timeout = 5\nserver_addr = \"unix:///tmp/file.sock\""
        )
        .unwrap();
        let cmdline = format!(
            "agent.log=debug agent.hotplug_timeout=4 agent.config_file={}",
            f.path().display()
        );

        // file overrides the command line
        let l = load(&cmdline, &[], &FlagOverrides::default());
        assert_eq!(l.config.log_level, slog::Level::Warning);
        assert_eq!(l.config.hotplug_timeout, Duration::from_secs(5));
        assert_eq!(l.config.server_addrs, vec![Address::Unix("/tmp/file.sock".into())]);

        // environment overrides the file; PITH_ wins over KATA_
        let env = [
            ("KATA_AGENT_SERVER_ADDR", "unix:///tmp/kata.sock"),
            ("PITH_AGENT_SERVER_ADDR", "unix:///tmp/pith.sock"),
            ("PITH_AGENT_LOG_LEVEL", "error"),
        ];
        let l = load(&cmdline, &env, &FlagOverrides::default());
        assert_eq!(l.config.server_addrs, vec![Address::Unix("/tmp/pith.sock".into())]);
        assert_eq!(l.config.log_level, slog::Level::Error);
        let l = load(&cmdline, &env[..1], &FlagOverrides::default());
        assert_eq!(l.config.server_addrs, vec![Address::Unix("/tmp/kata.sock".into())]);

        // flags override everything
        let flags = FlagOverrides {
            server_addrs: vec!["unix:///tmp/flag.sock".into(), "vsock://-1:1024".into()],
            log_level: Some("trace".into()),
            ..Default::default()
        };
        let l = load(&cmdline, &env, &flags);
        assert_eq!(l.config.server_addrs.len(), 2);
        assert_eq!(l.config.log_level, slog::Level::Trace);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn missing_config_file_warns() {
        let l = load(
            "agent.config_file=/nonexistent/pith.toml",
            &[],
            &FlagOverrides::default(),
        );
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0].contains("/nonexistent/pith.toml"), "{:?}", l.warnings);
    }

    #[test]
    fn devmode_implies_debug() {
        let l = load("agent.devmode", &[], &FlagOverrides::default());
        assert!(l.config.dev_mode);
        assert_eq!(l.config.log_level, slog::Level::Debug);
    }
}
