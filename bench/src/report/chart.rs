//! The PNG chart: throughput on the left, latency on the right, fhirstream's
//! figures in blue beside the raw baselines in grey. Text is drawn with the
//! DejaVu Sans committed under `bench/assets/` (plotters' `ab_glyph`
//! feature), so no system font or fontconfig is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, SegmentValue, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::Results;
use crate::report::table::number;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const SERVER: RGBColor = RGBColor(31, 119, 180);
const RAW: RGBColor = RGBColor(150, 150, 150);

/// One bar: a value, an optional whisker end (p99) and who it belongs to.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: &'static str,
    pub value: f64,
    pub whisker: Option<f64>,
    pub raw: bool,
}

fn bar(label: &'static str, value: Option<f64>, whisker: Option<f64>, raw: bool) -> Option<Bar> {
    value.filter(|v| *v > 0.0).map(|value| Bar { label, value, whisker, raw })
}

/// The throughput and latency bars of a run (measured figures only).
pub fn bars(r: &Results) -> (Vec<Bar>, Vec<Bar>) {
    let p1 = r.p1.as_ref();
    let throughput = [
        bar("P1 operations", p1.and_then(|p| p.ops_per_sec), None, false),
        bar("P1 writes", p1.and_then(|p| p.writes_per_sec), None, false),
        bar("P2 import resources", r.p2.as_ref().and_then(|p| p.resources_per_sec), None, false),
        bar("raw write pipeline", r.raw_pipeline.as_ref().and_then(|p| p.events_per_sec), None, true),
        bar("raw publish+ack", r.raw_publish.as_ref().and_then(|p| p.events_per_sec), None, true),
        bar("raw COPY rows", r.raw_copy.as_ref().and_then(|c| c.rows_per_sec), None, true),
        bar("P3 reads", r.p3.as_ref().and_then(|p| p.reads_per_sec), None, false),
        bar("raw PK select", r.raw_select.as_ref().and_then(|p| p.reads_per_sec), None, true),
    ];
    let lat = |s: Option<&crate::stats::Summary>| {
        let s = s.filter(|s| s.count > 0);
        (s.map(|s| s.p50_ms), s.map(|s| s.p99_ms))
    };
    let items = [
        ("P1 create", lat(p1.map(|p| &p.create)), false),
        ("P1 read", lat(p1.map(|p| &p.read)), false),
        ("P1 update", lat(p1.map(|p| &p.update)), false),
        ("P1 delete", lat(p1.map(|p| &p.delete)), false),
        ("P3 read", lat(r.p3.as_ref().map(|p| &p.latency)), false),
        ("P5 read-your-writes", lat(r.p5.as_ref().map(|p| &p.read_your_writes)), false),
        ("P5 eventual", lat(r.p5.as_ref().map(|p| &p.eventual)), false),
        ("raw publish+ack", lat(r.raw_publish.as_ref().map(|p| &p.latency)), true),
        ("raw PK select", lat(r.raw_select.as_ref().map(|p| &p.latency)), true),
    ];
    let latency = items.into_iter().filter_map(|(l, (p50, p99), raw)| bar(l, p50, p99, raw)).collect();
    (throughput.into_iter().flatten().collect(), latency)
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            eprintln!("warning: the chart font could not be loaded; the chart will lack text");
        }
    });
}

/// Draws the chart to `path` (PNG).
pub fn draw(path: &Path, title: &str, r: &Results) -> anyhow::Result<()> {
    register_font();
    let (throughput, latency) = bars(r);
    let root = BitMapBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| anyhow!("{e:?}"))?;
    let (left, right) = root.split_horizontally(700);
    let max = throughput.iter().map(|b| b.value).fold(1.0, f64::max) * 1.3;
    let n = throughput.len().max(1);
    let mut chart = panel(&left, "per second (blue: fhirstream, grey: raw baseline)")
        .build_cartesian_2d(0f64..max, (0..n - 1).into_segmented())
        .map_err(|e| anyhow!("{e:?}"))?;
    fill(&mut chart, &throughput, 0.0)?;
    let lo = latency.iter().map(|b| b.value).fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
    let hi = latency.iter().map(|b| b.whisker.unwrap_or(b.value)).fold(1.0, f64::max) * 3.0;
    let n = latency.len().max(1);
    let mut chart = panel(&right, "latency ms, log scale (bar p50, line to p99)")
        .build_cartesian_2d((lo.max(0.001)..hi).log_scale(), (0..n - 1).into_segmented())
        .map_err(|e| anyhow!("{e:?}"))?;
    fill(&mut chart, &latency, lo.max(0.001))?;
    root.present().map_err(|e| anyhow!("write {}: {e:?}", path.display()))?;
    Ok(())
}

fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    caption: &str,
) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut b = ChartBuilder::on(area);
    b.caption(caption, ("sans-serif", 15)).margin(12).x_label_area_size(28).y_label_area_size(170);
    b
}

type BarChart<'a, 'b, X> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<X, plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize>>,
>;

/// Draws `bars` top to bottom, starting each at `origin`, with value labels.
fn fill<X: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    chart: &mut BarChart<'_, '_, X>,
    bars: &[Bar],
    origin: f64,
) -> anyhow::Result<()> {
    let n = bars.len();
    let labels: Vec<&str> = bars.iter().rev().map(|b| b.label).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n.max(1))
        .x_labels(8)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).map(|s| (*s).to_owned()).unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|v| number(*v))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    let label = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, b) in bars.iter().enumerate() {
        let slot = n - 1 - i;
        let color = if b.raw { RAW } else { SERVER };
        let mut rect = Rectangle::new(
            [(origin, SegmentValue::Exact(slot)), (b.value, SegmentValue::Exact(slot + 1))],
            color.filled(),
        );
        rect.set_margin(5, 5, 0, 0);
        chart.draw_series(std::iter::once(rect)).map_err(|e| anyhow!("{e:?}"))?;
        let end = b.whisker.filter(|w| *w > b.value).unwrap_or(b.value);
        if end > b.value {
            let path = PathElement::new(
                vec![(b.value, SegmentValue::CenterOf(slot)), (end, SegmentValue::CenterOf(slot))],
                BLACK.stroke_width(2),
            );
            chart.draw_series(std::iter::once(path)).map_err(|e| anyhow!("{e:?}"))?;
        }
        let text = match b.whisker {
            Some(w) => format!(" {} / {}", number(b.value), number(w)),
            None => format!(" {}", number(b.value)),
        };
        chart
            .draw_series(std::iter::once(Text::new(text, (end, SegmentValue::CenterOf(slot)), label.clone())))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::publish::PublishResult;
    use crate::scenarios::Errors;
    use crate::scenarios::read::ReadResult;
    use crate::stats::Latencies;

    fn latencies(ms: &[u64]) -> crate::stats::Summary {
        let mut l = Latencies::new();
        for m in ms {
            l.record(std::time::Duration::from_millis(*m));
        }
        l.summary()
    }

    fn results() -> Results {
        Results {
            p3: Some(ReadResult {
                seconds: 1.0,
                concurrency: 4,
                set_size: 9,
                reads: 3,
                reads_per_sec: Some(2500.0),
                latency: latencies(&[1, 2, 9]),
                errors: Errors::default(),
            }),
            raw_publish: Some(PublishResult {
                seconds: 1.0,
                concurrency: 4,
                events: 27,
                bytes: 27_000,
                events_per_sec: Some(9000.0),
                latency: latencies(&[1, 1, 3]),
                errors: 0,
                error_samples: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_measured_figures_become_bars() {
        let (throughput, latency) = bars(&results());
        let names: Vec<_> = throughput.iter().map(|b| b.label).collect();
        assert_eq!(names, ["raw publish+ack", "P3 reads"]);
        assert_eq!(latency.len(), 2);
        assert!(latency.iter().all(|b| b.whisker.is_some()));
    }

    #[test]
    fn the_chart_draws_with_the_embedded_font_alone() {
        let path = std::env::temp_dir().join(format!("fhirstream-bench-chart-{}.png", std::process::id()));
        draw(&path, "test chart", &results()).unwrap();
        let png = std::fs::read(&path).unwrap();
        if std::env::var_os("KEEP_CHART").is_none() {
            let _ = std::fs::remove_file(&path);
        }
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        assert!(png.len() > 5_000, "suspiciously small: {} bytes", png.len());
    }
}
