//! What a new user meets first, run as they would run it: the real `gsmgw` binary, from a
//! folder that is not the repository, its demo driven through the console on stdin, watched
//! with the real `mosquitto_sub` and `mosquitto_pub`, stopped with a real SIGINT; every fenced
//! command in README.md that can run here; the configs under `examples/` through
//! `gsmgw check`.

#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_gsmgw");
/// Generous: the machine is shared with other builds.
const WAIT: Duration = Duration::from_secs(20);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A port nobody listens on now, for the demo's broker.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `gsmgw demo` as a child process: stdin to type into, stdout lines on a channel.
struct Demo {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Everything printed so far, for failure messages.
    seen: Vec<String>,
}

impl Demo {
    /// Starts the demo in `dir` (an empty temporary folder: not the repository) and waits for
    /// its banner.
    fn start(dir: &Path, args: &[&str]) -> Demo {
        let mut child = Command::new(BIN)
            .arg("demo")
            .args(args)
            .current_dir(dir)
            .env("GSMGW_LOG", "gsmgw=warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gsmgw demo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut demo = Demo {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        demo.expect("  loaded: ");
        demo
    }

    /// Waits (bounded) for a line containing `needle`; returns it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "the demo never printed {needle:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("type into the demo");
        stdin.flush().expect("flush");
    }

    /// Waits (bounded) for the process to end; its exit status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not stop within {WAIT:?}; it printed:\n{}",
                self.seen.join("\n")
            );
            // Polling a child: there is no event to wait on without owning its SIGCHLD.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mosquitto command-line clients, or `None` (skip) when they are not installed; on CI
/// they must be.
fn mosquitto_clients() -> Option<()> {
    let found = Command::new("mosquitto_sub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return Some(());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "mosquitto_sub not installed: apt-get install mosquitto-clients"
    );
    eprintln!("skipped: mosquitto-clients is not installed");
    None
}

#[test]
fn mosquitto_sub_and_pub_with_their_default_client_ids_work_against_the_demo() {
    let Some(()) = mosquitto_clients() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port().to_string();
    let mut demo = Demo::start(dir.path(), &["--mqtt-port", &port]);
    // As the README says, with no -i: the clients send an empty client id.
    let sub = Command::new("mosquitto_sub")
        .args(["-p", &port, "-t", "gsmgw/#", "-v", "-C", "1", "-W", "15"])
        .args(["-t", "gsmgw/demo/status"])
        .output()
        .expect("run mosquitto_sub");
    assert!(
        sub.status.success(),
        "mosquitto_sub failed: {}",
        String::from_utf8_lossy(&sub.stderr)
    );
    assert!(!sub.stdout.is_empty(), "mosquitto_sub received nothing");

    let publish = Command::new("mosquitto_pub")
        .args(["-p", &port, "-t", "gsmgw/demo/output/relay/set", "-m", "ON"])
        .output()
        .expect("run mosquitto_pub");
    assert!(
        publish.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&publish.stderr)
    );
    demo.expect("  output relay ON");
    demo.expect("mqtt gsmgw/demo/output/relay ON");
}

#[test]
fn the_demo_uses_an_existing_broker_given_with_mqtt_url() {
    let Some(broker) = mosquitto::Mosquitto::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = broker.url();
    let mut demo = Demo::start(dir.path(), &["--mqtt-url", &url]);
    let banner = demo.seen.join("\n");
    assert!(banner.contains(&format!("MQTT on {url}")), "{banner}");
    assert!(
        !banner.contains("mosquitto_sub -p"),
        "no embedded broker: {banner}"
    );
    // The gateway's retained state arrives through the user's broker.
    demo.expect("mqtt gsmgw/demo/status online");
    demo.type_line("input door on");
    demo.expect("mqtt gsmgw/demo/input/door ON");
    assert!(
        broker.wait_for_log("gsmgw-demo"),
        "the broker never saw the gateway:\n{}",
        broker.log()
    );
}

#[test]
fn ctrl_c_stops_the_demo_at_once_and_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port().to_string();
    let mut demo = Demo::start(dir.path(), &["--mqtt-port", &port]);
    // stdin stays open: the demo must not wait for a line (or for Enter) to notice.
    let pid = Pid::from_raw(i32::try_from(demo.child.id()).expect("pid"));
    kill(pid, Signal::SIGINT).expect("SIGINT");
    demo.expect("stopping");
    let status = demo.wait_exit();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn the_demo_run_elsewhere_loads_every_stock_plugin_and_lists_only_what_loaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port().to_string();
    let mut demo = Demo::start(dir.path(), &["--mqtt-port", &port]);
    let banner = demo.seen.join("\n");
    for plugin in [
        "password_comma",
        "pword_installer",
        "david",
        "call_reject_conn",
    ] {
        assert!(
            banner.contains(&format!("plugin {plugin}")),
            "{plugin} not loaded:\n{banner}"
        );
    }
    assert!(!banner.contains("NOT LOADED"), "{banner}");
    demo.type_line("sms +447700900123 STATUS");
    demo.expect("← SMS to +447700900123: RELAY OPEN INPUT LOW");

    // A config whose plugin is broken: the banner must say so, not list it as loaded.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    std::fs::write(plugins.join("broken.lua"), "this is not lua").expect("write");
    let config = dir.path().join("broken.toml");
    std::fs::write(
        &config,
        "[gpio]\nbackend = \"sim\"\n[lua]\nplugins = [\"broken\", \"david\"]\n",
    )
    .expect("write");
    let config = config.display().to_string();
    let port = free_port().to_string();
    let mut demo = Demo::start(dir.path(), &["-c", &config, "--mqtt-port", &port]);
    let line = demo
        .seen
        .iter()
        .find(|l| l.contains("  loaded: "))
        .cloned()
        .unwrap_or_default();
    assert!(line.contains("plugin david"), "{line}");
    assert!(!line.contains("broken"), "{line}");
    let failed = demo.expect("NOT LOADED");
    assert!(failed.contains("plugin broken: broken.lua:1"), "{failed}");
}

#[test]
fn the_demo_state_command_prints_words_not_debug_dumps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port().to_string();
    let mut demo = Demo::start(dir.path(), &["--mqtt-port", &port]);
    // The simulated modem registers shortly after start: its status on MQTT says when.
    demo.expect("mqtt gsmgw/demo/modem {\"operator\":\"Sim Mobile\"");
    demo.type_line("state");
    // Not the banner's "  outputs: relay, …": the state command's line starts the line.
    let outputs = demo.expect("outputs: relay ");
    assert!(outputs.contains("relay OFF"), "{outputs}");
    let modem = demo.expect("modem:");
    assert!(
        modem.contains("registered on Sim Mobile") && !modem.contains("ModemStatus"),
        "{modem}"
    );
}

fn run_in(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gsmgw");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

#[test]
fn try_reports_a_rule_that_failed_to_load_in_its_output_and_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("mkdir");
    std::fs::write(rules.join("bad.lua"), "gw.on_sms(function(\n").expect("write");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[gpio]\nbackend = \"sim\"\n[lua]\nplugins = [\"call_reject_conn\"]\nrules = [\"bad\"]\n\
         [plugins.call_reject_conn]\nmaster = \"+447700900123\"\n",
    )
    .expect("write");
    let step = r#"{"sms":{"from":"+447700900123","text":"STATUS"}}"#;
    let out = run_in(
        dir.path(),
        &["try", "-c", &config.display().to_string()],
        step,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let first: serde_json::Value =
        serde_json::from_str(stdout.lines().next().unwrap_or("")).expect("a JSON result");
    let errors = first["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("bad.lua:"))),
        "{first}"
    );
    // The plugin still ran: the conversation is reported, not dropped.
    assert_eq!(first["handled_by"], "call_reject_conn");

    // And with nothing broken, from a folder without plugins/: the built-in ones, exit 0.
    let out = run_in(dir.path(), &["try"], step);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("RELAY OPEN INPUT LOW"), "{stdout}");
    assert!(stdout.contains(r#""errors":[]"#), "{stdout}");
}

#[test]
fn pdu_decode_prints_text_by_default_and_json_when_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    // tests/data/pdu/pdus.jsonl, pm-deliver-howareyou-tz00 (python-messaging's test suite).
    let hex = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07";
    let out = run_in(dir.path(), &["pdu", "decode", hex], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("type: deliver"), "{text}");
    assert!(text.contains("sender: +31641600986"), "{text}");
    assert!(text.contains("smsc: +31624000000"), "{text}");
    assert!(text.contains("text: How are you?"), "{text}");
    assert!(!text.contains("Deliver {"), "a Debug dump: {text}");
    let out = run_in(dir.path(), &["pdu", "decode", "--json", hex], "");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["text"], "How are you?");
}

/// A command line of README.md's demo console block: what to type and what must appear.
struct ConsoleStep {
    typed: String,
    expected: Vec<String>,
}

/// The console block (```console): `typed   ← expected (comment)`; a line starting with
/// spaces adds an expectation to the line before it.
fn console_steps(block: &str) -> Vec<ConsoleStep> {
    let mut steps: Vec<ConsoleStep> = Vec::new();
    for line in block.lines() {
        let (typed, expected) = match line.split_once('←') {
            Some((typed, rest)) => {
                let rest = rest.split('(').next().unwrap_or("");
                let rest = rest.split("  ").next().unwrap_or("").trim();
                (typed.trim(), Some(rest.to_string()))
            }
            None => (line.split("  ").next().unwrap_or("").trim(), None),
        };
        if typed.is_empty() {
            if let (Some(step), Some(e)) = (steps.last_mut(), expected) {
                step.expected.push(e);
            }
            continue;
        }
        steps.push(ConsoleStep {
            typed: typed.to_string(),
            expected: expected.into_iter().collect(),
        });
    }
    steps
}

/// The fenced blocks of a Markdown file: (info string, body).
fn fenced_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// Commands in the walked Markdown files that cannot run in a test, and why. Anything else
/// in a `sh` block runs. (docs/raspberry-pi.md is not walked: every command there needs the
/// board, the package or a cross toolchain.)
const NOT_HERE: &[(&str, &str)] = &[
    ("cargo test", "it is the test suite this test is part of"),
    (
        "gsmgw check -c /etc/gsmgw/gsmgw.toml",
        "needs the installed package; .ci/package.sh runs it",
    ),
    (
        "gsmgw run -c /etc/gsmgw/gsmgw.toml",
        "needs a modem and the installed config",
    ),
    (
        "cargo install cargo-deb",
        "a release build; .ci/package.sh does it",
    ),
    (
        "sudo ",
        "changes the machine; .ci/package.sh installs the package",
    ),
    ("sudoedit ", "interactive"),
    ("journalctl ", "needs systemd"),
    (
        "FOOTPRINT_BIN=",
        "a release build; tests/service_footprint.rs",
    ),
];

/// The commands of the `sh` blocks: continuation lines joined, `  # comments` cut.
fn sh_commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    for (_, body) in fenced_blocks(markdown)
        .into_iter()
        .filter(|(info, _)| info == "sh")
    {
        let mut pending = String::new();
        for line in body.lines() {
            let line = line.split("  #").next().unwrap_or("").trim();
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                continue;
            }
            pending.push_str(line);
            let command = std::mem::take(&mut pending);
            if !command.is_empty() && !command.starts_with('#') {
                commands.push(command);
            }
        }
    }
    commands
}

#[test]
fn every_command_in_the_readme_and_docs_does_what_it_says() {
    let readme = std::fs::read_to_string(repo("README.md")).expect("README.md");
    let console = fenced_blocks(&readme)
        .into_iter()
        .find(|(info, _)| info == "console")
        .map(|(_, body)| console_steps(&body))
        .expect("README.md has the demo's console block");
    assert!(console.len() >= 5, "the console block was not understood");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let mut files = vec![
        // The README's commands work from any folder: run them from an empty one.
        ("README.md".to_string(), elsewhere.path().to_path_buf()),
        (
            "docs/lua-api.md".to_string(),
            elsewhere.path().to_path_buf(),
        ),
        ("examples/README.md".to_string(), repo("")),
    ];
    for entry in std::fs::read_dir(repo("examples"))
        .expect("examples/")
        .flatten()
    {
        if entry.path().join("README.md").is_file() {
            let name = entry.file_name().to_string_lossy().to_string();
            files.push((format!("examples/{name}/README.md"), repo("")));
        }
    }
    let mut ran = 0;
    for (file, cwd) in &files {
        let text = std::fs::read_to_string(repo(file)).expect("walked file");
        // `export` lines hold for the rest of their file, as in a shell.
        let mut exports = String::new();
        for command in sh_commands(&text) {
            if NOT_HERE.iter().any(|(c, _)| command.starts_with(c)) {
                continue;
            }
            let command = command
                .replace("cargo run --release -- ", "gsmgw ")
                .replace("cargo run -- ", "gsmgw ");
            if command.starts_with("export ") {
                exports.push_str(&command);
                exports.push_str("; ");
                continue;
            }
            let script = format!("{exports}{command}");
            if command == "gsmgw demo" {
                walk_the_demo(cwd, &console);
            } else if command.contains("gsmgw demo") {
                start_and_quit(cwd, file, &script);
            } else {
                let out = Command::new("sh")
                    .args(["-c", &script])
                    .current_dir(cwd)
                    .env("PATH", path_with_gsmgw())
                    .output()
                    .expect("sh");
                assert!(
                    out.status.success(),
                    "{file}: `{command}` failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            ran += 1;
        }
    }
    assert!(ran >= 8, "only {ran} commands ran");
}

/// A demo command of the docs: it starts with everything loaded, and `quit` stops it.
fn start_and_quit(cwd: &Path, file: &str, script: &str) {
    let port = free_port();
    let out = Command::new("sh")
        .args(["-c", &format!("{script} --mqtt-port {port}")])
        .current_dir(cwd)
        .env("PATH", path_with_gsmgw())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(b"quit\n")?;
            }
            child.wait_with_output()
        })
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("  loaded: ") && !stdout.contains("NOT LOADED"),
        "{file}: `{script}`:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PATH with the test's `gsmgw` first, so README lines run as an installed user runs them.
fn path_with_gsmgw() -> String {
    let bin_dir = Path::new(BIN)
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    match std::env::var("PATH") {
        Ok(path) => format!("{bin_dir}:{path}"),
        Err(_) => bin_dir,
    }
}

fn walk_the_demo(dir: &Path, steps: &[ConsoleStep]) {
    let port = free_port().to_string();
    let mut demo = Demo::start(dir, &["--mqtt-port", &port]);
    for step in steps {
        let from = demo.seen.len();
        demo.type_line(&step.typed);
        if step.typed == "quit" {
            let status = demo.wait_exit();
            assert!(status.success(), "quit: exit status {status:?}");
            return;
        }
        // Output of concurrent tasks interleaves: each expectation may come in any order
        // after the line was typed.
        for expected in &step.expected {
            let already = demo.seen[from..].iter().any(|l| l.contains(expected));
            if !already {
                demo.expect(expected);
            }
        }
        let unknown = demo.seen[from..]
            .iter()
            .find(|l| l.contains("unknown command"));
        assert!(unknown.is_none(), "{}: {unknown:?}", step.typed);
    }
    panic!("the README's console block does not end with quit");
}

/// Runs `gsmgw` in the repository root as an example's README says, with the board's paths
/// replaced from the environment (simulated GPIO, no serial port, the example's rules).
fn example_command(example: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(repo(""))
        .env("GSMGW_GPIO__BACKEND", "sim")
        .env("GSMGW_MODEM__PORT", "/dev/null")
        .env(
            "GSMGW_LUA__RULES_DIR",
            repo(&format!("examples/{example}/rules")),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gsmgw");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

#[test]
fn every_example_passes_check_and_its_conversation() {
    let mut examples: Vec<String> = std::fs::read_dir(repo("examples"))
        .expect("examples/")
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    examples.sort();
    assert!(examples.len() >= 3, "{examples:?}");
    for example in &examples {
        let dir = repo(&format!("examples/{example}"));
        assert!(dir.join("README.md").is_file(), "{example}: no README.md");
        let config = dir.join("gsmgw.toml").display().to_string();
        let out = example_command(example, &["check", "-c", &config], "");
        assert!(
            out.status.success(),
            "{example}: gsmgw check failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let conversation = std::fs::read_to_string(dir.join("try.jsonl"))
            .unwrap_or_else(|e| panic!("{example}/try.jsonl: {e}"));
        assert!(
            conversation.contains("\"expect\""),
            "{example}: checks nothing"
        );
        let out = example_command(example, &["try", "-c", &config], &conversation);
        assert!(
            out.status.success(),
            "{example}: its conversation failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_looks_for_the_modem_port_and_resolves_gpio_lines_on_the_configured_chip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("c.toml");
    let missing_chip = dir.path().join("gpiochip9");
    std::fs::write(
        &config,
        format!(
            "[modem]\nport = \"{port}\"\n[gpio]\nbackend = \"cdev\"\nchip = \"{chip}\"\n\
             [outputs.relay]\nline = 17\n[inputs.door]\nline = 27\n",
            port = dir.path().join("ttyUSB7").display(),
            chip = missing_chip.display()
        ),
    )
    .expect("write");
    let out = run_in(
        dir.path(),
        &["check", "-c", &config.display().to_string()],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("modem.port:") && stderr.contains("ttyUSB7 does not exist"),
        "{stderr}"
    );
    for key in ["outputs.relay.line:", "inputs.door.line:"] {
        let line = stderr.lines().find(|l| l.contains(key)).unwrap_or_default();
        assert!(
            line.contains(&format!("cannot open {}", missing_chip.display())),
            "{key} {stderr}"
        );
    }

    // A port that exists (never opened: a running gateway may hold it) and simulated lines.
    let out = Command::new(BIN)
        .args(["check", "-c", &config.display().to_string()])
        .current_dir(dir.path())
        .env("GSMGW_MODEM__PORT", "/dev/null")
        .env("GSMGW_GPIO__BACKEND", "sim")
        .output()
        .expect("run gsmgw");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("modem port /dev/null: exists"), "{stdout}");
}
