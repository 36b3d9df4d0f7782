//! Learning curves as SVG (plotters' SVG backend: no font files or system libraries needed).

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result, write_atomic};

/// One line of a plot: a label and `(epoch, value)` points.
pub struct Series {
    /// Legend text of the line.
    pub label: String,
    /// `(epoch, value)` points in drawing order.
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Writes an accuracy-per-epoch plot atomically.
pub fn write_curves(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        draw(&root, title, series)
            .map_err(|e| Error::file(path, format!("plotting failed: {e}")))?;
        root.present()
            .map_err(|e| Error::file(path, format!("plotting failed: {e}")))?;
    }
    write_atomic(path, svg.as_bytes())
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, 1.0f64, 0.0f64);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if y_min > y_max {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.1).max(0.01);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(
            0.0..x_max + 0.5,
            (y_min - pad).max(0.0)..(y_max + pad).min(1.0),
        )?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("accuracy")
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
