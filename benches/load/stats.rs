//! The load benchmark's arithmetic, kept apart from everything that starts processes or reads
//! files so that `tests/load_stats.rs` can check it under `cargo test` (the bench target itself
//! has `harness = false` and is never built by `cargo test`). Every number the report prints goes
//! through here: parsing redis-benchmark's CSV, medians, percentiles, ratios, CPU per request,
//! and the formatting that decides how many digits a reader sees.
//!
//! Two ratios are reported because they answer different questions and differ in practice
//! (e.g. 2.28× vs 2.07× for SET P16 in one run): the median of per-round ratios pairs each
//! target with the other target's run from the same round, so machine noise common to a round
//! cancels; the ratio of medians compares each target's typical throughput over the whole run.

/// One measured run of one workload against one target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Requests (or operations) per second.
    pub rps: f64,
    /// Latency percentiles in milliseconds, when the tool reported them.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// CPU seconds (user + sys) of the charged process per million requests.
    pub cpu_per_m: Option<f64>,
}

/// Parses `redis-benchmark --csv` output: a header row naming the columns, then one row per test.
/// Returns the first data row's req/s and, when the columns exist (redis-benchmark 6.2+), its p50
/// and p99 latency in ms. Lines that are not quoted CSV (warnings, progress) are ignored.
pub fn parse_csv(text: &str) -> Result<(f64, Option<f64>, Option<f64>), String> {
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('"'))
        .map(|l| l.split("\",\"").map(|c| c.trim_matches('"').to_string()).collect())
        .collect();
    let header =
        rows.iter().find(|r| r.first().is_some_and(|c| c == "test")).ok_or("no CSV header")?;
    let col = |name: &str| header.iter().position(|c| c == name);
    let data =
        rows.iter().find(|r| r.first().is_some_and(|c| c != "test")).ok_or("no CSV data row")?;
    let get = |i: Option<usize>| i.and_then(|i| data.get(i)).and_then(|v| v.parse::<f64>().ok());
    let rps_col = col("rps").ok_or("no rps column")?;
    let rps = get(Some(rps_col)).ok_or_else(|| {
        format!("rps column is {:?}, not a number", data.get(rps_col).map_or("", |s| s.as_str()))
    })?;
    Ok((rps, get(col("p50_latency_ms")), get(col("p99_latency_ms"))))
}

/// The median; the mean of the two middle values for an even count; `None` when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// Nearest-rank percentile (`p` in 0..=1) of values already sorted ascending.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

/// Median over the rounds that produced a sample (missing rounds are skipped) of `f(sample)`.
pub fn med_of(s: &[Option<Sample>], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    median(s.iter().flatten().filter_map(f).collect())
}

/// Per-round req/s ratios a/b, for the rounds where both targets have a sample and b's is
/// above zero. `a[i]` and `b[i]` are the same round.
pub fn round_ratios(a: &[Option<Sample>], b: &[Option<Sample>]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter_map(|(x, y)| {
            let (x, y) = (x.as_ref()?, y.as_ref()?);
            (y.rps > 0.0).then(|| x.rps / y.rps)
        })
        .collect()
}

/// Median over rounds of the per-round req/s ratio a/b.
pub fn ratio(a: &[Option<Sample>], b: &[Option<Sample>]) -> Option<f64> {
    median(round_ratios(a, b))
}

/// a's median req/s divided by b's (each over its own rounds); `None` if either has no sample
/// or b's median is zero.
pub fn ratio_of_medians(a: &[Option<Sample>], b: &[Option<Sample>]) -> Option<f64> {
    let (x, y) = (med_of(a, |s| Some(s.rps))?, med_of(b, |s| Some(s.rps))?);
    (y > 0.0).then(|| x / y)
}

/// CPU seconds per million operations from a process's utime+stime clock ticks before and after
/// a run; `None` if either reading is missing, the counter went backwards (the pid was reused)
/// or nothing was done.
pub fn cpu_per_million(before: Option<u64>, after: Option<u64>, tck: f64, ops: u64) -> Option<f64> {
    let ticks = after?.checked_sub(before?)?;
    (ops > 0 && tck > 0.0).then(|| ticks as f64 / tck / ops as f64 * 1e6)
}

/// `v` with `digits` decimals, or "–" when not measured.
pub fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

/// A whole number with thousands separators (1,234,567), or "–".
pub fn fmt_rps(v: Option<f64>) -> String {
    let Some(v) = v else { return "–".into() };
    let s = format!("{:.0}", v);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = sign.to_string();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A ratio with two decimals and a ×, or "–".
pub fn fmt_x(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.2}×"))
}

/// Both ratios in one cell: "median of per-round ratios / ratio of medians", or "–" if neither.
pub fn fmt_ratios(per_round: Option<f64>, of_medians: Option<f64>) -> String {
    if per_round.is_none() && of_medians.is_none() {
        return "–".into();
    }
    format!("{} / {}", fmt_x(per_round), fmt_x(of_medians))
}
