//! The README's first two commands (`./dev demo`, `./dev test`) install what is missing before
//! running. These tests check what `scripts/setup.sh` decides to install (with `--dry-run`, on
//! a PATH that lacks Redis) and `./dev`'s own argument handling; the real install is exercised
//! by CI on a fresh machine and by hand in a chroot (see the issue 13 note).

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `name` is on this machine's PATH.
fn on_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.exists()))
        .unwrap_or_else(|| panic!("{name} on PATH"))
}

/// A directory holding only the tools setup.sh itself uses, plus `extra` as scripts that fail
/// loudly if run (a dry run must never run the package manager).
fn bare_path(dir: &Path, extra: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for tool in ["bash", "dirname", "id", "sed"] {
        symlink(on_path(tool), bin.join(tool)).expect("symlink");
    }
    for name in extra {
        let p = bin.join(name);
        std::fs::write(&p, "#!/bin/sh\necho \"ran $0 $*\" >&2\nexit 99\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bin
}

fn setup(path: &Path, args: &[&str]) -> Output {
    Command::new(on_path("bash"))
        .arg(repo().join("scripts/setup.sh"))
        .args(args)
        .env("PATH", path)
        .output()
        .expect("run scripts/setup.sh")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_machine_without_redis_gets_the_debian_packages() {
    let dir = common::temp_dir();
    let bin = bare_path(dir.path(), &["apt-get"]);
    let out = setup(&bin, &["--dry-run", "build", "redis"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        "would run: apt-get install build-essential redis-server redis-sentinel redis-tools openssl",
        "{stderr}"
    );
    assert!(
        stderr
            .contains("missing: cc redis-server redis-sentinel redis-cli redis-benchmark openssl"),
        "{stderr}"
    );
    assert!(!stderr.contains("ran "), "a dry run ran the package manager: {stderr}");
}

#[test]
fn a_machine_without_etcd_gets_etcd_server() {
    let dir = common::temp_dir();
    let bin = bare_path(dir.path(), &["apt-get", "systemctl", "service"]);
    let out = setup(&bin, &["--dry-run", "etcd"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "would run: apt-get install etcd-server", "{stderr}");
    assert!(stderr.contains("missing: etcd"), "{stderr}");
    assert!(!stderr.contains("ran "), "a dry run ran the package manager or a service: {stderr}");
}

#[test]
fn a_machine_without_chromium_gets_chromium() {
    let dir = common::temp_dir();
    let bin = bare_path(dir.path(), &["apt-get"]);
    let out = setup(&bin, &["--dry-run", "chromium"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "would run: apt-get install chromium", "{stderr}");
    assert!(stderr.contains("missing: chromium"), "{stderr}");
    assert!(!stderr.contains("ran "), "a dry run ran the package manager: {stderr}");
}

#[test]
fn without_a_package_manager_it_says_what_to_install() {
    let dir = common::temp_dir();
    let bin = bare_path(dir.path(), &[]);
    let out = setup(&bin, &["--dry-run", "redis"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "cannot install redis-server redis-sentinel redis-cli redis-benchmark openssl here (no apt-get, \
             dnf or brew found): install them, then run again"
        ),
        "{stderr}"
    );
}

#[test]
fn this_machine_needs_nothing_for_the_tests() {
    // The test suite runs after `./dev test` installed its needs, so on this PATH nothing is missing.
    let out = setup(
        Path::new(&std::env::var_os("PATH").expect("PATH")),
        &["--dry-run", "build", "redis", "etcd", "chromium"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "nothing to install", "{stderr}");
}

#[test]
fn dev_refuses_unknown_commands_and_lists_the_real_ones() {
    let out = Command::new(repo().join("dev")).arg("bogus").output().expect("run ./dev");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    for line in
        ["./dev demo [ARGS]", "./dev test [ARGS]", "./dev bench [ARGS]", "./dev setup [WHAT]"]
    {
        assert!(stderr.contains(line), "{line} missing from:\n{stderr}");
    }
    let out =
        setup(Path::new(&std::env::var_os("PATH").expect("PATH")), &["--dry-run", "everything"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("unknown argument 'everything'"));
}
