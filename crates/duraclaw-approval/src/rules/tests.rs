use super::*;
use proptest::prelude::*;
use serde_json::json;

const WT: &str = "/work/repo";

fn scoped(scope: RuleScope, rule: &str, action: RuleAction) -> ScopedRule {
    ScopedRule {
        id: None,
        scope,
        rule: Rule::parse(rule).unwrap(),
        action,
    }
}

fn bash(cmd: &str) -> Value {
    json!({ "command": cmd })
}

fn file(path: &str) -> Value {
    json!({ "file_path": path })
}

fn allows(rule: &str, tool: &str, input: &Value) -> bool {
    Rule::parse(rule)
        .unwrap()
        .matches(RuleAction::Allow, WT, tool, input)
}

fn denies(rule: &str, tool: &str, input: &Value) -> bool {
    Rule::parse(rule)
        .unwrap()
        .matches(RuleAction::Deny, WT, tool, input)
}

#[test]
fn parses_and_prints() {
    for text in [
        "Read",
        "Bash(git status*)",
        "Edit(src/**)",
        "mcp__github__get_issue",
        "Bash(echo (a))",
        "WebFetch(https://docs.rs/*)",
    ] {
        assert_eq!(Rule::parse(text).unwrap().to_string(), text);
    }
    let r = Rule::parse("Bash(git status*)").unwrap();
    assert_eq!((r.tool(), r.pattern()), ("Bash", Some("git status*")));
}

#[test]
fn malformed_rules_say_why() {
    let why = |t: &str| Rule::parse(t).unwrap_err().0;
    assert!(why("").contains("names no tool"));
    assert!(why("Bash(git status").contains("must end with `)`"));
    assert!(why("(x)").contains("names no tool"));
    assert!(why("Ba sh").contains("a tool name is"));
    assert!(why("Bash()").contains("pattern is empty"));
    assert!(why("Task(x)").contains("Task takes no pattern"));
    assert!(why("Edit(../x)").contains("cannot contain `..`"));
    assert!(why("Edit(src/../../x)").contains("cannot contain `..`"));
    assert!(why("Bash(a\nb)").contains("control character"));
    assert!(why("Bash(git status\u{202E}*)").contains("invisible"));
    assert!(why("Read(\u{200B}src/**)").contains("invisible"));
    assert!(why(&format!("Bash({})", "x".repeat(2000))).contains("longer than"));
}

#[test]
fn a_bare_tool_matches_every_call_of_it_only() {
    assert!(allows("Read", "Read", &file("/etc/passwd")));
    assert!(allows("Bash", "Bash", &bash("git status; rm -rf /")));
    assert!(!allows("Read", "ReadX", &file("a")));
    assert!(!allows("Read", "Edit", &file("a")));
}

#[test]
fn a_bash_prefix_allows_one_simple_command_only() {
    let rule = "Bash(git status*)";
    assert!(allows(rule, "Bash", &bash("git status")));
    assert!(allows(rule, "Bash", &bash("git status --short")));
    assert!(allows(rule, "Bash", &bash("  git status -s  ")));
    for hostile in [
        "git status; rm -rf /",
        "git status && rm -rf /",
        "git status || rm -rf /",
        "git status | sh",
        "git status\nrm -rf /",
        "git status\r\nrm -rf /",
        "git status `rm -rf /`",
        "git status $(rm -rf /)",
        "git status ${IFS}",
        "git status > ~/.bashrc",
        "git status < /dev/zero",
        "git status & rm -rf /",
        "git status \\\nrm",
        "git status (x)",
        "git status {a,b}",
        "git push",
        "sudo git status",
    ] {
        assert!(!allows(rule, "Bash", &bash(hostile)), "{hostile:?} allowed");
    }
    assert!(!allows(rule, "Bash", &json!({"command": 5})));
    assert!(!allows(rule, "Bash", &json!({})));
}

#[test]
fn an_exact_bash_rule_matches_that_command_only() {
    let rule = "Bash(make test && make lint)";
    assert!(allows(rule, "Bash", &bash("make test && make lint")));
    assert!(!allows(
        rule,
        "Bash",
        &bash("make test && make lint; rm -rf /")
    ));
    assert!(!allows(rule, "Bash", &bash("make test")));
    // Escaped wildcards are literal.
    assert!(allows(r"Bash(ls \*)", "Bash", &bash("ls *")));
    assert!(!allows(r"Bash(ls \*)", "Bash", &bash("ls a")));
}

#[test]
fn a_bash_deny_catches_the_command_inside_others() {
    let rule = "Bash(rm *)";
    for cmd in [
        "rm -rf /",
        "ls; rm -rf /",
        "ls && rm -rf /",
        "echo $(rm -rf /)",
        "echo `rm -rf /`",
        "true | rm x",
        "ls\nrm x",
        "(rm x)",
    ] {
        assert!(denies(rule, "Bash", &bash(cmd)), "{cmd:?} not denied");
    }
    assert!(!denies(rule, "Bash", &bash("ls -l")));
    assert!(!denies(rule, "Bash", &bash("echo rmx")));
}

#[test]
fn paths_resolve_against_the_worktree_and_never_escape() {
    let rule = "Edit(src/**)";
    assert!(allows(rule, "Edit", &file("src/main.rs")));
    assert!(allows(rule, "Edit", &file("/work/repo/src/a/b/c.rs")));
    assert!(allows(rule, "Edit", &file("./src/x.rs")));
    assert!(allows(rule, "Edit", &file("lib/../src/x.rs")));
    assert!(!allows(rule, "Edit", &file("src/../../etc/passwd")));
    assert!(!allows(rule, "Edit", &file("src/../Cargo.toml")));
    assert!(!allows(rule, "Edit", &file("/work/repo2/src/x.rs")));
    assert!(!allows(rule, "Edit", &file("/src/x.rs")));
    assert!(!allows(rule, "Edit", &file("/work/repo/../repo2/src/x")));
    assert!(!allows(rule, "Edit", &json!({"file_path": ["src/x"]})));
    // `*` stays within a segment; `**` spans segments.
    assert!(allows("Read(*.md)", "Read", &file("README.md")));
    assert!(!allows("Read(*.md)", "Read", &file("docs/a.md")));
    assert!(allows("Read(**/*.md)", "Read", &file("docs/a.md")));
    assert!(allows("Read(**/*.md)", "Read", &file("a.md")));
    assert!(allows("Read(src/**/mod.rs)", "Read", &file("src/mod.rs")));
    assert!(allows(
        "Read(src/**/mod.rs)",
        "Read",
        &file("src/a/b/mod.rs")
    ));
    assert!(!allows(
        "Read(src/**/mod.rs)",
        "Read",
        &file("src/a/b/lib.rs")
    ));
    // Absolute patterns match paths outside the worktree.
    assert!(allows("Read(/etc/*)", "Read", &file("/etc/hosts")));
    assert!(allows(
        "Read(/etc/*)",
        "Read",
        &file("/work/repo/../../etc/hosts")
    ));
    assert!(!allows(
        "Read(/etc/*)",
        "Read",
        &file("/work/repo/etc/hosts")
    ));
    // Glob/Grep/LS without a path search the worktree itself.
    assert!(allows("Grep(**)", "Grep", &json!({"pattern": "x"})));
    assert!(!allows("Grep(src/**)", "Grep", &json!({"pattern": "x"})));
    assert!(allows(
        "Grep(src/**)",
        "Grep",
        &json!({"pattern": "x", "path": "src"})
    ));
}

#[test]
fn text_tools_match_their_field() {
    let rule = "WebFetch(https://docs.rs/*)";
    assert!(allows(
        rule,
        "WebFetch",
        &json!({"url": "https://docs.rs/serde"})
    ));
    assert!(!allows(
        rule,
        "WebFetch",
        &json!({"url": "https://evil.example/docs.rs/"})
    ));
}

#[test]
fn precedence_deny_wins_then_the_most_specific_scope() {
    use RuleAction::*;
    use RuleScope::*;
    let set = RuleSet::new(
        WT,
        vec![
            scoped(User, "Bash(rm *)", Deny),
            scoped(Session, "Bash", Allow),
            scoped(User, "Read", Allow),
            scoped(Worktree, "Read(secrets/**)", Ask),
            scoped(User, "Edit", Ask),
            scoped(Worktree, "Edit(src/**)", Allow),
        ],
    );
    let v = set.evaluate("Bash", &bash("rm -rf /")).unwrap();
    assert_eq!(
        (v.action, v.rule.as_str(), v.scope),
        (Deny, "Bash(rm *)", User)
    );
    assert_eq!(v.describe(), "denied by rule Bash(rm *) (user scope)");
    let v = set.evaluate("Bash", &bash("ls")).unwrap();
    assert_eq!((v.action, v.scope), (Allow, Session));
    let v = set.evaluate("Read", &file("secrets/key")).unwrap();
    assert_eq!((v.action, v.scope), (Ask, Worktree));
    let v = set.evaluate("Read", &file("src/a")).unwrap();
    assert_eq!((v.action, v.rule.as_str()), (Allow, "Read"));
    let v = set.evaluate("Edit", &file("src/a")).unwrap();
    assert_eq!((v.action, v.scope), (Allow, Worktree));
    assert_eq!(set.evaluate("Edit", &file("README")).unwrap().action, Ask);
    assert_eq!(set.evaluate("Write", &file("a")), None);
}

#[test]
fn exact_rules_allow_exactly_the_call_shown() {
    let cases = [
        ("Bash", bash("git status"), "Bash(git status)"),
        ("Bash", bash("ls *.rs"), r"Bash(ls \*.rs)"),
        ("Edit", file("/work/repo/src/main.rs"), "Edit(src/main.rs)"),
        ("Read", file("/etc/hosts"), "Read(/etc/hosts)"),
        ("Task", json!({"prompt": "x"}), "Task"),
        (
            "WebFetch",
            json!({"url": "https://a.b/?q"}),
            r"WebFetch(https://a.b/\?q)",
        ),
    ];
    for (tool, input, want) in cases {
        let got = exact_rule(WT, tool, &input).unwrap();
        assert_eq!(got, want);
        assert!(allows(&got, tool, &input), "{got} does not allow its call");
    }
    let exact = exact_rule(WT, "Bash", &bash("ls *.rs")).unwrap();
    assert!(!allows(&exact, "Bash", &bash("ls a.rs")));
    assert_eq!(exact_rule(WT, "Bash", &bash("a\nb")), None);
    assert_eq!(exact_rule(WT, "Bash", &bash("ls \u{202E} x")), None);
    assert_eq!(exact_rule(WT, "Bash", &json!({})), None);
}

#[test]
fn presets_are_valid_rules() {
    for p in PRESETS {
        for (rule, _) in p.rules {
            Rule::parse(rule).unwrap();
        }
    }
    let reads = preset("reads_free").unwrap();
    let tools: Vec<&str> = reads.rules.iter().map(|(r, _)| *r).collect();
    assert_eq!(tools, ["Read", "Glob", "Grep", "LS"]);
    assert!(preset("nope").is_none());
}

fn any_scope() -> impl Strategy<Value = RuleScope> {
    prop_oneof![
        Just(RuleScope::User),
        Just(RuleScope::Worktree),
        Just(RuleScope::Session)
    ]
}

fn any_action() -> impl Strategy<Value = RuleAction> {
    prop_oneof![
        Just(RuleAction::Allow),
        Just(RuleAction::Ask),
        Just(RuleAction::Deny)
    ]
}

fn any_rule() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("Bash"),
        Just("Bash(git *)"),
        Just("Bash(rm *)"),
        Just("Bash(git status)"),
        Just("Read"),
    ]
}

fn any_command() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("git status"),
        Just("git push"),
        Just("rm -rf x"),
        Just("git status; rm -rf x"),
        Just("ls"),
    ]
}

proptest! {
    /// A deny that matches decides, whatever else matches at any scope.
    #[test]
    fn a_matching_deny_always_wins(
        rules in proptest::collection::vec((any_scope(), any_rule(), any_action()), 0..8),
        cmd in any_command(),
    ) {
        let set = RuleSet::new(WT, rules.iter().map(|(s, r, a)| scoped(*s, r, *a)).collect());
        let input = bash(cmd);
        let deny_matches = set.rules().iter().any(|r| {
            r.action == RuleAction::Deny && r.rule.matches(RuleAction::Deny, WT, "Bash", &input)
        });
        let verdict = set.evaluate("Bash", &input);
        prop_assert_eq!(deny_matches, verdict.as_ref().is_some_and(|v| v.action == RuleAction::Deny));
    }

    /// Without a deny, the decision comes from the most specific scope that
    /// has a matching rule, and an ask there beats an allow there.
    #[test]
    fn the_most_specific_scope_decides(
        rules in proptest::collection::vec((any_scope(), any_rule(), any_action()), 0..8),
        cmd in any_command(),
    ) {
        let set = RuleSet::new(WT, rules.iter().map(|(s, r, a)| scoped(*s, r, *a)).collect());
        let input = bash(cmd);
        let matching: Vec<&ScopedRule> = set
            .rules()
            .iter()
            .filter(|r| r.rule.matches(r.action, WT, "Bash", &input))
            .collect();
        let verdict = set.evaluate("Bash", &input);
        if matching.iter().any(|r| r.action == RuleAction::Deny) {
            return Ok(());
        }
        match matching.iter().map(|r| r.scope).max() {
            None => prop_assert_eq!(verdict, None),
            Some(top) => {
                let v = verdict.unwrap();
                prop_assert_eq!(v.scope, top);
                let ask_at_top = matching.iter().any(|r| r.scope == top && r.action == RuleAction::Ask);
                prop_assert_eq!(v.action == RuleAction::Ask, ask_at_top);
            }
        }
    }

    /// A wildcard allow never allows a command with a separator in it.
    #[test]
    fn a_wildcard_allow_never_allows_a_compound_command(
        head in "[a-z ]{0,8}",
        sep in prop_oneof![Just(";"), Just("&&"), Just("|"), Just("\n"), Just("`"), Just("$("), Just(">")],
        tail in "[a-z ]{0,8}",
    ) {
        let cmd = format!("git status{head}{sep}{tail}");
        prop_assert!(!allows("Bash(git status*)", "Bash", &bash(&cmd)));
        prop_assert!(!allows("Bash(*)", "Bash", &bash(&cmd)));
    }

    /// No relative path pattern matches a path outside the worktree.
    #[test]
    fn a_relative_pattern_never_matches_outside(
        ups in 1usize..4,
        rest in "[a-z]{1,5}(/[a-z]{1,5}){0,3}",
    ) {
        let path = format!("src/{}{rest}", "../".repeat(ups + 1));
        prop_assert!(!allows("Edit(**)", "Edit", &file(&path)));
        prop_assert!(!allows("Edit(*)", "Edit", &file(&path)));
    }

    /// Matching never panics and is bounded on hostile text.
    #[test]
    fn hostile_patterns_and_inputs_do_not_panic(p in "\\PC{0,40}", t in "\\PC{0,200}") {
        if let Ok(rule) = Rule::parse(&format!("Bash({p})")) {
            let _ = rule.matches(RuleAction::Allow, WT, "Bash", &bash(&t));
            let _ = rule.matches(RuleAction::Deny, WT, "Bash", &bash(&t));
        }
        if let Ok(rule) = Rule::parse(&format!("Edit({p})")) {
            let _ = rule.matches(RuleAction::Allow, WT, "Edit", &file(&t));
        }
    }
}
