//! The overview's charts, as SVG rendered on the server: stacked areas (the
//! fleet's versions over time) and bars (check-ins per minute).
//!
//! No script and no inline style, which the Content-Security-Policy
//! forbids: colours are SVG presentation attributes. Labels come from
//! uploads (package names and versions), so the SVG is built with maud like
//! any other markup and every text is escaped. Each chart carries a text
//! alternative and its numbers in a table, for screen readers and for
//! anyone who wants the exact values.

use maud::{html, Markup};

/// Series colours, distinguishable from each other and readable on white.
pub const PALETTE: [&str; 7] = [
    "#1f5fbf", "#1e7a3c", "#b45309", "#7c3aed", "#0e7490", "#be185d", "#4d7c0f",
];
/// The colour of "everything else".
pub const OTHER: &str = "#9aa3b2";

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// One named line of values, one per point of the x axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// What it counts (escaped when shown).
    pub label: String,
    /// Its values.
    pub values: Vec<u64>,
    /// Its colour (one of ours, never from input).
    pub colour: &'static str,
}

/// The lower and upper edge of each series at each point, stacked in order.
fn bands(series: &[Series], points: usize) -> Vec<Vec<(u64, u64)>> {
    let mut base = vec![0u64; points];
    series
        .iter()
        .map(|s| {
            (0..points)
                .map(|i| {
                    let lower = base[i];
                    let upper = lower.saturating_add(s.values.get(i).copied().unwrap_or(0));
                    base[i] = upper;
                    (lower, upper)
                })
                .collect()
        })
        .collect()
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `max` (at least 1), so the
/// axis reads in round numbers.
fn nice_max(max: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for factor in [1, 2, 5] {
            let candidate = step.saturating_mul(factor);
            if candidate >= max || candidate == u64::MAX {
                return candidate.max(1);
            }
        }
        step = step.saturating_mul(10);
    }
}

fn x_at(i: usize, points: usize) -> f64 {
    let inner = WIDTH - LEFT - RIGHT;
    if points <= 1 {
        LEFT + inner / 2.0
    } else {
        LEFT + inner * i as f64 / (points - 1) as f64
    }
}

fn y_at(value: u64, max: u64) -> f64 {
    let inner = HEIGHT - TOP - BOTTOM;
    TOP + inner - inner * (value as f64 / max.max(1) as f64)
}

/// The polygon of one band: along its upper edge, back along its lower.
fn band_points(band: &[(u64, u64)], max: u64) -> String {
    let points = band.len();
    let upper = band
        .iter()
        .enumerate()
        .map(|(i, (_, upper))| format!("{:.1},{:.1}", x_at(i, points), y_at(*upper, max)));
    let lower = band
        .iter()
        .enumerate()
        .rev()
        .map(|(i, (lower, _))| format!("{:.1},{:.1}", x_at(i, points), y_at(*lower, max)));
    upper.chain(lower).collect::<Vec<_>>().join(" ")
}

/// The y axis: gridlines and labels at 0, half and the top.
fn y_axis(max: u64) -> Markup {
    html! {
        @for value in [0, max / 2, max] {
            line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(format!("{:.1}", y_at(value, max)))
                y2=(format!("{:.1}", y_at(value, max))) stroke="#d8dde6" stroke-width="1" {}
            text x=(LEFT - 6.0) y=(format!("{:.1}", y_at(value, max) + 4.0)) text-anchor="end" { (value) }
        }
    }
}

/// The x axis: labels under the first, middle and last points.
fn x_axis(labels: &[String]) -> Markup {
    let points = labels.len();
    let shown: Vec<usize> = match points {
        0 => vec![],
        1 => vec![0],
        2 => vec![0, 1],
        _ => vec![0, points / 2, points - 1],
    };
    html! {
        @for i in shown {
            @let anchor = if i == 0 { "start" } else if i + 1 == points { "end" } else { "middle" };
            text x=(format!("{:.1}", x_at(i, points))) y=(HEIGHT - 6.0) text-anchor=(anchor) { (labels[i]) }
        }
    }
}

fn legend(series: &[Series]) -> Markup {
    html! {
        div.legend {
            @for s in series {
                span {
                    svg.swatch-svg width="12" height="12" viewBox="0 0 12 12" aria-hidden="true" {
                        rect width="12" height="12" rx="2" fill=(s.colour) {}
                    }
                    " " (s.label)
                }
            }
        }
    }
}

fn numbers(x_name: &str, labels: &[String], series: &[Series]) -> Markup {
    html! {
        details.chart-numbers {
            summary { "The numbers" }
            table {
                thead { tr { th { (x_name) } @for s in series { th.num { (s.label) } } } }
                tbody {
                    @for (i, label) in labels.iter().enumerate() {
                        tr {
                            td { (label) }
                            @for s in series { td.num { (s.values.get(i).copied().unwrap_or(0)) } }
                        }
                    }
                }
            }
        }
    }
}

/// A stacked area chart of `series` over the points named by `labels`.
pub fn stacked_area(summary: &str, x_name: &str, labels: &[String], series: &[Series]) -> Markup {
    let points = labels.len();
    let stacked = bands(series, points);
    let top = stacked.last().map_or(0, |band| {
        band.iter().map(|(_, upper)| *upper).max().unwrap_or(0)
    });
    let max = nice_max(top);
    html! {
        figure.chart-figure {
            svg.chart viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(summary)
                preserveAspectRatio="xMidYMid meet" {
                title { (summary) }
                (y_axis(max))
                @for (s, band) in series.iter().zip(&stacked) {
                    polygon points=(band_points(band, max)) fill=(s.colour) fill-opacity="0.85"
                        stroke=(s.colour) stroke-width="1" {
                        title { (s.label) }
                    }
                }
                (x_axis(labels))
            }
            (legend(series))
            (numbers(x_name, labels, series))
        }
    }
}

/// A bar chart of `values`, one bar per point named by `labels`.
pub fn bars(
    summary: &str,
    x_name: &str,
    labels: &[String],
    values: &[u64],
    colour: &'static str,
) -> Markup {
    let points = labels.len().max(1);
    let max = nice_max(values.iter().copied().max().unwrap_or(0));
    let slot = (WIDTH - LEFT - RIGHT) / points as f64;
    let bar = (slot * 0.8).max(1.0);
    let series = [Series {
        label: summary.to_owned(),
        values: values.to_vec(),
        colour,
    }];
    html! {
        figure.chart-figure {
            svg.chart viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(summary)
                preserveAspectRatio="xMidYMid meet" {
                title { (summary) }
                (y_axis(max))
                @for (i, value) in values.iter().enumerate() {
                    @let y = y_at(*value, max);
                    rect x=(format!("{:.1}", LEFT + slot * i as f64 + (slot - bar) / 2.0))
                        y=(format!("{y:.1}")) width=(format!("{bar:.1}"))
                        height=(format!("{:.1}", (HEIGHT - BOTTOM - y).max(0.0))) fill=(colour) {
                        title { (labels.get(i).map_or("", String::as_str)) ": " (value) }
                    }
                }
                (bar_axis(labels, slot))
            }
            (numbers(x_name, labels, &series))
        }
    }
}

/// Labels under the first, middle and last bars.
fn bar_axis(labels: &[String], slot: f64) -> Markup {
    let points = labels.len();
    let shown: Vec<usize> = if points < 3 {
        (0..points).collect()
    } else {
        vec![0, points / 2, points - 1]
    };
    html! {
        @for i in shown {
            text x=(format!("{:.1}", LEFT + slot * (i as f64 + 0.5))) y=(HEIGHT - 6.0) text-anchor="middle" { (labels[i]) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(label: &str, values: &[u64]) -> Series {
        Series {
            label: label.into(),
            values: values.to_vec(),
            colour: PALETTE[0],
        }
    }

    #[test]
    fn bands_stack_each_series_on_the_ones_before() {
        let stacked = bands(&[series("a", &[1, 2, 3]), series("b", &[4, 0])], 3);
        assert_eq!(stacked[0], vec![(0, 1), (0, 2), (0, 3)]);
        // A short series counts as zero where it has no value.
        assert_eq!(stacked[1], vec![(1, 5), (2, 2), (3, 3)]);
    }

    #[test]
    fn the_axis_tops_out_at_a_round_number() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(1), 1);
        assert_eq!(nice_max(3), 5);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(100_001), 200_000);
        assert_eq!(nice_max(u64::MAX), u64::MAX);
    }

    #[test]
    fn a_band_is_its_upper_edge_then_its_lower_edge_backwards() {
        let points = band_points(&[(0, 10), (5, 10)], 10);
        let pairs: Vec<&str> = points.split(' ').collect();
        assert_eq!(pairs.len(), 4);
        let top = format!("{:.1}", TOP);
        let bottom = format!("{:.1}", HEIGHT - BOTTOM);
        assert!(
            pairs[0].ends_with(&top) && pairs[1].ends_with(&top),
            "{points}"
        );
        assert!(pairs[3].ends_with(&bottom), "{points}");
        assert!(pairs[0].starts_with(&format!("{LEFT:.1},")), "{points}");
    }

    #[test]
    fn labels_from_uploads_are_escaped_and_nothing_is_styled_inline() {
        let labels = vec!["<b>day</b>".to_owned(), "2".to_owned()];
        let markup = stacked_area(
            "versions",
            "Day",
            &labels,
            &[series("<script>alert(1)</script> 1.0", &[1, 2])],
        )
        .into_string();
        assert!(!markup.contains("<script>"), "{markup}");
        assert!(!markup.contains("<b>"), "{markup}");
        assert!(markup.contains("&lt;script&gt;"));
        assert!(!markup.contains("style="), "{markup}");
        let markup = bars("check-ins", "Minute", &labels, &[3, 0], OTHER).into_string();
        assert!(
            !markup.contains("<b>") && !markup.contains("style="),
            "{markup}"
        );
        assert_eq!(markup.matches("<rect").count(), 2);
    }
}
