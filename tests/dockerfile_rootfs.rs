//! Checks of `Dockerfile.rootfs` that need no Docker: every file it copies from
//! the build context exists, its build stage builds the agent with the same
//! command as `make static` and copies the binary from where the Makefile puts
//! it, and the service variant's unit carries Kata's hardening.

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

#[test]
fn every_copied_file_exists() {
    let text = repo("Dockerfile.rootfs");
    let dockerignore = repo(".dockerignore");
    let ignored: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // target/ holds gigabytes that docker would send as context.
    assert!(ignored.contains(&"target"), ".dockerignore must leave out target");
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
        for src in &args[..args.len() - 1] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
            assert!(p.exists(), "Dockerfile.rootfs copies {src}, which does not exist");
            let top = src.split('/').next().unwrap();
            assert!(
                !ignored.contains(&top),
                ".dockerignore leaves {src} out of the build context"
            );
            copies += 1;
        }
    }
    assert!(copies >= 8, "only {copies} COPY sources found");
}

#[test]
fn build_stage_runs_make_static_and_copies_its_output() {
    let text = repo("Dockerfile.rootfs");
    let makefile = repo("Makefile");
    let stages = stages(&text);
    let build = &stages
        .iter()
        .find(|(n, _)| n == "build")
        .expect("a stage named build")
        .1;
    let runs: Vec<&String> = build.iter().filter(|i| i.starts_with("RUN ")).collect();
    assert_eq!(
        runs,
        [&"RUN make static".to_string()],
        "the build stage must run what developers run"
    );
    // `make static` builds the guest profile for the musl target...
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
    // ...into STATIC_BIN, which is what the image stages copy.
    let bin = make_var(&makefile, "STATIC_BIN").replace("$(MUSL_TARGET)", &make_var(&makefile, "MUSL_TARGET"));
    let from_build: Vec<String> = instructions(&text)
        .into_iter()
        .filter(|i| i.starts_with("COPY --from=build"))
        .collect();
    assert_eq!(from_build.len(), 2, "{from_build:?}");
    for c in &from_build {
        assert!(c.contains(&format!("/src/{bin} ")), "{c} does not copy {bin}");
    }
    // Both variants exist and the build argument picks one.
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
fn service_unit_has_kata_hardening() {
    let unit = repo("vm/pith-agent.service");
    for line in [
        "ExecStart=/usr/bin/pith-agent",
        "Restart=on-failure",
        "LimitNOFILE=1073741824",
        "OOMScoreAdjust=-997",
        "FailureAction=poweroff",
        "StandardOutput=tty",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "pith-agent.service lacks {line}"
        );
    }
}
