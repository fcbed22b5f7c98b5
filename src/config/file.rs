//! The TOML configuration file named by `agent.config_file`.
//!
//! Keys follow the Kata agent's configuration file (`log_level`, `server_addr`,
//! `hotplug_timeout`, `debug_console`, `dev_mode`, ...). Values are handed to the
//! same parser as the kernel command line, so both accept the same spellings.

use std::path::Path;

/// Reads the file and returns `(canonical key, value)` pairs, plus warnings for
/// keys it does not know.
pub fn read(path: &Path) -> Result<(Vec<(&'static str, String)>, Vec<String>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("read config file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("parse config file {}: {e}", path.display()))
}

/// Parses TOML text; see [`read`].
pub fn parse(text: &str) -> Result<(Vec<(&'static str, String)>, Vec<String>), String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut pairs = Vec::new();
    let mut warnings = Vec::new();
    for (key, value) in &table {
        let Some(canonical) = canonical_key(key) else {
            warnings.push(format!("config file: ignoring unknown key {key:?}"));
            continue;
        };
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) if canonical == "server_addr" => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        pairs.push((canonical, value));
    }
    Ok((pairs, warnings))
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
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kata_style_file() {
        let (pairs, warnings) = parse(
            "log_level = \"debug\"\ndev_mode = true\nhotplug_timeout = 7\n\
             server_addr = [\"vsock://-1:1024\", \"unix:///tmp/a.sock\"]\nfrobnicate = 1\n",
        )
        .unwrap();
        assert!(pairs.contains(&("log", "debug".to_string())));
        assert!(pairs.contains(&("devmode", "true".to_string())));
        assert!(pairs.contains(&("hotplug_timeout", "7".to_string())));
        assert!(pairs.contains(&(
            "server_addr",
            "vsock://-1:1024,unix:///tmp/a.sock".to_string()
        )));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("frobnicate"));
    }

    #[test]
    fn broken_toml_is_an_error() {
        assert!(parse("log_level = ").is_err());
    }
}
