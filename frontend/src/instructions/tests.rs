//! Behaviour of the instruction layer as a whole: errors with their lines, flags of
//! each instruction, expansion, lints, and robustness against arbitrary input.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn dockerfile(src: &str) -> Result<Dockerfile, InstructionError> {
    parse_dockerfile(&crate::parse(src.as_bytes()).expect("parses"))
}

fn error(src: &str) -> String {
    dockerfile(src).expect_err("conversion should fail").to_string()
}

fn only_command(src: &str) -> Instruction {
    let df = dockerfile(src).unwrap();
    df.stages[0].commands[0].instruction.clone()
}

#[test]
fn errors_carry_lines_and_buildkit_messages() {
    assert_eq!(
        error("FROM a\n\nFOO bar\n"),
        "dockerfile parse error on line 3: unknown instruction: FOO (did you mean FROM?)"
    );
    assert_eq!(error("FROM a\nQQQQQ bar\n"), "dockerfile parse error on line 2: unknown instruction: QQQQQ");
    assert_eq!(
        error("FROM a\nRUUN x\n"),
        "dockerfile parse error on line 2: unknown instruction: RUUN (did you mean RUN?)"
    );
    assert_eq!(
        error("FROM a\ncopy --lnk a b\n"),
        "dockerfile parse error on line 2: unknown flag: --lnk (did you mean --link?)"
    );
    assert_eq!(
        error("FROM a\nCOPY --from=a --from=b x y\n"),
        "dockerfile parse error on line 2: duplicate flag specified: --from"
    );
    assert_eq!(
        error("FROM a\nCOPY --link=maybe x y\n"),
        "dockerfile parse error on line 2: expecting boolean value for flag --link, not: maybe"
    );
    assert_eq!(error("RUN true\n"), "dockerfile parse error on line 1: no build stage in current context");
    assert_eq!(error("FROM a AS 1x\n"), "dockerfile parse error on line 1: invalid name for build stage: \"1x\", name can't start with a number or contain symbols");
    assert_eq!(error("FROM a b\n"), "dockerfile parse error on line 1: FROM requires either one or three arguments");
    assert_eq!(
        error("FROM a\nSHELL sh -c\n"),
        "dockerfile parse error on line 2: SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK NONE x\n"),
        "dockerfile parse error on line 2: HEALTHCHECK NONE takes no arguments"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK FOO x\n"),
        "dockerfile parse error on line 2: Unknown type \"FOO\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK --retries=-1 CMD x\n"),
        "dockerfile parse error on line 2: --retries cannot be negative (-1)"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK --timeout=5 CMD x\n"),
        "dockerfile parse error on line 2: time: missing unit in duration \"5\""
    );
    assert_eq!(
        error("FROM a\nRUN --network=bridge x\n"),
        "dockerfile parse error on line 2: invalid network mode \"bridge\""
    );
    assert_eq!(
        error("FROM a\nRUN --security=root x\n"),
        "dockerfile parse error on line 2: security \"root\" is not valid"
    );
    assert_eq!(
        error("FROM a\nRUN --mount=from=$X,target=/x true\n"),
        "dockerfile parse error on line 2: 'from' doesn't support variable expansion, define alias stage instead"
    );
    assert_eq!(error("FROM a\nRUN --mount=target=\\\"/x\\\" true\n"), "dockerfile parse error on line 2: failed to parse csv mounts: parse error on line 1, column 8: bare \" in non-quoted-field");
    assert_eq!(error("FROM a\nARG =x\n"), "dockerfile parse error on line 2: ARG names can not be blank");
    assert_eq!(
        error("FROM a\nVOLUME [\"\"]\n"),
        "dockerfile parse error on line 2: VOLUME specified can not be an empty string"
    );
    assert_eq!(
        error("FROM a\nADD x <<EOF\nEOF\n"),
        "dockerfile parse error on line 2: ADD cannot accept a heredoc as a destination"
    );
    assert_eq!(
        error("FROM a\nONBUILD MAINTAINER me\n"),
        "dockerfile parse error on line 2: MAINTAINER isn't allowed as an ONBUILD trigger"
    );
}

#[test]
fn errors_locate_their_column() {
    let src = "FROM a\n  COPY --chmod=644 \\\n     --lnk a b\n";
    let mut e = dockerfile(src).unwrap_err();
    assert_eq!((e.location.start_line, e.location.end_line), (2, 3));
    assert_eq!(e.locate_column(src), Some(6));
    let src = "FROM a\n   Frm x\n";
    let mut e = dockerfile(src).unwrap_err();
    assert_eq!(e.locate_column(src), Some(4));
}

#[test]
fn stages_and_meta_args() {
    let df = dockerfile(
        "# syntax=docker/dockerfile:1\nARG A=1 B\n# build makes it\nFROM --platform=$BUILDPLATFORM golang AS Build\n\
         RUN make\nFROM scratch\nCOPY --from=build /a /b\n",
    )
    .unwrap();
    assert_eq!(df.meta_args.len(), 1);
    let keys: Vec<_> = df.meta_args[0].instruction.iter().map(|a| (a.key.as_str(), a.value.as_deref())).collect();
    assert_eq!(keys, [("A", Some("1")), ("B", None)]);
    assert_eq!(df.stages.len(), 2);
    let s = &df.stages[0];
    assert_eq!(
        (s.name.as_deref(), s.base_name.as_str(), s.platform.as_deref()),
        (Some("build"), "golang", Some("$BUILDPLATFORM"))
    );
    assert_eq!(s.doc.as_deref(), Some("makes it"));
    assert_eq!(s.location, Location { start_line: 4, end_line: 4 });
    assert_eq!(df.stages[1].display_name(1), "stage-1");
    assert_eq!(df.find_stage("BUILD"), Some(0));
    assert_eq!(df.find_stage("1"), Some(1));
    assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.stages[1].commands[0].code, "COPY --from=build /a /b");
}

#[test]
fn flags_of_each_instruction() {
    let Instruction::Copy(c) = only_command(
        "FROM a\nCOPY --from=b --chown=1:1 --chmod=755 --link --parents --exclude=*.md --exclude=x s1 s2 /d/\n",
    ) else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("b"));
    assert_eq!((c.chown.as_deref(), c.chmod.as_deref(), c.link, c.parents), (Some("1:1"), Some("755"), true, true));
    assert_eq!(c.exclude, ["*.md", "x"]);
    assert_eq!((c.sources.as_slice(), c.dest.as_str()), (["s1".to_string(), "s2".to_string()].as_slice(), "/d/"));

    let Instruction::Add(a) = only_command(
        "FROM a\nADD --checksum=sha256:abc --keep-git-dir=false --unpack --link=false https://x/y.tar /d\n",
    ) else {
        panic!()
    };
    assert_eq!(
        (a.checksum.as_deref(), a.keep_git_dir, a.unpack, a.link),
        (Some("sha256:abc"), Some(false), Some(true), false)
    );
    assert!(error("FROM a\nADD --from=x a b\n").contains("unknown flag: --from"));
    assert!(error("FROM a\nCOPY --checksum=x a b\n").contains("unknown flag: --checksum"));

    let Instruction::Run(r) = only_command(
        "FROM a\nRUN --mount=type=cache,target=/c,id=$X --network=none --security=insecure --device=gpu echo hi\n",
    ) else {
        panic!()
    };
    assert_eq!(r.cmd, ShellOrExec::Shell("echo hi".into()));
    assert_eq!((r.network, r.security), (Some(NetworkMode::None), Some(Security::Insecure)));
    assert_eq!(r.devices, [DeviceSpec { name: "gpu".into(), required: false }]);
    assert_eq!(r.mounts[0].id.as_deref(), Some("$X"));

    // A mount whose typed fields use variables is validated once expanded.
    let Instruction::Run(r) = only_command("FROM a\nRUN --mount=type=cache,target=/c,uid=$UID true\n") else {
        panic!()
    };
    assert_eq!(r.mounts[0], MountSpec { read_only: true, ..MountSpec::default() });

    let Instruction::Healthcheck(h) = only_command(
        "FROM a\nHEALTHCHECK --interval=30s --timeout=1m30s --start-period=0 --start-interval=5ms --retries=3 CMD [\"curl\", \"-f\", \"http://x\"]\n",
    ) else {
        panic!()
    };
    assert_eq!(h.test, ["CMD", "curl", "-f", "http://x"]);
    assert_eq!(
        (h.interval, h.timeout, h.start_period),
        (Duration::from_secs(30), Duration::from_secs(90), Duration::ZERO)
    );
    assert_eq!((h.start_interval, h.retries), (Duration::from_millis(5), 3));
    let Instruction::Healthcheck(h) = only_command("FROM a\nHEALTHCHECK --interval=5s NONE\n") else { panic!() };
    assert_eq!(h.test, ["NONE"]);

    let Instruction::From(_) =
        parse_instruction(&crate::parse(b"FROM --platform=linux/arm64 a").unwrap().children[0]).unwrap().instruction
    else {
        panic!()
    };
    assert!(error("FROM --plaform=x a\n").contains("unknown flag: --plaform (did you mean --platform?)"));
    // STOPSIGNAL and ARG read no flags (BuildKit ignores any).
    assert_eq!(only_command("FROM a\nSTOPSIGNAL --x SIGTERM\n"), Instruction::StopSignal("SIGTERM".into()));
    assert!(error("FROM a\nUSER --x me\n").contains("unknown flag: --x"));
}

#[test]
fn values_of_simple_instructions() {
    let df = dockerfile(
        "FROM a\nENV A=1 B=\"two words\"\nENV C 3 4\nLABEL x=y\nEXPOSE 8080/tcp 80\nVOLUME [\"/a\", \" /b \"]\n\
         USER app:app\nWORKDIR /src\nSTOPSIGNAL SIGKILL\nMAINTAINER me\nSHELL [\"bash\", \"-c\"]\nCMD [\"run\"]\nENTRYPOINT exec app\n",
    )
    .unwrap();
    let got: Vec<Instruction> = df.stages[0].commands.iter().map(|c| c.instruction.clone()).collect();
    let kv = |k: &str, v: &str, no_delim| KeyValue { key: k.into(), value: v.into(), no_delim };
    assert_eq!(
        got,
        [
            Instruction::Env(vec![kv("A", "1", false), kv("B", "\"two words\"", false)]),
            Instruction::Env(vec![kv("C", "3 4", true)]),
            Instruction::Label(vec![kv("x", "y", false)]),
            Instruction::Expose(vec!["80".into(), "8080/tcp".into()]),
            Instruction::Volume(vec!["/a".into(), "/b".into()]),
            Instruction::User("app:app".into()),
            Instruction::Workdir("/src".into()),
            Instruction::StopSignal("SIGKILL".into()),
            Instruction::Maintainer("me".into()),
            Instruction::Shell(vec!["bash".into(), "-c".into()]),
            Instruction::Cmd(ShellOrExec::Exec(vec!["run".into()])),
            Instruction::Entrypoint(ShellOrExec::Shell("exec app".into())),
        ]
    );
}

#[test]
fn onbuild_keeps_the_trigger_expression() {
    let df = dockerfile("FROM a\n  onbuild   RUN echo $HOME\nONBUILD COPY <<EOF /x\nhello\nEOF\n").unwrap();
    assert_eq!(df.stages[0].commands[0].instruction, Instruction::Onbuild("RUN echo $HOME".into()));
    assert_eq!(df.stages[0].commands[1].instruction, Instruction::Onbuild("COPY <<EOF /x\nhello\nEOF".into()));
}

#[test]
fn expansion_follows_the_dispatcher() {
    let env: BTreeMap<String, String> =
        [("U", "1000"), ("SRC", "a b"), ("DEST", "/opt"), ("ID", "gomod"), ("P", "80 443"), ("NAME", "world")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let df = dockerfile(
        "FROM a\nCOPY --chown=$U \"$SRC\" ${DEST}/\nRUN --mount=type=cache,target=/c,id=$ID,uid=$U true\n\
         EXPOSE $P\nCOPY <<EOF <<'RAW' /x\nhi \"$NAME\"\nEOF\n$NAME\nRAW\nARG X=$U\nCMD echo $U\nADD --chmod=$NONE x y\n",
    )
    .unwrap();
    let mut commands = df.stages[0].commands.clone();
    let mut ex = LexerExpander::new(df.escape, &env);
    for c in &mut commands {
        c.instruction.expand(&mut ex).unwrap();
    }
    let Instruction::Copy(c) = &commands[0].instruction else { panic!() };
    assert_eq!(
        (c.chown.as_deref(), c.sources.as_slice(), c.dest.as_str()),
        (Some("1000"), ["a b".to_string()].as_slice(), "/opt/")
    );
    let Instruction::Run(r) = &commands[1].instruction else { panic!() };
    assert_eq!(
        (r.mounts[0].id.as_deref(), r.mounts[0].uid, r.mounts[0].mount_type),
        (Some("gomod"), Some(1000), MountType::Cache)
    );
    assert_eq!(commands[2].instruction, Instruction::Expose(vec!["80".into(), "443".into()]));
    let Instruction::Copy(c) = &commands[3].instruction else { panic!() };
    assert_eq!(c.heredocs[0].data, "hi \"world\"\n");
    assert_eq!(c.heredocs[1].data, "$NAME\n");
    assert_eq!(commands[4].instruction, df.stages[0].commands[4].instruction, "ARG is not expanded");
    assert_eq!(commands[5].instruction, df.stages[0].commands[5].instruction, "CMD is not expanded");
    let Instruction::Add(a) = &commands[6].instruction else { panic!() };
    assert_eq!(a.chmod, None, "an empty expansion counts as not given");
    assert!(ex.unmatched.contains("NONE"));
    assert!(ex.matched.contains("SRC"));

    // Mount errors BuildKit reports at dispatch.
    let mut run =
        dockerfile("FROM a\nRUN --mount=type=$T,target=/x true\n").unwrap().stages[0].commands[0].instruction.clone();
    let env: BTreeMap<String, String> = [("T".to_string(), "cahce".to_string())].into();
    let err = run.expand(&mut LexerExpander::new('\\', &env)).unwrap_err();
    assert_eq!(err.to_string(), "unsupported mount type \"cahce\" (did you mean cache?)");
    let mut bad = Instruction::Workdir("${X".into());
    let err = bad.expand(&mut LexerExpander::new('\\', &env)).unwrap_err();
    assert_eq!(err.to_string(), "failed to process \"${X\": syntax error: missing '}'");
}

#[test]
fn lints() {
    let df = dockerfile(
        "FROM a AS Base\nMAINTAINER me\nCMD echo hi\nCMD [\"x\"]\nENV K V\n\
         from base as two\nSHELL [\"sh\", \"-c\"]\nENTRYPOINT run\n\
         FROM base AS two\nFROM two as context\nCMD x\n",
    )
    .unwrap();
    let got: Vec<String> = df.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        got,
        [
            "StageNameCasing: Stage name 'Base' should be lowercase (line 1)",
            "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)",
            "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)",
            "MultipleInstructionsDisallowed: Multiple CMD instructions should not be used in the same stage because only the last one will be used (line 3)",
            "LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format (line 5)",
            "ConsistentInstructionCasing: Command 'from' should match the case of the command majority (uppercase) (line 6)",
            "DuplicateStageName: Duplicate stage name \"two\", stage names should be unique (line 9)",
            "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 10)",
            "ReservedStageName: Stage name should not use the same name as reserved stage \"context\" (line 10)",
            "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 11)",
        ]
    );
    assert_eq!(df.warnings[0].stage, Some(0));
    assert_eq!(df.warnings.last().unwrap().stage, Some(3));
}

#[test]
fn no_panics_on_generated_input() {
    let keywords = [
        "FROM",
        "RUN",
        "COPY",
        "ADD",
        "ARG",
        "ENV",
        "LABEL",
        "ONBUILD",
        "HEALTHCHECK",
        "CMD",
        "SHELL",
        "EXPOSE",
        "VOLUME",
        "USER",
        "WORKDIR",
        "STOPSIGNAL",
        "MAINTAINER",
        "ENTRYPOINT",
        "foo",
    ];
    let pieces = [
        " ",
        "--mount=",
        "type=secret",
        ",",
        "id=",
        "$X",
        "\"",
        "'",
        "=",
        "<<EOF",
        "\nEOF\n",
        "[\"a\"]",
        "[",
        "AS",
        " as ",
        "--from=",
        "--link",
        "--interval=",
        "1ms",
        "NONE",
        "CMD",
        "\\\n",
        "é",
        "0",
        "--platform=",
        "--network=host",
        "--chmod=7",
        "from=",
        "target=/t",
        "uid=$U",
        "required",
        "size=1k",
        "\n",
        "x",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let env: BTreeMap<String, String> =
        [("X".to_string(), "a,b".to_string()), ("U".to_string(), "x".to_string())].into();
    for _ in 0..5_000 {
        let mut src = String::from("FROM busybox AS s\n");
        for _ in 0..(next() % 3 + 1) {
            src.push_str(keywords[next() % keywords.len()]);
            src.push(' ');
            for _ in 0..(next() % 8) {
                src.push_str(pieces[next() % pieces.len()]);
            }
            src.push('\n');
        }
        let Ok(parsed) = crate::parse(src.as_bytes()) else { continue };
        let Ok(df) = parse_dockerfile(&parsed) else { continue };
        for stage in &df.stages {
            for c in &stage.commands {
                let mut i = c.instruction.clone();
                let _ = i.expand(&mut LexerExpander::new(df.escape, &env));
            }
        }
        let _ = crate::outline::outline(&df, &crate::outline::OutlineOptions::default());
        let _ = crate::outline::targets(&df).to_text();
    }
}
