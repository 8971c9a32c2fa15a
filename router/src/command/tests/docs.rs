//! docs/commands.md lists every command with its policy.

use super::*;

fn policy_text(p: Policy) -> String {
    match p {
        Policy::Forward => "forward".into(),
        Policy::AnyGroup => "any group".into(),
        Policy::ByChannel => "by channel".into(),
        Policy::Split(m) => format!("split, merge {m:?}"),
        Policy::AllGroups(m) => format!("all groups, merge {m:?}"),
        Policy::Local(l) => format!("local ({l:?})"),
        Policy::Refused => "refused".into(),
        Policy::NeedsPinning => "pinned".into(),
        Policy::Admin(AdminFanout::Masters) => "admin, all masters".into(),
        Policy::Admin(AdminFanout::MastersAndReplicas) => "admin, all masters and replicas".into(),
        Policy::Admin(AdminFanout::Kill) => "admin, all masters, any kill".into(),
        Policy::Admin(AdminFanout::Debug) => "admin, key's group or all masters".into(),
        Policy::SingleGroup => "single group only".into(),
    }
}

/// The generated part of docs/commands.md: one row per command and subcommand.
fn render_table() -> String {
    let mut out = String::new();
    out.push_str("| Command | Arity | Policy | Notes |\n| --- | --- | --- | --- |\n");
    for s in all_specs() {
        let mut notes = Vec::new();
        if s.flags & flags::MOVABLEKEYS != 0 {
            notes.push("movable keys".to_string());
        }
        if s.keys_proc == KeysProc::Xread {
            notes.push("pinned with BLOCK".to_string());
        }
        if s.flags & flags::BLOCKING != 0 && s.keys_proc != KeysProc::Xread {
            notes.push("blocking".to_string());
        }
        if s.flags & flags::WRITE != 0 {
            notes.push("write".to_string());
        }
        let name = s.name.replace('|', " ").to_ascii_uppercase();
        out.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            s.arity,
            policy_text(s.policy),
            notes.join(", ")
        ));
    }
    out
}

#[test]
fn docs_list_every_command() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/commands.md");
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let marker = "<!-- generated table: KEYHOP_BLESS=1 cargo test -p keyhop-router docs_ -->\n";
    let table = render_table();
    if std::env::var_os("KEYHOP_BLESS").is_some() {
        let head = doc.split(marker).next().unwrap_or_default().to_string();
        std::fs::write(path, format!("{head}{marker}{table}")).expect("write docs/commands.md");
        return;
    }
    let Some((_, generated)) = doc.split_once(marker) else {
        panic!("docs/commands.md lacks the generated-table marker; run KEYHOP_BLESS=1")
    };
    assert_eq!(
        generated, table,
        "docs/commands.md is stale: KEYHOP_BLESS=1 cargo test -p keyhop-router docs_"
    );
}
