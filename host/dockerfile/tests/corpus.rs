//! Fixture-driven tests of the Dockerfile parser (fixtures in tests/corpus/).

use std::collections::HashMap;

use helix_dockerfile::{
    Dockerfile, Instruction, MountKind, ParseOptions, detect_syntax, is_remote_source, parse,
    parse_with,
};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parsed(name: &str) -> Dockerfile {
    parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn args(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn summary(df: &Dockerfile) -> Vec<(&str, usize, usize)> {
    df.instructions
        .iter()
        .map(|i| (i.keyword.as_str(), i.start_line, i.end_line))
        .collect()
}

fn images(df: &Dockerfile, a: &HashMap<String, String>) -> Vec<(String, String, usize)> {
    df.external_images(a)
        .unwrap()
        .into_iter()
        .map(|u| (u.image, u.keyword, u.line))
        .collect()
}

fn froms(df: &Dockerfile) -> Vec<&Instruction> {
    df.instructions
        .iter()
        .filter(|i| i.keyword == "FROM")
        .collect()
}

// ---- realistic builds -------------------------------------------------------

#[test]
fn go_multistage_stages_use_global_args_and_platform() {
    let df = parsed("go-multistage.Dockerfile");
    assert_eq!(df.directives.len(), 1);
    assert_eq!(df.directives[0].name, "syntax");
    assert_eq!(df.directives[0].value, "docker/dockerfile:1.7");
    assert_eq!(df.directives[0].line, 1);
    assert_eq!(df.frontend().map(|d| d.line), Some(1));

    let stages = df
        .stages(&args(&[("BUILDPLATFORM", "linux/amd64")]))
        .unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].image, "golang:1.22");
    assert_eq!(stages[0].raw_image, "golang:${GO_VERSION}");
    assert_eq!(stages[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(stages[0].name.as_deref(), Some("build"));
    assert_eq!(stages[0].line, 5);
    assert!(stages[0].is_external());
    assert_eq!(stages[1].image, "gcr.io/distroless/static-debian12");
    assert_eq!(stages[1].line, 15);
    assert_eq!(stages[1].index, 1);
    assert_eq!(stages[1].name, None);
}

#[test]
fn go_multistage_build_args_override_global_defaults() {
    let df = parsed("go-multistage.Dockerfile");
    let a = args(&[("GO_VERSION", "1.21"), ("RUNTIME", "alpine:3.20")]);
    assert_eq!(
        images(&df, &a),
        [
            ("golang:1.21".to_string(), "FROM".to_string(), 5),
            ("alpine:3.20".to_string(), "FROM".to_string(), 15),
        ]
    );
}

#[test]
fn go_multistage_copy_from_stage_is_not_external_and_cache_mounts_found() {
    let df = parsed("go-multistage.Dockerfile");
    let imgs = images(&df, &HashMap::new());
    assert_eq!(imgs.len(), 2, "{imgs:?}");
    assert!(imgs.iter().all(|(i, _, _)| i != "build"));
    let copy = &df.instructions[df.instructions.len() - 3];
    assert_eq!(copy.keyword, "COPY");
    assert_eq!(copy.flag("from"), Some("build"));
    assert_eq!(copy.start_line, 16);

    let mounts = df.run_mounts().unwrap();
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0].kind, MountKind::Cache);
    assert_eq!(mounts[0].target.as_deref(), Some("/go/pkg/mod"));
    assert!(mounts[0].rw);
    assert_eq!(mounts[0].line, 9);
    assert_eq!(mounts[1].target.as_deref(), Some("/root/.cache/go-build"));
    assert_eq!(mounts[1].line, 12);
    let run = df.instructions.iter().find(|i| i.start_line == 9).unwrap();
    assert_eq!(run.end_line, 10);
    assert_eq!(run.args, ["go mod download"]);
    assert_eq!(
        run.original,
        "RUN --mount=type=cache,target=/go/pkg/mod \\\n    go mod download"
    );
}

#[test]
fn undeclared_build_args_are_not_expanded_in_from() {
    let df = parse("FROM $IMG\n").unwrap();
    let err = df.stages(&args(&[("IMG", "evil")])).unwrap_err();
    assert_eq!(err.line, 1);
    let df = parse("ARG IMG=alpine\nFROM $IMG\nARG IMG\n").unwrap();
    assert_eq!(
        df.stages(&args(&[("IMG", "evil")])).unwrap()[0].image,
        "evil"
    );
    assert_eq!(df.stages(&HashMap::new()).unwrap()[0].image, "alpine");
}

#[test]
fn node_app_instructions_and_exec_form() {
    let df = parsed("node.Dockerfile");
    assert_eq!(df.instructions.len(), 11);
    let env = &df.instructions[5];
    assert_eq!(env.keyword, "ENV");
    assert_eq!(env.args, ["NODE_ENV", "production", "PORT", "3000"]);
    let expose = &df.instructions[9];
    assert_eq!(expose.args, ["3000/tcp", "9229"]);
    let cmd = &df.instructions[10];
    assert!(cmd.json);
    assert_eq!(cmd.args, ["node", "server.js"]);
    assert_eq!(cmd.start_line, 12);
    assert_eq!(
        images(&df, &HashMap::new()),
        [("node:20-alpine".to_string(), "FROM".to_string(), 1)]
    );
}

#[test]
fn python_pip_cache_mount_and_healthcheck() {
    let df = parsed("python.Dockerfile");
    let run = &df.instructions[3];
    assert_eq!(run.keyword, "RUN");
    assert_eq!(run.flags.len(), 1);
    assert_eq!(run.flags[0].name, "mount");
    assert_eq!(
        run.flags[0].value.as_deref(),
        Some("type=cache,target=/root/.cache/pip")
    );
    assert_eq!(run.args, ["pip install -r requirements.txt"]);
    assert!(!run.json);
    let m = run.mounts().unwrap();
    assert_eq!(m[0].kind, MountKind::Cache);
    assert_eq!(m[0].target.as_deref(), Some("/root/.cache/pip"));
    assert_eq!(m[0].line, 4);
    let hc = &df.instructions[5];
    assert_eq!(hc.keyword, "HEALTHCHECK");
    assert_eq!(hc.flag("interval"), Some("30s"));
    assert_eq!(
        hc.args,
        ["CMD", "curl", "-f", "http://localhost:8000/health"]
    );
    assert!(hc.json);
    assert_eq!(df.instructions[6].args, ["python -m app"]);
}

#[test]
fn rust_app_two_cache_mounts_on_continued_run() {
    let df = parsed("rust.Dockerfile");
    let run = &df.instructions[3];
    assert_eq!((run.start_line, run.end_line), (4, 6));
    let m = run.mounts().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].sharing.as_deref(), Some("locked"));
    assert_eq!(m[0].target.as_deref(), Some("/usr/local/cargo/registry"));
    assert_eq!(m[1].id.as_deref(), Some("target-cache"));
    assert_eq!(
        run.args,
        ["cargo build --release && cp target/release/app /app"]
    );
    let imgs = images(&df, &HashMap::new());
    assert_eq!(
        imgs,
        [
            ("rust:1.80".to_string(), "FROM".to_string(), 1),
            ("debian:bookworm-slim".to_string(), "FROM".to_string(), 8),
        ]
    );
}

// ---- escape, continuations, comments ---------------------------------------

#[test]
fn backtick_escape_windows_style() {
    let df = parsed("windows.Dockerfile");
    assert_eq!(df.escape, '`');
    assert_eq!(df.directives[0].name, "escape");
    assert_eq!(df.directives[0].value, "`");
    assert_eq!(
        summary(&df),
        [
            ("FROM", 3, 3),
            ("SHELL", 4, 4),
            ("COPY", 5, 5),
            ("RUN", 6, 7),
            ("WORKDIR", 8, 8)
        ]
    );
    assert_eq!(df.instructions[2].args, ["app", "c:\\app\\"]);
    assert_eq!(
        df.instructions[3].text,
        "RUN New-Item -ItemType Directory c:\\data ;     Write-Host done"
    );
    assert_eq!(df.instructions[4].args, ["c:\\app"]);
    assert_eq!(df.instructions[1].args, ["powershell", "-Command"]);
}

#[test]
fn backslash_is_not_a_continuation_under_backtick_escape() {
    let df = parse("# escape=`\nFROM a\nRUN echo \\\nFROM b\n").unwrap();
    assert_eq!(froms(&df).len(), 2);
    let df = parse("FROM a\nRUN echo `\nFROM b\n").unwrap();
    assert_eq!(froms(&df).len(), 2);
}

#[test]
fn continuation_skips_comments_and_empty_lines_and_from_on_next_line_is_found() {
    let df = parsed("continuations.Dockerfile");
    assert_eq!(
        summary(&df),
        [("FROM", 1, 2), ("RUN", 3, 9), ("RUN", 10, 11)]
    );
    assert_eq!(df.instructions[0].args, ["alpine:3.20"]);
    assert_eq!(
        df.instructions[1].text,
        "RUN apk add --no-cache     curl     git     jq"
    );
    let stages = df.stages(&HashMap::new()).unwrap();
    assert_eq!(stages.len(), 1);
    assert_eq!(stages[0].image, "alpine:3.20");
    assert_eq!(stages[0].line, 1);
}

#[test]
fn from_inside_run_continuation_is_not_a_from() {
    let df = parsed("continuations.Dockerfile");
    let last = df.instructions.last().unwrap();
    assert_eq!(last.keyword, "RUN");
    assert_eq!(last.args, ["echo start FROM trusted"]);
    assert!(
        images(&df, &HashMap::new())
            .iter()
            .all(|(i, _, _)| i != "trusted")
    );
}

#[test]
fn escaped_escape_at_end_of_line_does_not_continue() {
    let df = parse("FROM a\nRUN echo \\\\\nFROM b\n").unwrap();
    assert_eq!(froms(&df).len(), 2);
    assert_eq!(df.instructions[1].args, ["echo \\\\"]);
}

// ---- heredocs ---------------------------------------------------------------

#[test]
fn heredoc_bodies_are_not_instructions() {
    let df = parsed("heredocs.Dockerfile");
    assert_eq!(
        summary(&df),
        [
            ("FROM", 2, 2),
            ("RUN", 3, 6),
            ("COPY", 7, 10),
            ("RUN", 11, 15),
            ("CMD", 16, 16)
        ]
    );
    let run = &df.instructions[1];
    assert_eq!(run.heredocs.len(), 1);
    assert_eq!(run.heredocs[0].name, "EOF");
    assert_eq!(run.heredocs[0].content, "echo hello\nFROM evil\n");
    assert!(run.heredocs[0].expand);
    assert_eq!(
        (run.heredocs[0].start_line, run.heredocs[0].end_line),
        (4, 6)
    );
    assert_eq!(df.stages(&HashMap::new()).unwrap().len(), 1);
}

#[test]
fn chomped_and_quoted_and_multiple_heredocs() {
    let df = parsed("heredocs.Dockerfile");
    let copy = &df.instructions[2];
    assert_eq!(copy.heredocs[0].name, "CONF");
    assert!(copy.heredocs[0].chomp);
    assert_eq!(copy.heredocs[0].content, "key=value\nFROM evil2\n");
    assert_eq!(copy.args, ["<<-CONF", "/etc/app.conf"]);
    let run = &df.instructions[3];
    let docs: Vec<_> = run
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.expand, h.content.as_str(), h.start_line))
        .collect();
    assert_eq!(
        docs,
        [
            ("A", false, "$NOT_EXPANDED\n", 12),
            ("B", false, "FROM evil3\n", 14)
        ]
    );
}

#[test]
fn heredoc_body_from_is_a_from_when_heredocs_are_off() {
    let text = fixture("heredoc-evil.Dockerfile");
    let on = parse(&text).unwrap();
    assert_eq!(summary(&on), [("FROM", 1, 1), ("RUN", 2, 4)]);
    assert_eq!(
        images(&on, &HashMap::new()),
        [("alpine:3.20".to_string(), "FROM".to_string(), 1)]
    );
    let off = parse_with(&text, ParseOptions { heredocs: false }).unwrap();
    assert_eq!(
        summary(&off),
        [
            ("FROM", 1, 1),
            ("RUN", 2, 2),
            ("FROM", 3, 3),
            ("USER", 4, 4)
        ]
    );
    assert_eq!(
        images(&off, &HashMap::new()),
        [
            ("alpine:3.20".to_string(), "FROM".to_string(), 1),
            ("evil:latest".to_string(), "FROM".to_string(), 3)
        ]
    );
}

#[test]
fn heredocs_are_not_read_for_exec_form_or_other_keywords() {
    let df = parse("FROM a\nRUN [\"sh\", \"<<EOF\"]\nFROM b\n").unwrap();
    assert_eq!(froms(&df).len(), 2);
    let df = parse("FROM a\nCMD cat <<EOF\nFROM b\n").unwrap();
    assert_eq!(froms(&df).len(), 2);
    let df = parse("FROM a\nONBUILD RUN <<EOF\nFROM b\nEOF\n").unwrap();
    assert_eq!(froms(&df).len(), 1);
    assert_eq!(df.instructions[1].heredocs[0].content, "FROM b\n");
}

#[test]
fn unterminated_heredoc_is_an_error() {
    let err = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.message.contains("unterminated heredoc"), "{err}");
}

// ---- directives and frontend detection --------------------------------------

fn syntax_of(text: &str) -> Option<(String, usize)> {
    detect_syntax(text).map(|d| (d.value, d.line))
}

#[test]
fn syntax_directive_spellings() {
    assert_eq!(
        syntax_of("# syntax=docker/dockerfile:1\nFROM a\n"),
        Some(("docker/dockerfile:1".into(), 1))
    );
    assert_eq!(syntax_of("#syntax=x\nFROM a\n"), Some(("x".into(), 1)));
    assert_eq!(
        syntax_of("#  SYNTAX = x  \nFROM a\n"),
        Some(("x".into(), 1))
    );
    let df = parse("#  SYNTAX = x  \nFROM a\n").unwrap();
    assert_eq!(df.directives[0].name, "syntax");
    assert_eq!(df.frontend().map(|d| d.value.as_str()), Some("x"));
}

#[test]
fn syntax_with_slash_comment_shebang_json_and_bom() {
    assert_eq!(syntax_of("// syntax=y\nFROM a\n"), Some(("y".into(), 1)));
    assert_eq!(
        syntax_of("#!/usr/bin/env buildctl\n# syntax=z\nFROM a\n"),
        Some(("z".into(), 2))
    );
    assert_eq!(syntax_of("{\"syntax\": \"j\"}"), Some(("j".into(), 1)));
    assert_eq!(syntax_of("{\"other\": 1}"), None);
    assert_eq!(
        syntax_of("\u{feff}# syntax=b\nFROM a\n"),
        Some(("b".into(), 1))
    );
    // The shebang form parses as a Dockerfile; its frontend is still seen.
    let df = parse("#!/usr/bin/env buildctl\n# syntax=z\nFROM a\n").unwrap();
    assert!(df.directives.is_empty());
    assert_eq!(
        df.frontend().map(|d| (d.value.as_str(), d.line)),
        Some(("z", 2))
    );
    let df = parse("\u{feff}# syntax=b\nFROM a\n").unwrap();
    assert_eq!(df.directives[0].value, "b");
    assert_eq!(df.instructions[0].start_line, 2);
}

#[test]
fn directive_after_comment_or_blank_line_is_not_a_directive() {
    for text in [
        "# hello\n# syntax=x\nFROM a\n",
        "\n# syntax=x\nFROM a\n",
        "FROM a\n# syntax=x\n",
        "# escape=`\n\n# syntax=x\nFROM a\n",
    ] {
        assert_eq!(syntax_of(text), None, "{text:?}");
        let df = parse(text).unwrap();
        assert!(df.frontend().is_none(), "{text:?}");
        assert!(df.directives.iter().all(|d| d.name != "syntax"), "{text:?}");
    }
    let df = parse("# hello\n# escape=`\nFROM a\nRUN x `\nFROM b\n").unwrap();
    assert_eq!(df.escape, '\\');
    assert_eq!(froms(&df).len(), 2);
}

#[test]
fn directive_after_unknown_directive_is_reported() {
    let text = "# foo=bar\n# syntax=x\nFROM a\n";
    let df = parse(text).unwrap();
    let names: Vec<_> = df
        .directives
        .iter()
        .map(|d| (d.name.as_str(), d.value.as_str(), d.line))
        .collect();
    assert_eq!(names, [("foo", "bar", 1), ("syntax", "x", 2)]);
    assert_eq!(df.frontend().map(|d| d.line), Some(2));
    assert_eq!(syntax_of(text), Some(("x".into(), 2)));
}

#[test]
fn escape_after_unknown_directive_is_ambiguous_error() {
    let err = parse("# foo=bar\n# escape=`\nFROM a\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(parse("# foo=bar\n# escape=\\\nFROM a\n").is_ok());
}

#[test]
fn repeated_directives_are_errors() {
    let err = parse("# escape=\\\n# escape=`\nFROM a\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert_eq!(
        err.to_string(),
        "line 2: only one escape parser directive can be used"
    );
    let err = parse("# syntax=a\n#syntax=b\nFROM a\n").unwrap_err();
    assert_eq!(err.line, 2);
}

#[test]
fn invalid_escape_value_is_an_error() {
    let err = parse("# escape=x\nFROM a\n").unwrap_err();
    assert_eq!(err.line, 1);
    assert!(err.message.contains("invalid escape token"), "{err}");
}

#[test]
fn directive_with_leading_whitespace_is_read_by_parser() {
    let df = parse("   # escape=`\nFROM a\nRUN x `\n  y\n").unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.instructions[1].text, "RUN x   y");
}

// ---- errors -------------------------------------------------------------------

#[test]
fn unknown_instruction_error_names_it_and_its_line() {
    let err = parse("FROM a\n\n# c\nFORM b\n").unwrap_err();
    assert_eq!(err.line, 4);
    assert_eq!(err.to_string(), "line 4: unknown instruction \"FORM\"");
    let err = parse("// syntax=x\nFROM a\n").unwrap_err();
    assert_eq!(err.line, 1);
}

#[test]
fn first_instruction_must_be_from_or_arg_and_from_is_required() {
    let err = parse("# c\nRUN x\nFROM a\n").unwrap_err();
    assert_eq!(err.line, 2);
    let err = parse("ARG A=1\n").unwrap_err();
    assert!(err.message.contains("no FROM"), "{err}");
    assert!(parse("").is_err());
    assert!(parse("# only a comment\n").is_err());
    assert!(parse("ARG A=1\nFROM a\n").is_ok());
}

#[test]
fn from_argument_count_and_stage_name_are_checked() {
    assert_eq!(parse("FROM a b\n").unwrap_err().line, 1);
    assert!(parse("FROM\n").is_err());
    assert!(parse("FROM a AS Bad/Name\n").is_err());
    let df = parse("FROM a aS Mixed.Case-1\n").unwrap();
    let st = df.stages(&HashMap::new()).unwrap();
    assert_eq!(st[0].name.as_deref(), Some("mixed.case-1"));
}

#[test]
fn json_array_with_non_string_is_an_error() {
    let err = parse("FROM a\nRUN [\"echo\", 1]\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.message.contains("strings only"), "{err}");
}

#[test]
fn onbuild_parses_nested_instruction_and_rejects_chaining() {
    let df = parsed("onbuild-json.Dockerfile");
    let ob = &df.instructions[1];
    assert_eq!(ob.keyword, "ONBUILD");
    let child = ob.onbuild.as_ref().unwrap();
    assert_eq!(child.keyword, "RUN");
    assert_eq!(child.flag("mount"), Some("type=cache,target=/c"));
    assert_eq!(child.args, ["echo hi"]);
    assert_eq!(child.start_line, 2);
    let mounts = df.run_mounts().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0].line, mounts[0].target.as_deref()),
        (2, Some("/c"))
    );
    assert!(parse("FROM a\nONBUILD ONBUILD RUN x\n").is_err());
    assert_eq!(parse("FROM a\nONBUILD FROM b\n").unwrap_err().line, 2);
    assert!(parse("FROM a\nONBUILD MAINTAINER me\n").is_err());
    assert!(parse("FROM a\nONBUILD\n").is_err());
    assert!(parse("FROM a\nONBUILD BOGUS x\n").is_err());
}

#[test]
fn exec_forms_shell_forms_and_word_lists() {
    let df = parsed("onbuild-json.Dockerfile");
    let i = &df.instructions;
    assert_eq!(
        (i[3].json, i[3].args.clone()),
        (true, vec!["/bin/sh".into(), "-c".into()])
    );
    // Go's json.Decoder ignores text after the array.
    assert_eq!(i[4].args, ["echo", "a b"]);
    assert!(i[4].json);
    assert!(!i[5].json);
    assert_eq!(i[5].args, ["[ \"echo\", \"not json\""]);
    assert_eq!(i[6].args, ["a", "1", "\"b c\"", "\"d e\""]);
    assert_eq!(i[7].args, ["OLD", "style value"]);
    assert_eq!(i[8].args, ["/data", "/logs"]);
    assert_eq!(i[9].args, ["SIGTERM"]);
}

// ---- mounts -----------------------------------------------------------------

#[test]
fn mount_csv_quotes_ids_and_bind_from_stage() {
    let df = parsed("mounts.Dockerfile");
    let m = df.run_mounts().unwrap();
    assert_eq!(m.len(), 8);
    assert!(m.iter().all(|m| m.line == 4));
    assert_eq!(m[0].kind, MountKind::Cache);
    assert_eq!(m[0].id.as_deref(), Some("../../x"));
    assert_eq!(m[1].from.as_deref(), Some("build"));
    assert_eq!(m[1].source.as_deref(), Some("/link"));
    assert!(!m[1].rw);
    assert_eq!(m[2].source.as_deref(), Some("/a,b"));
    assert_eq!(m[2].target.as_deref(), Some("/q"));
    assert!(m[4].rw);
    assert_eq!(m[5].kind, MountKind::Secret);
    assert!(m[5].required);
    assert_eq!(m[6].kind, MountKind::Ssh);
    assert_eq!(m[7].kind, MountKind::Tmpfs);
    assert_eq!(m[7].size.as_deref(), Some("64m"));
    assert!(m[7].rw);
}

#[test]
fn invalid_mount_is_an_error_with_line() {
    let df = parse("FROM a\nRUN --mount=type=volume,target=/x true\n").unwrap();
    assert_eq!(df.run_mounts().unwrap_err().line, 2);
    let df = parse("FROM a\nRUN --mount true cmd\n").unwrap();
    // `--mount true` makes "true" the mount value (BuildKit's flag scanner).
    assert_eq!(df.instructions[1].flag("mount"), Some("true"));
    assert_eq!(df.instructions[1].args, ["cmd"]);
    assert!(df.run_mounts().is_err());
    // A dangling flag argument at the end is not a flag: an error.
    assert_eq!(parse("FROM a\nRUN --mount true\n").unwrap_err().line, 2);
}

#[test]
fn external_images_resolve_stages_case_insensitively_and_skip_scratch() {
    let df = parsed("mounts.Dockerfile");
    let st = df.stages(&HashMap::new()).unwrap();
    assert_eq!(st[1].name.as_deref(), Some("tools"));
    assert_eq!(st.len(), 5);
    assert!(st[3].scratch && !st[3].is_external());
    assert!(st[4].scratch);
    assert_eq!(st[4].name.as_deref(), Some("final"));
    assert_eq!(
        images(&df, &HashMap::new()),
        [
            ("golang:1.22".to_string(), "FROM".to_string(), 1),
            ("alpine".to_string(), "FROM".to_string(), 2),
            ("debian:12".to_string(), "FROM".to_string(), 3),
            ("ghcr.io/evil/img:1".to_string(), "RUN".to_string(), 4),
            ("nginx:latest".to_string(), "COPY".to_string(), 15),
            ("2".to_string(), "COPY".to_string(), 16),
        ]
    );
}

#[test]
fn from_earlier_stage_name_is_not_external_but_later_one_is() {
    let df = parse("FROM alpine AS Base\nFROM BASE\nFROM later\nFROM x AS later\n").unwrap();
    let st = df.stages(&HashMap::new()).unwrap();
    assert_eq!(st[1].base_stage, Some(0));
    assert_eq!(st[2].base_stage, None);
    let imgs: Vec<_> = images(&df, &HashMap::new())
        .into_iter()
        .map(|(i, _, l)| (i, l))
        .collect();
    assert_eq!(
        imgs,
        [("alpine".into(), 1), ("later".into(), 3), ("x".into(), 4)]
    );
}

#[test]
fn copy_from_is_expanded_with_stage_args() {
    let df = parse("FROM a\nARG SRC=busybox:1\nCOPY --from=$SRC /x /y\n").unwrap();
    let imgs = df.external_images(&HashMap::new()).unwrap();
    assert_eq!(imgs[1].image, "busybox:1");
    assert_eq!(imgs[1].raw, "$SRC");
    assert_eq!(imgs[1].line, 3);
    let imgs = df.external_images(&args(&[("SRC", "evil")])).unwrap();
    assert_eq!(imgs[1].image, "evil");
}

// ---- remote sources -----------------------------------------------------------

#[test]
fn add_urls_git_and_remote_copy_sources_are_reported() {
    let df = parsed("remote.Dockerfile");
    let got = df.remote_sources(&HashMap::new());
    let want: Vec<(usize, String)> = [
        (3, "https://example.com/a.tar.gz"),
        (4, "HTTPS://EXAMPLE.COM/UP.tgz"),
        (4, "git@github.com:org/repo.git"),
        (5, "git://example.com/r.git#main"),
        (6, "https://example.com/b.tar.gz"),
        (8, "github.com/org/repo"),
        (9, "ssh://host/x"),
        (10, "http://example.com/late"),
    ]
    .into_iter()
    .map(|(l, s)| (l, s.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn remote_source_predicate() {
    for w in [
        "http://x",
        "HTTPS://x",
        "git://x",
        "git@github.com:a/b",
        "ssh://x",
        "s3://b/k",
        "github.com/a/b",
    ] {
        assert!(is_remote_source(w), "{w}");
    }
    for w in ["./src", "/abs", "c:\\x", "file.tar.gz", "<<EOF"] {
        assert!(!is_remote_source(w), "{w}");
    }
}

#[test]
fn heredoc_names_and_destination_are_not_sources() {
    let df =
        parse("FROM a\nCOPY <<http://x /dst\nbody\nhttp://x\nADD /src https://dest/\n").unwrap();
    assert!(df.remote_sources(&HashMap::new()).is_empty());
}

#[test]
fn bare_boolean_flag_swallowing_a_url_is_still_reported() {
    let df = parse("FROM a\nADD --link https://x/y /d\n").unwrap();
    assert_eq!(
        df.remote_sources(&HashMap::new()),
        [(2, "https://x/y".to_string())]
    );
}

// ---- robustness ---------------------------------------------------------------

const FIXTURES: [&str; 11] = [
    "go-multistage.Dockerfile",
    "node.Dockerfile",
    "python.Dockerfile",
    "rust.Dockerfile",
    "windows.Dockerfile",
    "continuations.Dockerfile",
    "heredocs.Dockerfile",
    "heredoc-evil.Dockerfile",
    "remote.Dockerfile",
    "mounts.Dockerfile",
    "onbuild-json.Dockerfile",
];

fn exercise(text: &str) {
    let a = args(&[("BUILDPLATFORM", "linux/amd64"), ("X", "$"), ("Y", "${")]);
    let _ = detect_syntax(text);
    for heredocs in [true, false] {
        if let Ok(df) = parse_with(text, ParseOptions { heredocs }) {
            let _ = df.frontend();
            let _ = df.stages(&a);
            let _ = df.external_images(&a);
            let _ = df.run_mounts();
            let _ = df.remote_sources(&a);
        }
    }
}

#[test]
fn truncated_fixtures_and_garbage_never_panic() {
    for name in FIXTURES {
        let text = fixture(name);
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            exercise(&String::from_utf8_lossy(&bytes[..cut]));
            exercise(&String::from_utf8_lossy(&bytes[cut..]));
        }
    }
    // Deterministic pseudo-random bytes biased towards Dockerfile syntax.
    let alphabet: &[u8] = b"FROM RUN COPY ADD ARG ONBUILD --mount=type=cache,\"'`\\$,{}[]<<-EOF\n\r\t #=:/\xef\xbb\xbf\xc2\xa0\xc2\x85\xff";
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        let len = (state % 200) as usize;
        let mut buf = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            buf.push(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        exercise(&String::from_utf8_lossy(&buf));
        let mut prefixed = b"FROM a\n".to_vec();
        prefixed.extend_from_slice(&buf);
        exercise(&String::from_utf8_lossy(&prefixed));
    }
}

#[test]
fn without_heredocs_the_reading_ends_where_the_tools_stop() {
    // podman 4.3 runs the FROM, the RUN and the ADD, then fails at `EOF`.
    let text = "FROM alpine:3.20\nRUN <<EOF\nADD http://127.0.0.1:1/x /x\nEOF\nRUN true\n";
    let on = parse(text).unwrap();
    assert_eq!(summary(&on), [("FROM", 1, 1), ("RUN", 2, 4), ("RUN", 5, 5)]);
    assert!(on.remote_sources(&HashMap::new()).is_empty());
    let off = parse_with(text, ParseOptions { heredocs: false }).unwrap();
    assert_eq!(
        summary(&off),
        [("FROM", 1, 1), ("RUN", 2, 2), ("ADD", 3, 3)]
    );
    assert_eq!(
        off.remote_sources(&HashMap::new()),
        [(3, "http://127.0.0.1:1/x".to_string())]
    );
    // With heredocs on, an unknown instruction is still an error.
    let err = parse("FROM alpine\nEOF\n").unwrap_err();
    assert_eq!(
        (err.line, err.message.as_str()),
        (2, "unknown instruction \"EOF\"")
    );
}
