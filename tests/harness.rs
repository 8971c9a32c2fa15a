//! The test harness's own promises that every other test file relies on without checking them:
//! here, that the Redis binaries are found through `PATH` first (a locally built or
//! version-managed Redis is the one tested), then in the usual system directories.

mod common;

use std::path::{Path, PathBuf};

use common::{find_bin, temp_dir};

#[test]
fn the_redis_finder_searches_path_in_order_then_the_system_directories() {
    let empty = temp_dir();
    let first = temp_dir();
    let fake = first.path().join("redis-server");
    std::fs::write(&fake, "#!/bin/sh\n").expect("write a stand-in redis-server");
    // PATH order wins over the system directories, and an entry without it is skipped.
    let path = std::env::join_paths([empty.path(), first.path(), Path::new("/usr/bin")])
        .expect("join PATH entries");
    assert_eq!(find_bin("redis-server", Some(&path)), Some(fake.clone()));

    // A directory is not a binary.
    let dir_named = temp_dir();
    std::fs::create_dir(dir_named.path().join("redis-server")).expect("mkdir");
    let path = std::env::join_paths([dir_named.path(), first.path()]).expect("join");
    assert_eq!(find_bin("redis-server", Some(&path)), Some(fake));

    // Not in PATH (or no PATH): the system directories, where the suite's Redis is installed.
    let system = ["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from);
    let path = std::env::join_paths([empty.path()]).expect("join");
    for p in [Some(path.as_os_str()), None] {
        let found = find_bin("redis-server", p).expect("redis-server in a system directory");
        assert!(found.parent().is_some_and(|d| system.iter().any(|s| s == d)), "{found:?}");
    }
    assert_eq!(find_bin("keyhop-no-such-binary", Some(&path)), None);
}
