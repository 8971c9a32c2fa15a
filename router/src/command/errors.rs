//! Redis's own error texts for commands keyhop refuses before any server sees them (unknown
//! command or subcommand, wrong arity), built byte for byte as Redis 7.0 builds them so a client
//! cannot tell keyhop's refusal from the server's.

use super::{Args, CommandSpec};

/// Redis's reply to an unknown command (without the leading `-` and trailing CRLF).
///
/// As `processCommand` in 7.0: the name is cut at 128 bytes; arguments are quoted while the
/// quoted list is shorter than 128 bytes, each cut to what is left of those 128; CR and LF become
/// spaces. Bytes that are not UTF-8 are replaced; [`unknown_command_bytes`] keeps them.
pub fn unknown_command_error<A: Args + ?Sized>(args: &A) -> String {
    String::from_utf8_lossy(&unknown_command_bytes(args)).into_owned()
}

/// [`unknown_command_error`] as bytes, which is what clients get: Redis echoes arguments that are
/// not UTF-8 unchanged.
pub fn unknown_command_bytes<A: Args + ?Sized>(args: &A) -> Vec<u8> {
    let name: &[u8] = if args.count() > 0 { args.arg(0) } else { b"" };
    let mut quoted: Vec<u8> = Vec::new();
    let mut i = 1;
    while i < args.count() && quoted.len() < 128 {
        quoted.push(b'\'');
        quoted.extend_from_slice(c_prefix(args.arg(i), 128 - quoted.len() + 1));
        quoted.extend_from_slice(b"' ");
        i += 1;
    }
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(c_prefix(name, 128));
    msg.extend_from_slice(b"', with args beginning with: ");
    msg.extend_from_slice(&quoted);
    reply_bytes(msg)
}

/// Redis's reply to an unknown subcommand of `container`, e.g.
/// `ERR unknown subcommand 'foo'. Try OBJECT HELP.`, as bytes: Redis echoes a name that is not
/// UTF-8 unchanged.
pub fn unknown_subcommand_bytes(container: &CommandSpec, sub: &[u8]) -> Vec<u8> {
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend_from_slice(c_prefix(sub, 128));
    msg.extend_from_slice(b"'. Try ");
    msg.extend(container.name.bytes().map(|b| b.to_ascii_uppercase()));
    msg.extend_from_slice(b" HELP.");
    reply_bytes(msg)
}

/// At most `max` bytes of `s`, stopping at a NUL as C's `%.*s` does.
pub(super) fn c_prefix(s: &[u8], max: usize) -> &[u8] {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len()).min(max);
    &s[..end]
}

/// An error reply's bytes: CR/LF to spaces (as Redis does, to keep the protocol intact).
fn reply_bytes(mut msg: Vec<u8>) -> Vec<u8> {
    for b in msg.iter_mut() {
        if *b == b'\r' || *b == b'\n' {
            *b = b' ';
        }
    }
    msg
}

/// An error reply as text: CR/LF to spaces, bytes that are not UTF-8 replaced.
pub(super) fn reply_text(msg: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply_bytes(msg)).into_owned()
}

/// Redis's reply to a wrong number of arguments (without `-` and CRLF).
///
/// EXEC is the exception Redis makes: any refusal of EXEC aborts the transaction, with
/// `EXECABORT Transaction discarded because of: ` before the message (its `ERR ` dropped).
pub fn arity_error(spec: &CommandSpec) -> String {
    if spec.name == "exec" {
        return "EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' \
                command"
            .to_string();
    }
    format!("ERR wrong number of arguments for '{}' command", spec.name)
}
