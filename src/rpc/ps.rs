//! `ListProcesses` output: the container's processes as a JSON array of pids,
//! or as a `ps -ef`-like table read from /proc (the guest need not have `ps`).

use std::fmt::Write;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    uid: u32,
    pid: i32,
    ppid: i32,
    state: char,
    cpu_secs: u64,
    cmd: String,
}

/// Reads one process from /proc; None when it has gone.
fn read_row(pid: i32) -> Option<Row> {
    let stat = rustjail::pseudo_file::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may hold spaces: split after the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    // SAFETY: sysconf with a constant argument.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = rustjail::pseudo_file::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cmd = if args.is_empty() {
        format!("[{comm}]")
    } else {
        args.join(" ")
    };
    Some(Row {
        uid,
        pid,
        ppid,
        state,
        cpu_secs: ticks / hz,
        cmd,
    })
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from("UID        PID     PPID  S     TIME CMD\n");
    for r in rows {
        let t = r.cpu_secs;
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>8}  {} {:02}:{:02}:{:02} {}",
            r.uid,
            r.pid,
            r.ppid,
            r.state,
            t / 3600,
            t / 60 % 60,
            t % 60,
            r.cmd
        );
    }
    out
}

/// The process list in `format` ("table", "json"; empty means table).
pub fn render(pids: &[i32], format: &str) -> Result<Vec<u8>, String> {
    let mut pids = pids.to_vec();
    pids.sort_unstable();
    match format {
        "json" => serde_json::to_vec(&pids).map_err(|e| e.to_string()),
        "" | "table" => {
            let rows: Vec<Row> = pids.iter().filter_map(|&p| read_row(p)).collect();
            Ok(table(&rows).into_bytes())
        }
        other => Err(format!(
            "unknown process list format {other:?} (expected \"table\" or \"json\")"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_a_sorted_pid_array() {
        assert_eq!(render(&[30, 4], "json").unwrap(), b"[4,30]");
        assert!(render(&[1], "yaml").unwrap_err().contains("yaml"));
    }

    #[test]
    fn table_lists_this_process_with_its_command() {
        let me = std::process::id() as i32;
        let text = String::from_utf8(render(&[me], "table").unwrap()).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("UID"));
        let row = lines.next().unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], me.to_string());
        let exe = std::env::current_exe().unwrap();
        assert!(row.contains(exe.file_name().unwrap().to_str().unwrap()), "{row}");
        // A pid that does not exist is left out, not an error.
        assert_eq!(
            String::from_utf8(render(&[i32::MAX], "table").unwrap())
                .unwrap()
                .lines()
                .count(),
            1
        );
    }
}
