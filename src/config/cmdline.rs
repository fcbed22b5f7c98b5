//! Tokenizing a kernel command line into `key[=value]` words.

/// Splits a kernel command line into `(key, value)` pairs. Words are separated by
/// whitespace; double quotes group a value with spaces (`agent.x="a b"`), as the
/// kernel's own parser does. A word without `=` has no value (a flag).
pub fn parse(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    out.push(split_word(&word));
                    word.clear();
                    has_word = false;
                }
            }
            c => {
                word.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        out.push(split_word(&word));
    }
    out
}

fn split_word(word: &str) -> (String, Option<String>) {
    match word.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (word.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: Option<&str>) -> (String, Option<String>) {
        (k.to_string(), v.map(str::to_string))
    }

    #[test]
    fn words_flags_and_values() {
        let got = parse("console=ttyS0 quiet  agent.log=debug\nagent.debug_console\n");
        assert_eq!(
            got,
            vec![
                kv("console", Some("ttyS0")),
                kv("quiet", None),
                kv("agent.log", Some("debug")),
                kv("agent.debug_console", None),
            ]
        );
    }

    #[test]
    fn quotes_group_spaces_and_equals_stay_in_value() {
        let got = parse(r#"agent.x="a b" root=PARTUUID=1234 agent.empty="""#);
        assert_eq!(
            got,
            vec![
                kv("agent.x", Some("a b")),
                kv("root", Some("PARTUUID=1234")),
                kv("agent.empty", Some(""))
            ]
        );
    }
}
