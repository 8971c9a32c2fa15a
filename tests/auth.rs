//! Client authentication (`password`) and backend authentication (`backend_password`), end to
//! end through the binary.

mod common;

use common::{Raw, Reply, cmd, keyhop, redis_server, temp_dir};

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn config(master: u16, extra: &str) -> String {
    format!(
        "listen = \"{{listen}}\"\n{extra}\n[[groups]]\nname = \"g1\"\nmaster = \"127.0.0.1:{master}\"\n"
    )
}

fn err(text: &str) -> Reply {
    Reply::Error(text.to_string())
}

fn ok() -> Reply {
    Reply::Status("OK".into())
}

#[test]
fn clients_must_authenticate_before_commands() {
    let master = redis_server(&[]);
    let dir = temp_dir();
    let kh = keyhop(dir.path(), &config(master.port, "password = \"s3cret\""));

    let mut c = Raw::connect(kh.port);
    // Only AUTH, HELLO, PING and QUIT are served before authenticating.
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
    for args in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["DBSIZE"],
        &["INFO"],
        &["CLIENT", "SETNAME", "x"],
        &["MGET", "a", "b"],
    ] {
        assert_eq!(c.call(args), err(NOAUTH), "{args:?}");
    }
    assert_eq!(cmd(master.port, &["EXISTS", "k"]), "0", "nothing reached the backend");
    assert_eq!(c.call(&["AUTH", "wrong"]), err(WRONGPASS));
    assert_eq!(c.call(&["AUTH", "admin", "s3cret"]), err(WRONGPASS), "only the default user");
    assert_eq!(c.call(&["GET", "k"]), err(NOAUTH), "a failed AUTH leaves it unauthenticated");
    assert_eq!(c.call(&["AUTH", "s3cret"]), ok());
    assert_eq!(c.call(&["SET", "k", "v"]), ok());
    assert_eq!(c.call(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
    assert_eq!(cmd(master.port, &["GET", "k"]), "v");

    // AUTH default <password>.
    let mut d = Raw::connect(kh.port);
    assert_eq!(d.call(&["AUTH", "default", "s3cret"]), ok());
    assert_eq!(d.call(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));

    // HELLO 2 AUTH default <password>.
    let mut h = Raw::connect(kh.port);
    let hello = h.call(&["HELLO", "2"]);
    assert!(matches!(&hello, Reply::Error(e) if e.starts_with("NOAUTH")), "{hello:?}");
    let bad = h.call(&["HELLO", "2", "AUTH", "default", "nope"]);
    assert_eq!(bad, err(WRONGPASS));
    let good = h.call(&["HELLO", "2", "AUTH", "default", "s3cret"]);
    assert!(matches!(good, Reply::Array(Some(_))), "{good:?}");
    assert_eq!(h.call(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));

    // RESET forgets the authentication.
    assert_eq!(h.call(&["RESET"]), Reply::Status("RESET".into()));
    assert_eq!(h.call(&["GET", "k"]), err(NOAUTH));

    // QUIT is allowed unauthenticated and closes the connection.
    let mut q = Raw::connect(kh.port);
    assert_eq!(q.call(&["QUIT"]), ok());
    assert!(q.try_read().is_err());
}

#[test]
fn auth_without_a_configured_password_is_an_error() {
    let master = redis_server(&[]);
    let dir = temp_dir();
    let kh = keyhop(dir.path(), &config(master.port, ""));
    let mut c = Raw::connect(kh.port);
    assert_eq!(c.call(&["GET", "k"]), Reply::Bulk(None));
    let r = c.call(&["AUTH", "x"]);
    assert!(matches!(&r, Reply::Error(e) if e.starts_with("ERR AUTH")), "{r:?}");
}

#[test]
fn backend_password_reaches_a_requirepass_server() {
    let master = redis_server(&["--requirepass", "backpw"]);
    let dir = temp_dir();
    let kh = keyhop(
        dir.path(),
        &config(master.port, "password = \"front\"\nbackend_password = \"backpw\""),
    );
    let mut c = Raw::connect(kh.port);
    // The client's password is keyhop's, not the backend's.
    assert_eq!(c.call(&["AUTH", "backpw"]), err(WRONGPASS));
    assert_eq!(c.call(&["AUTH", "front"]), ok());
    assert_eq!(c.call(&["SET", "k", "v"]), ok());
    assert_eq!(c.call(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
    assert_eq!(c.call(&["DBSIZE"]), Reply::Int(1));

    // Without backend_password the server refuses keyhop's requests.
    let dir2 = temp_dir();
    let kh2 = keyhop(dir2.path(), &config(master.port, ""));
    let mut c2 = Raw::connect(kh2.port);
    let r = c2.call(&["GET", "k"]);
    assert!(matches!(&r, Reply::Error(e) if e.contains("NOAUTH")), "{r:?}");

    // A wrong backend_password: errors, never the data.
    let dir3 = temp_dir();
    let kh3 = keyhop(dir3.path(), &config(master.port, "backend_password = \"wrong\""));
    let mut c3 = Raw::connect(kh3.port);
    let r = c3.call(&["GET", "k"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("WRONGPASS") && e.contains("backend_password")),
        "{r:?}"
    );
}
