//! The command line as operators and scripts use it: `keyhop check`'s output and exit codes (the
//! systemd unit runs it before every reload) and `--log-format json` (log pipelines parse every
//! line), run on the built binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Raw, Reply, free_port, keyhop_bin, keyhop_log, redis_server, temp_dir, wait_until};

fn check(config: &Path) -> Output {
    Command::new(keyhop_bin())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run keyhop check")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `body` to `dir/name` and returns the path.
fn file(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write a config file");
    path
}

#[test]
fn check_prints_the_slot_map_and_exits_0_for_valid_files() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join("static.toml");
    let out = check(&example);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "listen 127.0.0.1:6380, 2 groups, static masters, read_from master, epoch 0\n\
             g1  master 127.0.0.1:7001  replicas 127.0.0.1:7002  slots 0-8191 (8192 slots)\n\
             g2  master 127.0.0.1:7003  replicas -  slots 8192-16383 (8192 slots)\n\
             config OK: {}\n",
            example.display()
        )
    );
    assert_eq!(text(&out.stderr), "");

    // Two groups without `slots`: the 16384 slots are split evenly, in order.
    let dir = temp_dir();
    let two = file(
        dir.path(),
        "two.toml",
        "listen = \"127.0.0.1:7100\"\nread_from = \"replica-preferred\"\n\
         [[groups]]\nname = \"a\"\nmaster = \"127.0.0.1:7101\"\nreplicas = [\"127.0.0.1:7102\", \"127.0.0.1:7103\"]\n\
         [[groups]]\nname = \"b\"\nmaster = \"127.0.0.1:7104\"\n",
    );
    let out = check(&two);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "listen 127.0.0.1:7100, 2 groups, static masters, read_from replica-preferred, epoch 0",
            "a  master 127.0.0.1:7101  replicas 127.0.0.1:7102,127.0.0.1:7103  slots 0-8191 (8192 slots)",
            "b  master 127.0.0.1:7104  replicas -  slots 8192-16383 (8192 slots)",
            &format!("config OK: {}", two.display()),
        ],
        "{stdout}"
    );

    // Sentinel mode: masters are unknown until the sentinels are asked.
    let sentinel = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join("sentinel.toml");
    let out = check(&sentinel);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("g1  master (from sentinel)"), "{stdout}");
    assert!(stdout.ends_with(&format!("config OK: {}\n", sentinel.display())), "{stdout}");
}

#[test]
fn check_names_every_problem_and_exits_1() {
    let dir = temp_dir();
    let expect_1 = |path: &Path| {
        let out = check(path);
        assert_eq!(out.status.code(), Some(1), "{}: stdout {}", path.display(), text(&out.stdout));
        assert_eq!(text(&out.stdout), "", "nothing printed as if valid");
        text(&out.stderr)
    };

    // An unknown key is an error, not ignored.
    let unknown = file(
        dir.path(),
        "unknown.toml",
        "listn = \"127.0.0.1:6380\"\n[[groups]]\nname = \"g1\"\nmaster = \"127.0.0.1:7001\"\n",
    );
    let err = expect_1(&unknown);
    assert!(err.starts_with(&format!("invalid configuration in {}:", unknown.display())), "{err}");
    assert!(err.contains("unknown field `listn`"), "{err}");

    // A bad address and unowned slots: both named, with the key and the fix.
    let bad = file(
        dir.path(),
        "bad.toml",
        "[[groups]]\nname = \"g1\"\nmaster = \"nowhere\"\nslots = [\"0-100\"]\n\
         [[groups]]\nname = \"g2\"\nmaster = \"127.0.0.1:7002\"\nslots = [\"200-16383\"]\n",
    );
    assert_eq!(
        expect_1(&bad),
        format!(
            "2 problems in the configuration in {}:\n  \
             - groups[0].master: \"nowhere\" has no port: write host:port, e.g. \"127.0.0.1:6379\"\n  \
             - groups[*].slots: slots not owned by any group: 101-199 (every slot 0-16383 needs exactly one owner)\n",
            bad.display()
        )
    );

    // A missing file: exit 1 (what src/run.rs does today), naming the path.
    let missing = dir.path().join("missing.toml");
    let err = expect_1(&missing);
    assert!(
        err.starts_with(&format!("cannot read the configuration file {}: ", missing.display())),
        "{err}"
    );

    // No --config at all.
    let out = Command::new(keyhop_bin()).arg("check").output().expect("run keyhop check");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "no configuration given: pass --config FILE (see examples/static.toml)\n"
    );
}

/// Every line of `log` parsed as a JSON object (panics, naming the line, on anything else).
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v.is_object() => v,
            other => panic!("not a JSON object: {l:?} ({other:?})"),
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line_with_level_message_and_fields() {
    let g1 = redis_server(&[]);
    // g2's master is a port nothing listens on: requests for it fail and keyhop warns.
    let dead = format!("127.0.0.1:{}", free_port());
    let dir = temp_dir();
    // `threads` is set so the test matrix leaves it alone (its check looks for the text format).
    let config = format!(
        "listen = \"{{listen}}\"\nthreads = 1\nconnect_timeout_ms = 500\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nslots = [\"0-8191\"]\n\
         [[groups]]\nname = \"g2\"\nmaster = \"{dead}\"\nslots = [\"8192-16383\"]\n",
        g1.addr()
    );
    let kh = common::keyhop_with_args(dir.path(), &config, &["--log-format", "json"]);

    let serving = json_lines(&keyhop_log(dir.path()))
        .into_iter()
        .find(|v| v["fields"]["message"] == "keyhop serving")
        .unwrap_or_else(|| panic!("no serving line:\n{}", keyhop_log(dir.path())));
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["fields"]["listen"], format!("127.0.0.1:{}", kh.port));
    assert_eq!(serving["fields"]["threads"], 1);
    assert_eq!(serving["fields"]["groups"], 2);
    assert_eq!(serving["fields"]["sentinel"], false);
    assert!(serving["timestamp"].is_string() && serving["target"].is_string(), "{serving}");

    // foo (slot 12182) is on g2: the client gets an error and the log a WARN object naming g2.
    let mut c = Raw::connect(kh.port);
    match c.call(&["GET", "foo"]) {
        Reply::Error(e) => assert!(e.starts_with(&format!("ERR keyhop: backend {dead} ")), "{e}"),
        other => panic!("GET of a dead group: {other:?}"),
    }
    let warned = wait_until(Duration::from_secs(10), || {
        json_lines(&keyhop_log(dir.path())).iter().any(|v| {
            v["level"] == "WARN"
                && v["fields"]["backend"] == dead.as_str()
                && v["fields"]["message"] == "backend connect failed"
                && v["fields"]["error"].is_string()
        })
    });
    assert!(warned, "no WARN object for {dead}:\n{}", keyhop_log(dir.path()));
    // Everything logged, start to finish, parsed as JSON.
    assert!(json_lines(&keyhop_log(dir.path())).len() >= 2);
}
