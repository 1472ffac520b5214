//! Charts for the HTML report and the board, drawn by `plotters` into inline SVG: no script, no
//! network, readable without JavaScript and printable.

use plotters::prelude::*;

const WIDTH: u32 = 720;
const HEIGHT: u32 = 240;
const AXIS: RGBColor = RGBColor(90, 90, 90);
const DIVERGED: RGBColor = RGBColor(200, 50, 50);
const LINE: RGBColor = RGBColor(40, 100, 180);

/// Bars of divergent rows per bucket (an hour or a window value), labelled below.
pub fn bars(labels: &[String], values: &[u64], y_label: &str) -> String {
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let top = values.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
        let n = values.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)?;
        let step = n.div_ceil(12);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(12))
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if i.is_multiple_of(step) {
                    labels.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_label)
            .axis_style(AXIS)
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            Rectangle::new(
                [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, *v as f64)],
                DIVERGED.filled(),
            )
        }))?;
        root.present()?;
        Ok(())
    })();
    if drawn.is_err() {
        return String::new();
    }
    svg
}

/// A line of the divergence ratio over the nights, with a point per night.
pub fn ratio_line(labels: &[String], ratios: &[f64]) -> String {
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let top = ratios.iter().copied().fold(0.0f64, f64::max).max(1e-6) * 1.2;
        let n = ratios.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..(n as f64 - 0.5).max(0.5), 0f64..top)?;
        let step = n.div_ceil(8);
        chart
            .configure_mesh()
            .x_labels(n.min(8))
            .x_label_formatter(&|x| {
                let i = x.round() as usize;
                if (x - x.round()).abs() < 1e-9 && i.is_multiple_of(step) {
                    labels.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.4}"))
            .y_desc("divergence ratio")
            .axis_style(AXIS)
            .draw()?;
        let points: Vec<(f64, f64)> = ratios
            .iter()
            .enumerate()
            .map(|(i, r)| (i as f64, *r))
            .collect();
        chart.draw_series(LineSeries::new(points.clone(), LINE.stroke_width(2)))?;
        chart.draw_series(
            points
                .iter()
                .map(|(x, y)| Circle::new((*x, *y), 3, LINE.filled())),
        )?;
        root.present()?;
        Ok(())
    })();
    if drawn.is_err() {
        return String::new();
    }
    svg
}
