//! Results of the end-to-end benchmark: samples, medians and spread over
//! rounds, the markdown table and the PNG plot.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;

use super::load::WrkResult;

/// One measured configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    /// Number of services programmed.
    pub services: usize,
    /// Where the load generator runs: `external` (client namespace) or
    /// `node-local` (node namespace).
    pub client: &'static str,
    /// `direct`, `ebpf-tc`, `ebpf-sock`, `iptables`, `nftables`.
    pub dataplane: &'static str,
    /// `pod-ip`, `clusterip`, `nodeport`.
    pub target: &'static str,
    /// `keep-alive` or `new-conn` (one connection per request).
    pub mode: &'static str,
}

/// Medians over rounds of one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The cell.
    pub cell: Cell,
    /// Rounds measured.
    pub rounds: usize,
    /// Median p50 latency (µs).
    pub p50_us: f64,
    /// Median p99 latency (µs).
    pub p99_us: f64,
    /// Median requests/s.
    pub rps: f64,
    /// (max − min) / median of requests/s.
    pub rps_spread: f64,
    /// (max − min) / median of p99.
    pub p99_spread: f64,
    /// Requests over all rounds.
    pub requests: u64,
    /// Errors over all rounds.
    pub errors: u64,
}

/// Median of `v` (mean of the middle two for even lengths); 0 when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn spread(v: &[f64]) -> f64 {
    let med = median(v);
    if med == 0.0 {
        return 0.0;
    }
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / med
}

/// Medians per cell, in cell order.
pub fn summarize(samples: &[(Cell, WrkResult)]) -> Vec<Summary> {
    let mut by: BTreeMap<&Cell, Vec<&WrkResult>> = BTreeMap::new();
    for (c, r) in samples {
        by.entry(c).or_default().push(r);
    }
    by.into_iter()
        .map(|(cell, rs)| {
            let col = |f: fn(&WrkResult) -> f64| rs.iter().map(|r| f(r)).collect::<Vec<_>>();
            Summary {
                cell: cell.clone(),
                rounds: rs.len(),
                p50_us: median(&col(|r| r.p50_us)),
                p99_us: median(&col(|r| r.p99_us)),
                rps: median(&col(|r| r.rps)),
                rps_spread: spread(&col(|r| r.rps)),
                p99_spread: spread(&col(|r| r.p99_us)),
                requests: rs.iter().map(|r| r.requests).sum(),
                errors: rs.iter().map(|r| r.errors).sum(),
            }
        })
        .collect()
}

/// The markdown table of `summaries` (plus ratios to the direct row of the
/// same services count, client and mode), and of the iperf3 medians.
pub fn markdown(
    summaries: &[Summary],
    iperf: &[(usize, &'static str, &'static str, Vec<f64>)],
) -> String {
    let mut s = String::new();
    s.push_str("| services | client | dataplane | target | connections | p50 µs | p99 µs | req/s | p99 / direct | req/s / direct | spread req/s | spread p99 | rounds | errors |\n");
    s.push_str("|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for x in summaries {
        let direct = summaries.iter().find(|d| {
            d.cell.dataplane == "direct"
                && d.cell.services == x.cell.services
                && d.cell.client == x.cell.client
                && d.cell.mode == x.cell.mode
        });
        let (rp99, rrps) = match direct {
            Some(d) if d.p99_us > 0.0 && d.rps > 0.0 => (
                format!("{:.2}x", x.p99_us / d.p99_us),
                format!("{:.2}x", x.rps / d.rps),
            ),
            _ => ("—".into(), "—".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0}% | {:.0}% | {} | {} |",
            x.cell.services,
            x.cell.client,
            x.cell.dataplane,
            x.cell.target,
            x.cell.mode,
            x.p50_us,
            x.p99_us,
            x.rps,
            rp99,
            rrps,
            x.rps_spread * 100.0,
            x.p99_spread * 100.0,
            x.rounds,
            x.errors
        );
    }
    if !iperf.is_empty() {
        s.push_str("\n| services | client | dataplane | iperf3 Gbit/s (median) | spread | rounds |\n|---:|---|---|---:|---:|---:|\n");
        for (n, client, dp, v) in iperf {
            let _ = writeln!(
                s,
                "| {n} | {client} | {dp} | {:.2} | {:.0}% | {} |",
                median(v),
                spread(v) * 100.0,
                v.len()
            );
        }
    }
    s
}

/// Makes the font the plot's text uses available to plotters (read from
/// `path`, e.g. DejaVuSans from `fonts-dejavu-core`).
///
/// # Errors
///
/// The file cannot be read or is not a font.
pub fn register_font(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{}: not a usable font", path.display()))
}

/// The plot's series: (client, dataplane, target, label, colour, dashed).
const SERIES: [(&str, &str, &str, &str, RGBColor); 8] = [
    (
        "external",
        "direct",
        "pod-ip",
        "external: direct pod IP",
        RGBColor(0, 0, 0),
    ),
    (
        "external",
        "ebpf-tc",
        "clusterip",
        "external: eBPF tc, ClusterIP",
        RGBColor(0, 114, 178),
    ),
    (
        "external",
        "iptables",
        "clusterip",
        "external: iptables, ClusterIP",
        RGBColor(213, 94, 0),
    ),
    (
        "external",
        "nftables",
        "clusterip",
        "external: nftables, ClusterIP",
        RGBColor(0, 158, 115),
    ),
    (
        "node-local",
        "direct",
        "pod-ip",
        "node-local: direct pod IP",
        RGBColor(128, 128, 128),
    ),
    (
        "node-local",
        "ebpf-sock",
        "clusterip",
        "node-local: eBPF socket LB",
        RGBColor(86, 180, 233),
    ),
    (
        "node-local",
        "iptables",
        "clusterip",
        "node-local: iptables",
        RGBColor(230, 159, 0),
    ),
    (
        "node-local",
        "nftables",
        "clusterip",
        "node-local: nftables",
        RGBColor(204, 121, 167),
    ),
];

/// Draws a 2 × 2 grid (rows: keep-alive, new connection per request;
/// columns: p99 latency, requests/s) over the services counts into `path`.
///
/// # Errors
///
/// Drawing or writing the PNG fails.
pub fn plot(
    summaries: &[Summary],
    path: &Path,
    title: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (1600, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(50);
    top.titled(title, ("sans-serif", 26))?;
    let panels = body.split_evenly((2, 2));
    let mut counts: Vec<usize> = summaries.iter().map(|s| s.cell.services).collect();
    counts.sort_unstable();
    counts.dedup();
    let x_max = counts.len().max(1);
    for (i, panel) in panels.iter().enumerate() {
        let mode = if i < 2 { "keep-alive" } else { "new-conn" };
        let latency = i % 2 == 0;
        let value = |s: &Summary| {
            if latency {
                s.p99_us / 1000.0
            } else {
                s.rps / 1000.0
            }
        };
        let y_max = summaries
            .iter()
            .filter(|s| s.cell.mode == mode)
            .map(value)
            .fold(0.0f64, f64::max)
            * 1.15
            + 1e-9;
        let caption = format!(
            "{} — {}",
            if latency {
                "p99 latency (ms)"
            } else {
                "requests/s (thousands)"
            },
            if mode == "keep-alive" {
                "keep-alive connections"
            } else {
                "one connection per request"
            }
        );
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.3f64..(x_max as f64 - 0.7), 0.0..y_max)?;
        let labels = counts.clone();
        chart
            .configure_mesh()
            .x_labels(x_max)
            .x_label_formatter(&|x| {
                let k = x.round();
                if (x - k).abs() < 0.01 && k >= 0.0 && (k as usize) < labels.len() {
                    format!("{} services", labels[k as usize])
                } else {
                    String::new()
                }
            })
            .y_desc(if latency { "ms" } else { "k req/s" })
            .label_style(("sans-serif", 15))
            .draw()?;
        for (client, dp, target, label, color) in SERIES {
            let pts: Vec<(f64, f64)> = counts
                .iter()
                .enumerate()
                .filter_map(|(k, n)| {
                    summaries
                        .iter()
                        .find(|s| {
                            s.cell.services == *n
                                && s.cell.client == client
                                && s.cell.dataplane == dp
                                && s.cell.target == target
                                && s.cell.mode == mode
                        })
                        .map(|s| (k as f64, value(s)))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let style =
                ShapeStyle::from(&color).stroke_width(if client == "external" { 3 } else { 2 });
            chart
                .draw_series(LineSeries::new(pts.clone(), style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(dp: &'static str) -> Cell {
        Cell {
            services: 10,
            client: "external",
            dataplane: dp,
            target: "clusterip",
            mode: "keep-alive",
        }
    }

    fn r(rps: f64, p99: f64) -> WrkResult {
        WrkResult {
            requests: 10,
            rps,
            p50_us: 1.0,
            p99_us: p99,
            errors: 0,
        }
    }

    #[test]
    fn medians_spread_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let samples = vec![
            (cell("direct"), r(100.0, 10.0)),
            (cell("direct"), r(120.0, 10.0)),
            (cell("direct"), r(110.0, 10.0)),
            (cell("iptables"), r(55.0, 20.0)),
        ];
        let s = summarize(&samples);
        assert_eq!(s.len(), 2);
        let d = s.iter().find(|x| x.cell.dataplane == "direct").unwrap();
        assert_eq!(d.rps, 110.0);
        assert!((d.rps_spread - 20.0 / 110.0).abs() < 1e-12);
        let md = markdown(&s, &[]);
        assert!(md.contains("| 10 | external | iptables | clusterip | keep-alive | 1 | 20 | 55 | 2.00x | 0.50x |"), "{md}");
    }
}
