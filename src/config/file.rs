//! The TOML configuration file named by `agent.config_file`.
//!
//! Keys follow the Kata agent's configuration file (`log_level`, `server_addr`,
//! `hotplug_timeout`, `debug_console`, `dev_mode`, ...). Values are handed to the
//! same parser as the kernel command line, so both accept the same spellings.

use std::path::Path;

/// What a configuration file says.
#[derive(Debug, Default)]
pub struct FileValues {
    /// `(canonical key, value)` pairs, by key.
    pub pairs: Vec<(&'static str, String)>,
    /// One line per key the agent does not know.
    pub warnings: Vec<String>,
}

/// A configuration file that cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// `open`/`read` failed.
    #[error("read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML.
    #[error("parse config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
}

/// Reads and parses the file.
pub fn read(path: &Path) -> Result<FileValues, FileError> {
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read { path: shown(), source })?;
    parse(&text).map_err(|message| FileError::Parse { path: shown(), message })
}

/// Parses TOML text; the error is the parser's message.
pub fn parse(text: &str) -> Result<FileValues, String> {
    use serde_json::Value;
    let table: serde_json::Map<String, Value> = basic_toml::from_str(text).map_err(|e| e.to_string())?;
    let mut pairs = Vec::new();
    let mut warnings = Vec::new();
    for (key, value) in &table {
        let Some(canonical) = canonical_key(key) else {
            warnings.push(format!("config file: ignoring unknown key {key:?}"));
            continue;
        };
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Array(items) if canonical == "server_addr" || canonical == "kernel_modules" => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            // Numbers and booleans as TOML writes them; anything else as JSON
            // text, for the key's parser to refuse by name.
            other => other.to_string(),
        };
        pairs.push((canonical, value));
    }
    Ok(FileValues { pairs, warnings })
}

fn canonical_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "log_level" | "log" => "log",
        "server_addr" => "server_addr",
        "hotplug_timeout" => "hotplug_timeout",
        "debug_console" => "debug_console",
        "debug_console_vport" => "debug_console_vport",
        "container_pipe_size" => "container_pipe_size",
        "log_vport" => "log_vport",
        "dev_mode" | "devmode" => "devmode",
        "log_kmsg" => "log_kmsg",
        "kernel_modules" => "kernel_modules",
        "max_connections" => "max_connections",
        "frame_timeout" => "frame_timeout",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kata_style_file() {
        let FileValues { pairs, warnings } = parse(
            "log_level = \"debug\"\ndev_mode = true\nhotplug_timeout = 7\n\
             server_addr = [\"vsock://-1:1024\", \"unix:///tmp/a.sock\"]\nfrobnicate = 1\n\
             kernel_modules = [\"virtio_pci\", \"vsock\"]\n",
        )
        .unwrap();
        assert!(pairs.contains(&("log", "debug".to_string())));
        assert!(pairs.contains(&("devmode", "true".to_string())));
        assert!(pairs.contains(&("hotplug_timeout", "7".to_string())));
        assert!(pairs.contains(&("server_addr", "vsock://-1:1024,unix:///tmp/a.sock".to_string())));
        assert!(pairs.contains(&("kernel_modules", "virtio_pci,vsock".to_string())));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("frobnicate"));
    }

    #[test]
    fn kata_tables_are_unknown_keys_and_odd_values_reach_the_key_parser() {
        let FileValues { pairs, warnings } = parse(
            "hotplug_timeout = 1.5\ndebug_console = { on = true }\n\
             [endpoints]\nallowed = [\"CreateContainerRequest\"]\n",
        )
        .unwrap();
        assert!(pairs.contains(&("hotplug_timeout", "1.5".to_string())), "{pairs:?}");
        assert!(
            pairs.contains(&("debug_console", "{\"on\":true}".to_string())),
            "{pairs:?}"
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"endpoints\""), "{warnings:?}");
    }

    #[test]
    fn broken_toml_is_an_error() {
        assert!(parse("log_level = ").is_err());
        let e = parse("log_level = \"a\"\nlog_level = \"b\"\n").err().unwrap();
        assert!(e.contains("log_level"), "{e}");
    }
}
