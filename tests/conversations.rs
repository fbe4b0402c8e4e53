//! Every conversation under `tests/conversations/` (any folder, picked up automatically) is
//! run through `gsmgw try`'s runner with the default config (`config/demo.toml`, so every
//! configured dialect sees every message); one is run through the real binary.
//!
//! The format is described in `src/tryrun.rs` and `tests/conversations/README.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gsmgw::tryrun::{self, Line, Runner, Step, StepResult};
use serde_json::json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conversations")
}

/// Every `*.jsonl` below `dir`, sorted.
fn conversation_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "jsonl") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Runs `gsmgw try` with `stdin`; returns (success, stdout, stderr).
fn gsmgw_try(stdin: &str, extra: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gsmgw"))
        .arg("try")
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("GSMGW_LOG", "gsmgw=warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gsmgw runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("gsmgw reads stdin");
    let out = child.wait_with_output().expect("gsmgw ends");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_conversation_holds() {
    // The library runs from the crate root, where config/demo.toml and plugins/ are.
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).expect("crate root");
    let files = conversation_files(&root());
    assert!(files.len() >= 16, "conversations found: {files:?}");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| tryrun::check_conversation_file(f).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn binary_prints_one_result_per_step_and_checks_expectations() {
    let file = root().join("call_reject_conn/03_user_call_pulses_relay.jsonl");
    let text = std::fs::read_to_string(&file).expect("conversation file");
    let steps = text
        .lines()
        .filter(|l| matches!(tryrun::parse_line(l), Ok(Line::Step(_))))
        .count();
    let (ok, stdout, stderr) = gsmgw_try(&text, &[]);
    assert!(ok, "gsmgw try failed: {stderr}");
    let results: Vec<StepResult> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a step result"))
        .collect();
    assert_eq!(results.len(), steps);
    assert_eq!(
        results.iter().map(|r| r.step).collect::<Vec<_>>(),
        (1..=steps).collect::<Vec<_>>()
    );
}

#[test]
fn binary_fails_when_an_expectation_does_not_hold() {
    let text = format!(
        "{}\n{}\n",
        json!({"sms": {"from": "+447700900123", "text": "STATUS"}}),
        json!({"expect": {"sms_sent": [{"to": "+447700900123", "text": "nonsense"}]}}),
    );
    let (ok, _, stderr) = gsmgw_try(&text, &[]);
    assert!(!ok);
    assert!(stderr.contains("stdin:2: sms_sent: expected"), "{stderr}");
}

#[test]
fn failed_expectation_names_its_line_and_what_differs() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).expect("crate root");
    let text = format!(
        "{}\n\n{}\n",
        json!({"input": {"name": "door", "on": true}}),
        json!({"expect": {"outputs": {"relay": "ON"}}}),
    );
    let e = tryrun::check_conversation("x.jsonl", &text).err();
    assert_eq!(
        e.as_deref(),
        Some("x.jsonl:3: after the step on line 1: outputs.relay: expected \"ON\", got \"OFF\"")
    );
}

/// A plugin in a temporary folder, with the demo config pointed at it.
fn runner_with_plugin(dir: &Path, source: &str, state: Option<&Path>) -> Runner {
    std::fs::write(dir.join("probe.lua"), source).expect("write plugin");
    let patch = json!({"lua": {"plugins_dir": dir, "plugins": ["probe"]}});
    let cfg = tryrun::load_config(
        Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml")),
        Some(&patch),
    )
    .expect("config");
    Runner::new(cfg, state).expect("runner")
}

#[test]
fn advance_runs_timers_and_output_reverts_in_time_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin = r#"
        local function report(tag)
            gw.sms.send("+447700900001", tag .. " " .. (gw.output.get("relay") and "ON" or "OFF"))
        end
        return {
            sms = function(msg)
                gw.output.set("relay", true, 5)
                gw.timer.after(3, function() report("t3") end)
                gw.timer.after(7, function() report("t7") end)
                return true
            end,
        }
    "#;
    let mut runner = runner_with_plugin(dir.path(), plugin, None);
    let go = runner.step(&Step::Sms {
        from: "+447700900001".into(),
        text: "GO".into(),
    });
    assert_eq!(go.errors, Vec::<String>::new());
    assert_eq!(go.handled_by.as_deref(), Some("probe"));
    assert_eq!(go.outputs.get("relay").map(String::as_str), Some("ON"));
    let texts = |r: &StepResult| {
        r.sms_sent
            .iter()
            .map(|s| s.text.clone())
            .collect::<Vec<_>>()
    };
    let first = runner.step(&Step::Advance("4s".into()));
    assert_eq!(texts(&first), vec!["t3 ON"]);
    let second = runner.step(&Step::Advance("10s".into()));
    assert_eq!(texts(&second), vec!["t7 OFF"]);
    assert_eq!(second.outputs.get("relay").map(String::as_str), Some("OFF"));
}

#[test]
fn state_dir_keeps_script_data_between_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = tempfile::tempdir().expect("state dir");
    let plugin = r#"
        return {
            sms = function(msg)
                local n = (gw.store.get("n") or 0) + 1
                gw.store.set("n", n)
                gw.sms.send(msg.from, tostring(n))
                return true
            end,
        }
    "#;
    let sms = Step::Sms {
        from: "+447700900001".into(),
        text: "COUNT".into(),
    };
    for want in ["1", "2"] {
        let mut runner = runner_with_plugin(dir.path(), plugin, Some(state.path()));
        let result = runner.step(&sms);
        assert_eq!(result.sms_sent.first().map(|s| s.text.as_str()), Some(want));
    }
}

#[test]
fn script_errors_are_reported_with_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin = "return {\n  sms = function(msg)\n    error('boom')\n  end,\n}\n";
    let mut runner = runner_with_plugin(dir.path(), plugin, None);
    let result = runner.step(&Step::Sms {
        from: "+447700900001".into(),
        text: "X".into(),
    });
    assert_eq!(result.handled_by, None);
    assert_eq!(result.errors.len(), 1, "{:?}", result.errors);
    assert!(
        result.errors[0].starts_with("probe.lua:3:"),
        "{:?}",
        result.errors
    );
}
