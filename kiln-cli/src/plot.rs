//! Line charts of training curves (learning rate, losses) against the update number, as PNG or
//! SVG by the output's extension. Panels stack vertically and share the x axis.

use std::path::Path;
use std::sync::Once;

use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;

use kiln::{KilnError, Result};

/// One named curve.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend label.
    pub name: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A curve over the update index: `values[t]` at x = t.
    pub fn over_updates(name: &str, values: impl IntoIterator<Item = f64>) -> Series {
        Series {
            name: name.into(),
            points: values
                .into_iter()
                .enumerate()
                .map(|(t, v)| (t as f64, v))
                .collect(),
        }
    }
}

/// One chart: a title, a y label and its curves.
#[derive(Clone, Debug)]
pub struct Panel {
    /// The chart's title.
    pub title: String,
    /// The y axis label.
    pub y_label: String,
    /// The curves.
    pub series: Vec<Series>,
    /// Logarithmic y axis (for rates and losses spanning decades); needs positive values.
    pub log_y: bool,
}

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const COLORS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
    RGBColor(0, 0, 0),
    RGBColor(255, 215, 0),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in; failing to parse it would be a build defect.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// The image formats a plot is written in, by the file's extension.
enum Format {
    Png,
    Svg,
}

/// The format of a plot written to `path`; an error naming it if it is neither `.png` nor
/// `.svg`. Callers check it before their other output, so a bad name fails first.
pub fn check_plot_path(path: &Path) -> Result<()> {
    format_of(path).map(|_| ())
}

fn format_of(path: &Path) -> Result<Format> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => Ok(Format::Png),
        Some("svg") => Ok(Format::Svg),
        _ => Err(KilnError::file(path, "plot files must end in .png or .svg")),
    }
}

/// Draws `panels` into `path` (`.png` or `.svg`), 1000 px wide, 400 px per panel. The image
/// is drawn in memory and written atomically: a plot that fails leaves an earlier file whole.
pub fn plot(path: &Path, panels: &[Panel]) -> Result<()> {
    let format = format_of(path)?;
    register_font();
    let size = (1000, 400 * panels.len().max(1) as u32);
    let failed = |e: String| KilnError::file(path, format!("drawing the plot: {e}"));
    let bytes = match format {
        Format::Png => {
            let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
                draw(&root, panels)
                    .and_then(|_| root.present().map_err(|e| e.to_string()))
                    .map_err(failed)?;
            }
            let mut png = Vec::new();
            image::codecs::png::PngEncoder::new(&mut png)
                .write_image(&rgb, size.0, size.1, image::ColorType::Rgb8)
                .map_err(|e| failed(e.to_string()))?;
            png
        }
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                draw(&root, panels)
                    .and_then(|_| root.present().map_err(|e| e.to_string()))
                    .map_err(failed)?;
            }
            svg.into_bytes()
        }
    };
    kiln::weights::write_atomic(path, &bytes)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, panels: &[Panel]) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel).map_err(|e| format!("{}: {e}", panel.title))?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), String> {
    let points = panel.series.iter().flat_map(|s| &s.points);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in
        points.filter(|(x, y)| x.is_finite() && y.is_finite() && (!panel.log_y || *y > 0.0))
    {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err("nothing to plot".into());
    }
    // Axis ranges and ticks are computed from the span: values near f64's limits would make
    // it infinite (and the tick search endless). Far beyond any rate or loss worth plotting.
    const LIMIT: f64 = 1e300;
    if [x0, x1, y0, y1].iter().any(|v| v.abs() > LIMIT) {
        return Err(format!(
            "values from {y0:e} to {y1:e} (steps {x0} to {x1}) are too large to plot (limit ±{LIMIT:e})"
        ));
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    // A log axis labels powers of ten: over less than a decade it would show none.
    let log_y = panel.log_y && y1 >= 10.0 * y0;
    if y1 == y0 {
        let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.1 };
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80);
    let style = |s: &Series, i: usize| (s.name.clone(), COLORS[i % COLORS.len()]);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("update")
                // Whole updates: no more labels than there are updates in the span.
                .x_labels(((x1 - x0) as usize).saturating_add(1).clamp(2, 10))
                .x_label_formatter(&|x| format!("{}", x.round() as i64))
                .y_desc(&panel.y_label)
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in panel.series.iter().enumerate() {
                let (name, color) = style(s, i);
                let pts = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(_, y)| y.is_finite() && (!log_y || *y > 0.0));
                // Few points are marked too: a line through one point draws nothing.
                if s.points.len() <= 20 {
                    chart
                        .draw_series(pts.clone().map(|p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| e.to_string())?;
                }
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            if panel.series.len() > 1 {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 14))
                    .draw()
                    .map_err(|e| e.to_string())?;
            }
        }};
    }
    if log_y {
        finish!(
            builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(|e| e.to_string())?
        );
    } else {
        let pad = (y1 - y0) * 0.05;
        finish!(
            builder
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
                .map_err(|e| e.to_string())?
        );
    }
    Ok(())
}
