//! The plain-text table printed to stdout (and pasted into
//! docs/benchmarks.md): a header naming versions, machine and settings,
//! then one aligned line per row.

use std::fmt::Write as _;

use crate::report::{Report, Row, Status, Target, Unit};

/// A number with thousands separators and a precision that suits its size.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let digits = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::PerSec => format!("{}/s", number(v)),
        Unit::Ms => format!("{} ms", number(v)),
        Unit::MiB => format!("{} MiB", number(v)),
        Unit::Us => format!("{} µs", number(v)),
    }
}

pub fn target(t: Target, unit: Unit) -> String {
    match t {
        Target::AtLeast(x) => format!(">= {}", value(x, unit)),
        Target::AtMost(x) => format!("<= {}", value(x, unit)),
        Target::RatioAtLeast(x) => format!("ratio >= {x:.2}"),
        Target::RatioAtMost(x) => format!("ratio <= {x:.2}"),
    }
}

/// The cells of one row: scenario, figure, value, baseline, ratio, target.
pub fn cells(row: &Row) -> [String; 6] {
    let val = match (&row.status, row.value) {
        (Status::Measured, Some(v)) => match &row.detail {
            Some(d) => format!("{} ({d})", value(v, row.unit)),
            None => value(v, row.unit),
        },
        (Status::NotYetImplemented, _) => "not yet implemented".into(),
        (Status::Failed(why), _) => format!("failed: {}", why.chars().take(60).collect::<String>()),
        (Status::Skipped(Some(why)), _) => format!("skipped: {}", why.chars().take(60).collect::<String>()),
        _ => "skipped".into(),
    };
    let base = match (row.baseline, row.baseline_value) {
        (Some(name), Some(v)) => format!("{name} {}", value(v, row.unit)),
        (Some(name), None) => format!("{name} -"),
        _ => String::new(),
    };
    let ratio = row.ratio.map(|r| format!("{r:.2}x")).unwrap_or_default();
    let goal = match (row.target, row.met) {
        (Some(t), Some(true)) => format!("{} ok", target(t, row.unit)),
        (Some(t), Some(false)) => format!("{} MISS", target(t, row.unit)),
        (Some(t), None) => target(t, row.unit),
        (None, _) => String::new(),
    };
    [row.scenario.to_owned(), row.figure.to_string(), val, base, ratio, goal]
}

/// Lays rows out in aligned columns under a header line.
pub fn grid(header: [&str; 6], rows: &[[String; 6]]) -> String {
    let mut width = header.map(|h| h.chars().count());
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            let pad = w - c.chars().count();
            // Numbers read best right-aligned; the ratio is the only pure one.
            if i == 4 {
                let _ = write!(s, "{}{c}", " ".repeat(pad));
            } else {
                let _ = write!(s, "{c}{}", " ".repeat(pad));
            }
            if i < 5 {
                s.push_str(" | ");
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(header);
    out.push('\n');
    out.push_str(&width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-|-"));
    out.push('\n');
    for r in rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
        out.push('\n');
    }
    out
}

/// The whole text report.
pub fn render(report: &Report) -> String {
    let v = &report.versions;
    let m = &report.machine;
    let c = &report.config;
    let unknown = || "unknown".to_owned();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fhirstream benchmark  {}  commit {}  nats-server {}  PostgreSQL {}",
        report.started_at,
        v.fhirstream_commit.clone().unwrap_or_else(unknown),
        v.nats_server.clone().unwrap_or_else(unknown),
        v.postgres.clone().unwrap_or_else(unknown),
    );
    let _ = writeln!(
        out,
        "machine: {} cores ({}), {} MiB RAM, load at start {}",
        m.cores,
        m.cpu_model.clone().unwrap_or_else(unknown),
        m.mem_total_mib.map(|x| x.to_string()).unwrap_or_else(unknown),
        m.loadavg_at_start.clone().unwrap_or_else(unknown),
    );
    let _ = writeln!(
        out,
        "load: concurrency {}, P1 {:.0}s (after {:.0}s warm-up), P2 {} clients, P3/raw select {:.0}s over {} \
         resources, P5 {:.0}s at concurrency {}, raw {} events, raw select pool {}",
        c.concurrency,
        c.duration.as_secs_f64(),
        c.warmup.as_secs_f64(),
        c.p2_concurrency,
        c.read_duration.as_secs_f64(),
        c.read_set,
        c.p5_duration.as_secs_f64(),
        c.p5_concurrency,
        c.raw_events,
        c.raw_pg_pool,
    );
    if !c.server_config.is_empty() {
        let _ = writeln!(out, "server: {}", c.server_config);
    }
    out.push('\n');
    let cells: Vec<[String; 6]> = report.rows.iter().map(cells).collect();
    out.push_str(&grid(["scenario", "figure", "value", "baseline", "ratio", "target"], &cells));
    out.push_str("\nratio = value / baseline (throughput: higher is better; latency: lower is better).\n");
    let r = &report.results;
    let cpu = [
        ("P1", r.p1_server.as_ref().map(|s| s.cpu)),
        ("P2", r.p2_cpu),
        ("P3", r.p3_cpu),
        ("raw select", r.raw_select_cpu),
        ("raw pipeline", r.raw_pipeline_cpu),
    ];
    for (phase, usage) in cpu {
        if let Some(u) = usage {
            let _ = writeln!(out, "cores busy during {phase}: {}", u.describe());
        }
    }
    let pg =
        [("P1", r.p1_server.as_ref().and_then(|s| s.postgres)), ("P2", r.p2_pg), ("raw pipeline", r.raw_pipeline_pg)];
    for (phase, rates) in pg {
        if let Some(p) = rates {
            let _ = writeln!(out, "PostgreSQL during {phase}: {}", p.describe());
        }
    }
    let projector =
        [("P1", r.p1_server.as_ref().and_then(|s| s.projector)), ("P2", r.p2_projector), ("P5", r.p5_projector)];
    for (phase, rates) in projector {
        if let Some(p) = rates {
            let _ = writeln!(out, "projector during {phase}: {}", p.describe());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_separators_and_sensible_precision() {
        assert_eq!(number(1234567.4), "1,234,567");
        assert_eq!(number(4000.0), "4,000");
        assert_eq!(number(999.6), "1000");
        assert_eq!(number(123.4), "123");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(-2500.0), "-2,500");
        assert_eq!(number(f64::NAN), "-");
        assert_eq!(number(0.0), "0");
    }

    #[test]
    fn values_and_targets_carry_their_units() {
        assert_eq!(value(4100.0, Unit::PerSec), "4,100/s");
        assert_eq!(value(3.5, Unit::Ms), "3.50 ms");
        assert_eq!(target(Target::AtMost(150.0), Unit::MiB), "<= 150 MiB");
        assert_eq!(target(Target::RatioAtLeast(0.5), Unit::PerSec), "ratio >= 0.50");
    }

    fn row() -> Row {
        Row {
            id: "p1.writes".into(),
            scenario: "P1 CRUD mix",
            figure: "writes/s".into(),
            value: Some(1500.0),
            unit: Unit::PerSec,
            detail: None,
            baseline: Some("raw write pipeline"),
            baseline_value: Some(6000.0),
            ratio: Some(0.25),
            target: Some(Target::RatioAtLeast(0.5)),
            met: Some(false),
            status: Status::Measured,
        }
    }

    #[test]
    fn a_row_shows_value_baseline_ratio_and_verdict() {
        let c = cells(&row());
        assert_eq!(c[2], "1,500/s");
        assert_eq!(c[3], "raw write pipeline 6,000/s");
        assert_eq!(c[4], "0.25x");
        assert_eq!(c[5], "ratio >= 0.50 MISS");
    }

    #[test]
    fn unimplemented_rows_say_so_instead_of_a_number() {
        let mut r = row();
        r.status = Status::NotYetImplemented;
        r.value = None;
        r.ratio = None;
        r.met = None;
        let c = cells(&r);
        assert_eq!(c[2], "not yet implemented");
        assert_eq!(c[4], "");
        assert_eq!(c[5], "ratio >= 0.50");
    }

    #[test]
    fn the_grid_aligns_columns() {
        let rows = vec![cells(&row()), ["a".into(), "b".into(), "c".into(), "".into(), "10.00x".into(), "".into()]];
        let g = grid(["scenario", "figure", "value", "baseline", "ratio", "target"], &rows);
        let lines: Vec<&str> = g.lines().collect();
        assert_eq!(lines.len(), 4);
        let bar = |l: &str| l.match_indices('|').map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(bar(lines[0])[..4], bar(lines[2])[..4]);
        assert_eq!(bar(lines[2])[..4], bar(lines[3])[..4]);
        assert!(lines[3].contains(" 10.00x |") || lines[3].contains("10.00x"));
    }
}
