//! The bash script that runs the README's blocks in order, as a reader would
//! from the repository's root: each command in the shell itself (so `P=...`
//! and `cd` carry on to the next command of its block), with its output and
//! status in files of the work directory.
//!
//! The script runs as PID 1 of private mount, UTS, IPC, PID and network
//! namespaces (see `tests/readme.rs`); it first puts tmpfs over `/tmp` and
//! `/run` and over `target/run-state`, and a copy over `/etc/resolv.conf`, so
//! the paths the README names are private (a clone under `/tmp` or `/run`,
//! which holds the work directory too, is bound back over its own path
//! through a descriptor opened before the tmpfs hid it, not canonicalized by
//! `mount`, which would resolve it to the empty tmpfs); when it ends, the kernel kills
//! whatever it left running.

use std::fmt::Write;
use std::path::Path;

use super::blocks::{Block, Mark};

/// Files of command `n` of block `b` in the work directory.
pub fn out_file(b: usize, n: usize) -> String {
    format!("b{b}c{n}.out")
}

/// Status file of command `n` of block `b` (absent: it never ran).
pub fn rc_file(b: usize, n: usize) -> String {
    format!("b{b}c{n}.rc")
}

/// Output file of background block `b`.
pub fn bg_out_file(b: usize) -> String {
    format!("b{b}.bg.out")
}

/// Status file of background block `b` (written once it ended).
pub fn bg_rc_file(b: usize) -> String {
    format!("b{b}.bg.rc")
}

/// Set when a background block ended before its path appeared.
pub fn bg_early_file(b: usize) -> String {
    format!("b{b}.bg.early")
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script for the blocks of `blocks` whose mark `selected` takes, run from
/// `repo`, writing into `work`.
pub fn build(blocks: &[Block], repo: &Path, work: &Path, selected: impl Fn(&Mark) -> bool) -> String {
    let repo = quote(&repo.display().to_string());
    let w = quote(&work.display().to_string());
    let mut s = String::new();
    let _ = writeln!(s, "W={w}");
    // Private copies of what the README's commands write outside the build dir.
    let _ = writeln!(
        s,
        "cd {repo} || exit 90\n\
         cp /etc/resolv.conf \"$W/resolv.conf\" 2>/dev/null || : > \"$W/resolv.conf\"\n\
         mount --bind \"$W/resolv.conf\" /etc/resolv.conf || exit 91\n\
         exec 7<{repo}\n\
         mount -t tmpfs readme-tmp /tmp || exit 92\n\
         mount -t tmpfs readme-run /run || exit 93\n\
         case {repo} in /tmp/*|/run/*) mkdir -p {repo} && mount --no-canonicalize --bind /proc/self/fd/7 {repo} || exit 95;; esac\n\
         exec 7<&-\n\
         cd {repo} || exit 96\n\
         mkdir -p target/run-state && mount -t tmpfs readme-state target/run-state || exit 94"
    );
    let mut background = Vec::new();
    for (b, block) in blocks.iter().enumerate() {
        match &block.mark {
            m if !selected(m) => continue,
            Mark::Skip(_) => continue,
            Mark::Background { until } => {
                let body: Vec<&str> = block.cmds.iter().map(|c| c.text.as_str()).collect();
                let _ = writeln!(
                    s,
                    "cd {repo}\n{{ {}\n}} </dev/null >\"$W/{}\" 2>&1 &\nBG{b}=$!",
                    body.join("\n"),
                    bg_out_file(b)
                );
                let _ = writeln!(
                    s,
                    "until [ -e {until} ]; do kill -0 $BG{b} 2>/dev/null || {{ touch \"$W/{early}\"; wait $BG{b}; echo $? >\"$W/{rc}\"; exit 1; }}; sleep 0.1; done",
                    until = quote(&until.display().to_string()),
                    early = bg_early_file(b),
                    rc = bg_rc_file(b),
                );
                background.push(b);
            }
            Mark::Run | Mark::Vm => {
                let _ = writeln!(s, "cd {repo}");
                for (n, c) in block.cmds.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "{{ {}\n}} </dev/null >\"$W/{out}\" 2>&1\nrc=$?; echo $rc >\"$W/{rcf}\"; [ $rc = 0 ] || exit 1",
                        c.text,
                        out = out_file(b, n),
                        rcf = rc_file(b, n),
                    );
                }
            }
        }
    }
    // Background blocks must end by themselves (the README stops the agent).
    for b in background {
        let _ = writeln!(s, "wait $BG{b}; echo $? >\"$W/{}\"", bg_rc_file(b));
    }
    s
}
