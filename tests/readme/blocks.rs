//! The README's shell blocks, as the README test runs them: each ```sh fence,
//! the mark in the HTML comment on the line before it (`<!-- readme-test: ...
//! -->`, invisible when rendered), and its commands with the output their
//! `# -> ...` comments show.

use std::path::PathBuf;

/// What the test does with a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// No mark: run each command in order; it must exit 0 and print what its
    /// `# -> ` comment shows.
    Run,
    /// `background until PATH`: the block blocks a terminal (`make run`); it is
    /// started in the background, the next blocks run once PATH exists, and it
    /// must have ended with status 0 after the last block.
    Background {
        /// The path whose appearance means the block is ready.
        until: PathBuf,
    },
    /// `vm`: run like [`Mark::Run`], but by the VM test (`make readme-vm`,
    /// after `make vm-e2e` and `make vm-image` built the guest images).
    Vm,
    /// `skip: REASON`: not run by this test; the reason says what covers it.
    Skip(String),
}

/// One command line (continuation lines joined) and the output it must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// 1-based line in the README.
    pub line: usize,
    /// The command as written (with its comments; bash drops them).
    pub text: String,
    /// The parts of `# -> a / b`: each must appear in the output, in order.
    pub expect: Vec<String>,
}

/// One ```sh block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// 1-based line of the opening fence.
    pub line: usize,
    /// What the test does with it.
    pub mark: Mark,
    /// Its commands, in order.
    pub cmds: Vec<Cmd>,
}

const MARK_PREFIX: &str = "<!-- readme-test:";
const EXPECT: &str = "# -> ";

/// Every ```sh block of `readme`, in order. Errors name the line: an unknown
/// mark, a mark not followed by a block, an unclosed block, an output comment
/// with no command before it.
pub fn parse(readme: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_end();
        if l.starts_with(MARK_PREFIX) && lines.get(i + 1).is_none_or(|n| n.trim_end() != "```sh") {
            return Err(format!(
                "line {}: a readme-test mark not followed by a ```sh block",
                i + 1
            ));
        }
        if l != "```sh" {
            i += 1;
            continue;
        }
        let mark = match i.checked_sub(1).map(|p| lines[p].trim()) {
            Some(m) if m.starts_with(MARK_PREFIX) => parse_mark(m).map_err(|e| format!("line {i}: {e}"))?,
            _ => Mark::Run,
        };
        let start = i + 1;
        let end = (start..lines.len())
            .find(|&j| lines[j].trim_end() == "```")
            .ok_or_else(|| format!("line {}: ```sh block never closed", i + 1))?;
        let cmds = commands(&lines[start..end], start + 1)?;
        blocks.push(Block {
            line: i + 1,
            mark,
            cmds,
        });
        i = end + 1;
    }
    Ok(blocks)
}

fn parse_mark(comment: &str) -> Result<Mark, String> {
    let body = comment
        .strip_prefix(MARK_PREFIX)
        .and_then(|r| r.strip_suffix("-->"))
        .map(str::trim)
        .ok_or_else(|| format!("malformed mark {comment:?}"))?;
    if let Some(path) = body.strip_prefix("background until ") {
        return Ok(Mark::Background {
            until: PathBuf::from(path.trim()),
        });
    }
    if body == "vm" {
        return Ok(Mark::Vm);
    }
    if let Some(reason) = body.strip_prefix("skip:") {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err("a skip mark needs a reason".into());
        }
        return Ok(Mark::Skip(reason.to_string()));
    }
    Err(format!(
        "unknown mark {body:?} (background until PATH, vm, skip: REASON)"
    ))
}

/// The commands of a block's lines; `first` is the README line of `lines[0]`.
fn commands(lines: &[&str], first: usize) -> Result<Vec<Cmd>, String> {
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut pending: Option<Cmd> = None;
    for (k, raw) in lines.iter().enumerate() {
        let line = first + k;
        if let Some(cmd) = pending.as_mut() {
            cmd.text.push('\n');
            cmd.text.push_str(raw);
            if !raw.ends_with('\\') {
                cmds.push(pending.take().unwrap());
            }
            continue;
        }
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with('#') {
            // A comment line: the output of the command above, or prose.
            if let Some(out) = t.strip_prefix(EXPECT) {
                let cmd = cmds
                    .last_mut()
                    .ok_or_else(|| format!("line {line}: an output comment before any command"))?;
                cmd.expect.extend(split_expect(out));
            }
            continue;
        }
        let expect = raw
            .find(EXPECT)
            .map(|at| split_expect(&raw[at + EXPECT.len()..]))
            .unwrap_or_default();
        let cmd = Cmd {
            line,
            text: raw.to_string(),
            expect,
        };
        if raw.ends_with('\\') {
            pending = Some(cmd);
        } else {
            cmds.push(cmd);
        }
    }
    if let Some(c) = pending {
        return Err(format!(
            "line {}: a continued command runs past the block's end",
            c.line
        ));
    }
    Ok(cmds)
}

fn split_expect(s: &str) -> Vec<String> {
    s.split(" / ")
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Whether each of `expect` appears in `output`, in order, each within one
/// line; the first one missing otherwise.
pub fn find_in_order<'a>(output: &str, expect: &'a [String]) -> Result<(), &'a str> {
    let mut lines = output.lines();
    for want in expect {
        if !lines.by_ref().any(|l| l.contains(want.as_str())) {
            return Err(want);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "text\n\
<!-- readme-test: background until /tmp/s.sock -->\n\
```sh\n\
make run\n\
```\n\
\n\
```sh\n\
# prose\n\
P=x\n\
$P check      # -> {\"status\": \"SERVING\"}\n\
$P run -- sh -c 'exit 3'; echo \"status $?\"\n\
                       # -> hello / status 3\n\
qemu -a \\\n\
  -b &\n\
```\n\
<!-- readme-test: skip: make vm-e2e boots it -->\n\
```sh\n\
make bench\n\
```\n\
<!-- readme-test: vm -->\n\
```sh\n\
make initrd\n\
```\n\
```\n\
not shell\n\
```\n";

    #[test]
    fn blocks_marks_commands_and_outputs() {
        let b = parse(SAMPLE).unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(
            b[0].mark,
            Mark::Background {
                until: "/tmp/s.sock".into()
            }
        );
        assert_eq!(b[0].line, 3);
        assert_eq!(b[1].mark, Mark::Run);
        let texts: Vec<_> = b[1].cmds.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "P=x",
                "$P check      # -> {\"status\": \"SERVING\"}",
                "$P run -- sh -c 'exit 3'; echo \"status $?\"",
                "qemu -a \\\n-b &"
            ]
        );
        assert_eq!(b[1].cmds[1].expect, ["{\"status\": \"SERVING\"}"]);
        assert_eq!(b[1].cmds[2].expect, ["hello", "status 3"]);
        assert_eq!(b[1].cmds[2].line, 11);
        assert_eq!(b[2].mark, Mark::Skip("make vm-e2e boots it".into()));
        assert_eq!(b[3].mark, Mark::Vm);
    }

    #[test]
    fn bad_marks_and_blocks_are_errors_naming_the_line() {
        let e = parse("<!-- readme-test: sometimes -->\n```sh\nx\n```\n").unwrap_err();
        assert!(e.starts_with("line 1: unknown mark"), "{e}");
        let e = parse("<!-- readme-test: skip: -->\n```sh\nx\n```\n").unwrap_err();
        assert!(e.contains("needs a reason"), "{e}");
        let e = parse("<!-- readme-test: skip: x -->\n\n```sh\nx\n```\n").unwrap_err();
        assert!(e.starts_with("line 1: a readme-test mark not followed"), "{e}");
        let e = parse("```sh\nx\n").unwrap_err();
        assert!(e.contains("never closed"), "{e}");
        let e = parse("```sh\n# -> out\nx\n```\n").unwrap_err();
        assert!(e.starts_with("line 2: an output comment before any command"), "{e}");
    }

    #[test]
    fn outputs_are_found_in_order_line_by_line() {
        let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            find_in_order("hello from demo\nstatus 3\n", &want(&["hello from demo", "status 3"])),
            Ok(())
        );
        assert_eq!(
            find_in_order("status 3\nhello\n", &want(&["hello", "status 3"])),
            Err("status 3")
        );
        assert_eq!(find_in_order("a b\n", &want(&["a b"])), Ok(()));
        assert_eq!(find_in_order("a\nb\n", &want(&["a\nb"])), Err("a\nb"));
    }
}
