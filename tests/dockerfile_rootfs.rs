//! Checks of `Dockerfile.rootfs` that need no Docker (`make vm-image` builds
//! and boots it for real): every file it copies from the build context exists
//! and reaches the context, its agent stage takes exactly `make static`'s
//! binary, no stage starts from a registry image, and the service variant's
//! unit carries Kata's hardening.

use std::path::Path;

fn repo(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Dockerfile instructions with continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

/// `(stage name, instructions)` for each `FROM ... AS name` stage.
fn stages(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for ins in instructions(text) {
        let words: Vec<&str> = ins.split_whitespace().collect();
        if words[0].eq_ignore_ascii_case("FROM") {
            let name = match words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
                Some(i) => words[i + 1].to_string(),
                None => String::new(),
            };
            out.push((name, Vec::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push(ins);
        }
    }
    out
}

/// The value of `NAME := value` in the Makefile.
fn make_var(makefile: &str, name: &str) -> String {
    makefile
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(":=")?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("Makefile sets no {name}"))
}

/// `.dockerignore`: the patterns that leave paths out, and the `!` exceptions
/// that let paths back in.
fn dockerignore() -> (Vec<String>, Vec<String>) {
    let text = repo(".dockerignore");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let ignored = lines
        .iter()
        .filter(|l| !l.starts_with('!'))
        .map(|l| l.to_string())
        .collect();
    let back = lines
        .iter()
        .filter_map(|l| l.strip_prefix('!'))
        .map(String::from)
        .collect();
    (ignored, back)
}

/// The Makefile's `STATIC_BIN`, with `MUSL_TARGET` expanded.
fn static_bin() -> String {
    let makefile = repo("Makefile");
    make_var(&makefile, "STATIC_BIN").replace("$(MUSL_TARGET)", &make_var(&makefile, "MUSL_TARGET"))
}

#[test]
fn every_copied_file_exists() {
    let text = repo("Dockerfile.rootfs");
    let (ignored, back) = dockerignore();
    // target/ holds gigabytes that docker would send as context.
    assert!(
        ignored.iter().any(|i| i == "target"),
        ".dockerignore must leave out target"
    );
    let mut copies = 0;
    for ins in instructions(&text) {
        let words: Vec<&str> = ins.split_whitespace().collect();
        if !words[0].eq_ignore_ascii_case("COPY") && !words[0].eq_ignore_ascii_case("ADD") {
            continue;
        }
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue; // from another stage, not the build context
        }
        let args: Vec<&str> = words[1..].iter().copied().filter(|w| !w.starts_with("--")).collect();
        assert!(args.len() >= 2, "COPY without source and destination: {ins}");
        let built = static_bin();
        for src in &args[..args.len() - 1] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
            // `make static` writes the agent before `make rootfs` reads it (a clean
            // checkout has none yet); agent_stage_takes_make_static_output checks that rule.
            assert!(
                p.exists() || *src == built,
                "Dockerfile.rootfs copies {src}, which does not exist"
            );
            let top = src.split('/').next().unwrap();
            assert!(
                !ignored.iter().any(|i| i == top) || back.iter().any(|b| b == src),
                ".dockerignore leaves {src} out of the build context"
            );
            copies += 1;
        }
    }
    assert!(copies >= 3, "only {copies} COPY sources found");
}

#[test]
fn agent_stage_takes_make_static_output() {
    let text = repo("Dockerfile.rootfs");
    let makefile = repo("Makefile");
    let stages = stages(&text);
    let bin = static_bin();
    // The agent stage holds exactly the binary `make static` wrote...
    let agent = &stages
        .iter()
        .find(|(n, _)| n == "agent")
        .expect("a stage named agent")
        .1;
    assert_eq!(agent, &[format!("COPY {bin} /pith-agent")], "the agent stage");
    assert!(text.contains("FROM scratch AS agent"), "the agent stage starts empty");
    // ...which is the one file of target/ in the build context...
    let (_, back) = dockerignore();
    assert_eq!(back, std::slice::from_ref(&bin), ".dockerignore lets in only {bin}");
    // ...and which the Makefile builds before the rootfs, with the guest profile for musl.
    for target in ["rootfs: static", "image: static"] {
        assert!(makefile.lines().any(|l| l == target), "Makefile lacks `{target}`");
    }
    let recipe: Vec<&str> = makefile
        .lines()
        .skip_while(|l| !l.starts_with("static:"))
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .collect();
    assert!(
        recipe
            .iter()
            .any(|l| l.contains("build --profile guest --target $(MUSL_TARGET) --bin pith-agent")),
        "{recipe:?}"
    );
    // Both variants install it.
    let from_agent: Vec<String> = instructions(&text)
        .into_iter()
        .filter(|i| i.starts_with("COPY --from=agent"))
        .collect();
    assert_eq!(
        from_agent, ["COPY --from=agent /pith-agent /usr/bin/pith-agent"; 2],
        "{from_agent:?}"
    );
    for v in ["rootfs-init", "rootfs-service"] {
        assert!(stages.iter().any(|(n, _)| n == v), "no stage {v}");
    }
    assert!(text.contains("ARG VARIANT=init") && text.contains("FROM rootfs-${VARIANT}"));
    let init = &stages.iter().find(|(n, _)| n == "rootfs-init").unwrap().1;
    assert!(
        init.iter().any(|i| i.contains("/sbin/init")),
        "init variant has no /sbin/init"
    );
}

#[test]
fn no_stage_starts_from_a_registry_image() {
    let text = repo("Dockerfile.rootfs");
    let names: Vec<String> = stages(&text).into_iter().map(|(n, _)| n).collect();
    for ins in instructions(&text) {
        let Some(from) = ins.strip_prefix("FROM ") else {
            continue;
        };
        let image = from.split_whitespace().next().unwrap();
        assert!(
            image == "scratch"
                || image == "${BASE_IMAGE}"
                || image == "rootfs-${VARIANT}"
                || names.iter().any(|n| n == image),
            "FROM {image}: only scratch, the stages of this file and BASE_IMAGE"
        );
    }
    // BASE_IMAGE is the image vm/rootfs.sh makes from Debian's packages.
    let default = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG BASE_IMAGE="))
        .expect("ARG BASE_IMAGE=...");
    let script = repo("vm/rootfs.sh");
    assert!(
        script.lines().any(|l| l == format!("BASE={default}")),
        "vm/rootfs.sh does not make {default}"
    );
    assert!(script.contains("mmdebstrap") && script.contains("docker import \"$VM/debian-base.tar\" \"$BASE\""));
}

#[test]
fn service_unit_has_kata_hardening() {
    let unit = repo("vm/pith-agent.service");
    for line in [
        // Under its keeper: crash recovery and live upgrade without systemd noticing.
        "ExecStart=/usr/bin/pith-agent --keeper",
        "Restart=on-failure",
        "LimitNOFILE=infinity",
        "OOMScoreAdjust=-997",
        "StartLimitAction=poweroff",
        "StandardOutput=tty",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "pith-agent.service lacks {line}"
        );
    }
    // A clean end of the agent ends the VM; a crash restarts it (so neither
    // FailureAction= nor SuccessAction=, which systemd 252 fires on a restart).
    assert!(
        unit.lines()
            .any(|l| l.starts_with("ExecStopPost=") && l.contains("SERVICE_RESULT") && l.contains("poweroff")),
        "pith-agent.service does not power off after a clean exit"
    );
    assert!(
        !unit
            .lines()
            .any(|l| l.starts_with("FailureAction=") || l.starts_with("SuccessAction=")),
        "pith-agent.service would power the VM off before restarting the agent"
    );
}
