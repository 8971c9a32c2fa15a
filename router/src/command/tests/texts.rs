//! Subcommand resolution and the error texts for unknown commands and wrong arity.

use super::*;

#[test]
fn resolve_subcommands() {
    let v = a(&["object", "EnCoDiNg", "k"]);
    let object = spec("object");
    assert_eq!(object.resolve(&v).map(|s| s.name), Ok("object|encoding"));
    assert_eq!(object.resolve(&a(&["OBJECT"])).map(|s| s.name), Ok("object"));
    assert_eq!(spec("get").resolve(&a(&["GET", "k"])).map(|s| s.name), Ok("get"));
    assert_eq!(spec("command").resolve(&a(&["COMMAND"])).map(|s| s.name), Ok("command"));
    assert_eq!(
        spec("config").resolve(&a(&["config", "GET", "x"])).map(|s| s.name),
        Ok("config|get")
    );
    assert_eq!(
        spec("client").resolve(&a(&["client", "no-evict", "on"])).map(|s| s.name),
        Ok("client|no-evict")
    );
    // DEBUG has no subcommands in 7.0: its argument is not looked up.
    assert_eq!(spec("debug").resolve(&a(&["DEBUG", "foo"])).map(|s| s.name), Ok("debug"));
    for c in commands() {
        for s in c.subcommands {
            let sub = String::from_utf8_lossy(s.sub_name()).to_ascii_uppercase();
            assert_eq!(c.resolve(&a(&[c.name, &sub])).map(|r| r.name), Ok(s.name));
        }
    }
}

#[test]
fn unknown_subcommand_texts() {
    let err = |args: &[&str]| {
        String::from_utf8(spec(args[0]).resolve(&a(args)).map(|s| s.name).unwrap_err())
            .expect("UTF-8")
    };
    assert_eq!(err(&["object", "foo"]), "ERR unknown subcommand 'foo'. Try OBJECT HELP.");
    // A name that is not UTF-8 comes back unchanged, as Redis echoes it (found by
    // tests/fuzz_differential.rs: it used to be replaced by U+FFFD).
    assert_eq!(
        unknown_subcommand_bytes(spec("xgroup"), b"x\r\ny\xe9\x00z"),
        b"ERR unknown subcommand 'x  y\xe9'. Try XGROUP HELP.".to_vec()
    );
    assert_eq!(err(&["client", "foo"]), "ERR unknown subcommand 'foo'. Try CLIENT HELP.");
    assert_eq!(err(&["xinfo", "foo", "x"]), "ERR unknown subcommand 'foo'. Try XINFO HELP.");
    assert_eq!(err(&["command", "foo"]), "ERR unknown subcommand 'foo'. Try COMMAND HELP.");
    let long = "q".repeat(200);
    assert_eq!(
        err(&["object", &long]),
        format!("ERR unknown subcommand '{}'. Try OBJECT HELP.", "q".repeat(128))
    );
    assert_eq!(err(&["object", "a\r\nb"]), "ERR unknown subcommand 'a  b'. Try OBJECT HELP.");
}

#[test]
fn unknown_command_texts() {
    let e = |args: &[&str]| unknown_command_error(&a(args));
    assert_eq!(
        e(&["foo", "a", "b"]),
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    assert_eq!(e(&["foo"]), "ERR unknown command 'foo', with args beginning with: ");
    assert_eq!(
        e(&["foo", "a\r\nb", ""]),
        "ERR unknown command 'foo', with args beginning with: 'a  b' '' "
    );
    assert_eq!(e(&["fo\no", "a"]), "ERR unknown command 'fo o', with args beginning with: 'a' ");
    let y100 = "y".repeat(100);
    let z100 = "z".repeat(100);
    assert_eq!(
        e(&["foo", &y100, &z100, "c"]),
        format!(
            "ERR unknown command 'foo', with args beginning with: '{y100}' '{}' ",
            "z".repeat(25)
        )
    );
    let y123 = "y".repeat(123);
    assert_eq!(
        e(&["foo", &y123, &z100, "c"]),
        format!("ERR unknown command 'foo', with args beginning with: '{y123}' 'zz' ")
    );
    let x200 = "x".repeat(200);
    assert_eq!(
        e(&["foo", &x200, "b"]),
        format!("ERR unknown command 'foo', with args beginning with: '{}' ", "x".repeat(128))
    );
    assert_eq!(
        e(&[&"N".repeat(200)]),
        format!("ERR unknown command '{}', with args beginning with: ", "N".repeat(128))
    );
    let letters: Vec<String> = ('a'..='z').map(String::from).collect();
    let mut args = vec!["foo"];
    args.extend(letters.iter().map(String::as_str));
    let quoted: String = letters.iter().map(|l| format!("'{l}' ")).collect();
    assert_eq!(e(&args), format!("ERR unknown command 'foo', with args beginning with: {quoted}"));
    // C's `%s` stops at NUL.
    assert_eq!(e(&["foo", "a\0b"]), "ERR unknown command 'foo', with args beginning with: 'a' ");
    // Bytes that are not UTF-8 come back unchanged, as Redis echoes them (found by
    // tests/fuzz_differential.rs: they used to be replaced by U+FFFD).
    let binary: Vec<Vec<u8>> = vec![b"fo\xf0o".to_vec(), b"\xff\xa9x\r\n".to_vec()];
    assert_eq!(
        unknown_command_bytes(&binary),
        b"ERR unknown command 'fo\xf0o', with args beginning with: '\xff\xa9x  ' ".to_vec()
    );
}

#[test]
fn arity_error_texts() {
    assert_eq!(arity_error(spec("get")), "ERR wrong number of arguments for 'get' command");
    assert_eq!(
        arity_error(spec("object|encoding")),
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    assert_eq!(
        arity_error(spec("exec")),
        "EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command"
    );
}
