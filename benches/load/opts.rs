//! The load benchmark's command line: what to run, how often, and where the report goes.

use std::path::PathBuf;

use super::Res;

pub struct Opts {
    pub quick: bool,
    pub rounds: usize,
    pub scale: f64,
    pub threads: Vec<u32>,
    pub metrics: bool,
    pub keyhop: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub only: Vec<String>,
    pub build: bool,
    pub use_keyhop: bool,
    pub use_nutcracker: bool,
    pub idle: usize,
    pub out: Option<PathBuf>,
    pub user_args: Vec<String>,
}

pub const USAGE: &str = "\
usage: cargo bench --bench load [-- OPTIONS]

  --quick            smoke run: 1/10 of the requests, 2 rounds (well under a minute)
  --rounds N         alternating rounds per workload (default 3; 2 with --quick)
  --scale F          multiply every request count by F (after --quick)
  --threads LIST     keyhop worker threads to compare, e.g. 1,2 (default 0 = auto)
  --metrics          also run each keyhop with admin_listen set (per-command metrics on), to
                     measure what recording metrics costs
  --keyhop PATH      keyhop binary to run (also KEYHOP_BIN); skips `cargo build --release`
  --baseline PATH    also run this keyhop binary (e.g. a build from before a change), labelled
                     `baseline`, side by side with keyhop
  --only NAMES       run only these workloads, comma-separated, by their names in the report
                     (e.g. `GET c50,GET c1000`)
  --no-build         don't run `cargo build --release`; use target/release/keyhop as is
  --no-keyhop        leave keyhop out
  --no-nutcracker    leave nutcracker out
  --idle N           idle connections for the memory test (default 10000; 0 skips it)
  --out PATH         report file (default docs/benchmarks.md; `-` = stdout only)
";

pub fn parse_opts() -> Res<Opts> {
    let mut o = Opts {
        quick: false,
        rounds: 0,
        scale: 1.0,
        threads: vec![0],
        metrics: false,
        keyhop: std::env::var_os("KEYHOP_BIN").map(PathBuf::from),
        baseline: None,
        only: Vec::new(),
        build: true,
        use_keyhop: true,
        use_nutcracker: true,
        idle: 10_000,
        out: Some(manifest_dir().join("docs/benchmarks.md")),
        user_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        // `cargo bench` appends `--bench` to a harness=false target's arguments.
        if a == "--bench" {
            continue;
        }
        o.user_args.push(a.clone());
        let mut value = |name: &str| -> Res<String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?;
            o.user_args.push(v.clone());
            Ok(v)
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => {
                o.rounds = value("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?
            }
            "--scale" => {
                o.scale = value("--scale")?.parse().map_err(|e| format!("--scale: {e}"))?
            }
            "--threads" => {
                o.threads = value("--threads")?
                    .split(',')
                    .map(|t| t.trim().parse::<u32>().map_err(|e| format!("--threads {t:?}: {e}")))
                    .collect::<Res<_>>()?;
                if o.threads.is_empty() {
                    return Err("--threads needs at least one count".into());
                }
            }
            "--metrics" => o.metrics = true,
            "--keyhop" => o.keyhop = Some(PathBuf::from(value("--keyhop")?)),
            "--baseline" => o.baseline = Some(PathBuf::from(value("--baseline")?)),
            "--only" => {
                o.only = value("--only")?.split(',').map(|w| w.trim().to_string()).collect()
            }
            "--no-build" => o.build = false,
            "--no-keyhop" => o.use_keyhop = false,
            "--no-nutcracker" => o.use_nutcracker = false,
            "--idle" => o.idle = value("--idle")?.parse().map_err(|e| format!("--idle: {e}"))?,
            "--out" => {
                let v = value("--out")?;
                o.out = if v == "-" { None } else { Some(PathBuf::from(v)) };
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if o.rounds == 0 {
        o.rounds = if o.quick { 2 } else { 3 };
    }
    if o.scale.is_nan() || o.scale <= 0.0 {
        return Err("--scale must be positive".into());
    }
    Ok(o)
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
