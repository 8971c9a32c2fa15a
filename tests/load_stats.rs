//! Unit tests of the load benchmark's arithmetic (benches/load/stats.rs). The bench target has
//! `harness = false`, so `cargo test` never builds it; including the module here is what makes
//! the numbers in docs/benchmarks.md checked by the ordinary test run.

#[path = "../benches/load/stats.rs"]
mod stats;

use stats::*;

/// Output of `redis-benchmark -t set -n 1000 --csv` from redis-benchmark 7.0.15 (the column set
/// of 6.2 and later), as captured on the development VM.
const CSV_7_0: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
\"SET\",\"66666.67\",\"0.506\",\"0.144\",\"0.471\",\"0.895\",\"1.407\",\"1.511\"\n";

fn s(rps: f64) -> Option<Sample> {
    Some(Sample { rps, p50: None, p99: None, cpu_per_m: None })
}

#[test]
fn parse_csv_reads_redis_benchmark_7_0_output() {
    assert_eq!(parse_csv(CSV_7_0), Ok((66666.67, Some(0.471), Some(1.407))));
}

#[test]
fn parse_csv_skips_warnings_and_takes_the_first_data_row() {
    // What a proxy that rejects CONFIG GET makes redis-benchmark print first, a CRLF line
    // ending, and a second test's row (`-t set,get -P 16`).
    let text = "WARNING: Could not fetch server CONFIG\r\n\
        \"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\r\n\
        \"SET\",\"503999.97\",\"1.114\",\"0.056\",\"1.287\",\"1.575\",\"1.607\",\"1.607\"\r\n\
        \"GET\",\"168000.00\",\"1.582\",\"0.064\",\"1.671\",\"3.783\",\"3.799\",\"3.807\"\r\n";
    assert_eq!(parse_csv(text), Ok((503999.97, Some(1.287), Some(1.607))));
}

#[test]
fn parse_csv_finds_columns_by_name_and_tolerates_missing_latency_columns() {
    let reordered = "\"test\",\"p99_latency_ms\",\"rps\"\n\"GET\",\"2.5\",\"1000\"\n";
    assert_eq!(parse_csv(reordered), Ok((1000.0, None, Some(2.5))));
    let rps_only = "\"test\",\"rps\"\n\"GET\",\"1234.5\"\n";
    assert_eq!(parse_csv(rps_only), Ok((1234.5, None, None)));
    // A latency cell that is not a number is "not measured", not an error.
    let bad_p50 = "\"test\",\"rps\",\"p50_latency_ms\"\n\"GET\",\"10\",\"n/a\"\n";
    assert_eq!(parse_csv(bad_p50), Ok((10.0, None, None)));
}

#[test]
fn parse_csv_rejects_malformed_input_with_an_error() {
    assert_eq!(parse_csv(""), Err("no CSV header".to_string()));
    // redis-benchmark before 6.2 printed rows without a header.
    assert_eq!(parse_csv("\"SET\",\"66666.67\"\n"), Err("no CSV header".to_string()));
    let header_only = CSV_7_0.lines().next().unwrap_or_default();
    assert_eq!(parse_csv(header_only), Err("no CSV data row".to_string()));
    assert_eq!(
        parse_csv("\"test\",\"avg_latency_ms\"\n\"SET\",\"0.5\"\n"),
        Err("no rps column".to_string())
    );
    assert_eq!(
        parse_csv("\"test\",\"rps\"\n\"SET\",\"fast\"\n"),
        Err("rps column is \"fast\", not a number".to_string())
    );
    // A truncated row (the run was killed mid-line) lacks the rps cell.
    assert_eq!(
        parse_csv("\"test\",\"avg\",\"rps\"\n\"SET\"\n"),
        Err("rps column is \"\", not a number".to_string())
    );
    assert_eq!(parse_csv("ERR unknown command\n"), Err("no CSV header".to_string()));
}

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(median(vec![]), None);
    assert_eq!(median(vec![7.0]), Some(7.0));
    assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(vec![10.0, 0.0]), Some(5.0));
    assert_eq!(median(vec![0.0, 0.0, 0.0]), Some(0.0));
}

#[test]
fn percentile_uses_the_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 0.5), Some(51.0)); // index round(99 × 0.5) = 50
    assert_eq!(percentile(&v, 0.99), Some(99.0)); // index round(98.01) = 98
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert_eq!(percentile(&v, 1.0), Some(100.0));
    assert_eq!(percentile(&[4.0], 0.99), Some(4.0));
    assert_eq!(percentile(&[], 0.5), None);
}

#[test]
fn med_of_skips_missing_rounds_and_missing_fields() {
    let rounds = [
        Some(Sample { rps: 100.0, p50: Some(1.0), p99: None, cpu_per_m: Some(3.0) }),
        None,
        Some(Sample { rps: 300.0, p50: Some(2.0), p99: None, cpu_per_m: None }),
        Some(Sample { rps: 200.0, p50: None, p99: None, cpu_per_m: None }),
    ];
    assert_eq!(med_of(&rounds, |x| Some(x.rps)), Some(200.0));
    assert_eq!(med_of(&rounds, |x| x.p50), Some(1.5));
    assert_eq!(med_of(&rounds, |x| x.p99), None);
    assert_eq!(med_of(&rounds, |x| x.cpu_per_m), Some(3.0));
    assert_eq!(med_of(&[None, None], |x| Some(x.rps)), None);
}

#[test]
fn per_round_ratios_pair_rounds_and_skip_missing_or_zero_denominators() {
    let a = [s(200.0), s(300.0), None, s(50.0), s(10.0)];
    let b = [s(100.0), None, s(100.0), s(0.0), s(20.0)];
    assert_eq!(round_ratios(&a, &b), vec![2.0, 0.5]);
    assert_eq!(ratio(&a, &b), Some(1.25));
    assert_eq!(ratio(&[None], &[s(1.0)]), None);
    assert_eq!(ratio(&[s(0.0)], &[s(5.0)]), Some(0.0));
    assert_eq!(ratio(&[s(5.0)], &[s(0.0)]), None);
}

#[test]
fn median_of_ratios_and_ratio_of_medians_differ_on_noisy_rounds() {
    // Round 2 was slow for both targets (e.g. another build started): per-round ratios cancel
    // that, the medians of each target's own rounds do not.
    let keyhop = [s(1000.0), s(400.0), s(900.0)];
    let nutcracker = [s(500.0), s(100.0), s(500.0)];
    assert_eq!(round_ratios(&keyhop, &nutcracker), vec![2.0, 4.0, 1.8]);
    assert_eq!(ratio(&keyhop, &nutcracker), Some(2.0));
    assert_eq!(ratio_of_medians(&keyhop, &nutcracker), Some(1.8));
    assert_eq!(
        fmt_ratios(ratio(&keyhop, &nutcracker), ratio_of_medians(&keyhop, &nutcracker)),
        "2.00× / 1.80×"
    );
    // The ratio of medians uses every round each target has, even unpaired ones.
    assert_eq!(ratio_of_medians(&[s(300.0), None], &[None, s(100.0)]), Some(3.0));
    assert_eq!(ratio(&[s(300.0), None], &[None, s(100.0)]), None);
    assert_eq!(ratio_of_medians(&[s(1.0)], &[s(0.0)]), None);
    assert_eq!(ratio_of_medians(&[None], &[s(1.0)]), None);
}

#[test]
fn cpu_per_million_from_clock_ticks() {
    // 150 ticks at 100 Hz = 1.5 CPU s over 500,000 requests = 3 s per million.
    assert_eq!(cpu_per_million(Some(1000), Some(1150), 100.0, 500_000), Some(3.0));
    assert_eq!(cpu_per_million(Some(5), Some(5), 100.0, 1000), Some(0.0));
    assert_eq!(cpu_per_million(None, Some(5), 100.0, 1000), None);
    assert_eq!(cpu_per_million(Some(5), None, 100.0, 1000), None);
    assert_eq!(cpu_per_million(Some(9), Some(5), 100.0, 1000), None);
    assert_eq!(cpu_per_million(Some(1), Some(5), 100.0, 0), None);
    assert_eq!(cpu_per_million(Some(1), Some(5), 0.0, 10), None);
}

#[test]
fn formatting_decides_the_digits_shown() {
    assert_eq!(fmt_rps(Some(0.0)), "0");
    assert_eq!(fmt_rps(Some(999.4)), "999");
    assert_eq!(fmt_rps(Some(999.5)), "1,000");
    assert_eq!(fmt_rps(Some(66666.67)), "66,667");
    assert_eq!(fmt_rps(Some(1_234_567.0)), "1,234,567");
    assert_eq!(fmt_rps(Some(-1234.0)), "-1,234");
    assert_eq!(fmt_rps(None), "–");
    assert_eq!(fmt_opt(Some(0.4714), 3), "0.471");
    assert_eq!(fmt_opt(Some(2.0), 2), "2.00");
    assert_eq!(fmt_opt(None, 1), "–");
    assert_eq!(fmt_x(Some(2.275)), "2.27×"); // 2.275 is 2.27499… in binary
    assert_eq!(fmt_x(Some(0.0)), "0.00×");
    assert_eq!(fmt_x(None), "–");
    assert_eq!(fmt_ratios(Some(2.28), None), "2.28× / –");
    assert_eq!(fmt_ratios(None, Some(2.07)), "– / 2.07×");
    assert_eq!(fmt_ratios(None, None), "–");
}
