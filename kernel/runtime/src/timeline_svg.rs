//! The timeline's figure, as SVG (see `timeline.rs` for what it records).
//!
//! Layout: the rows' names on the left; for each row a thin line from its first poll to its
//! last (where it waited) and a bar per poll, coloured by the thread it ran on; a time axis in
//! ms below; then a legend: the threads' colours, where each row was spawned, and what was not
//! kept. Every bar carries a `<title>` (a tooltip where the front end shows one) and `data-`
//! attributes.

use crate::timeline::{RowKind, Timeline};
use std::fmt::Write;

const WIDTH: f64 = 760.0;
const LABELS: f64 = 150.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 28.0;
const ROW: f64 = 24.0;
const BAR: f64 = 14.0;
const AXIS: f64 = 34.0;
const LEGEND_LINE: f64 = 16.0;
/// One colour per thread, told apart also in grey print (light, dark, light...).
const COLOURS: [&str; 8] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"];

pub(crate) fn draw(timeline: &Timeline) -> String {
    let plot = WIDTH - LABELS - RIGHT;
    let length_ms = (timeline.length.as_secs_f64() * 1000.0).max(0.001);
    let step = tick_step(length_ms);
    let x = |ms: f64| LABELS + plot * (ms / length_ms).clamp(0.0, 1.0);
    let legend_lines = 1 + timeline.rows.len() + usize::from(timeline.dropped > 0 || timeline.not_recorded.is_some());
    let axis_top = TOP + ROW * timeline.rows.len() as f64;
    let height = axis_top + AXIS + LEGEND_LINE * legend_lines as f64 + 8.0;

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"rust-async-timeline\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = write!(svg, "<rect width=\"{WIDTH}\" height=\"{height}\" fill=\"white\"/>");
    let _ = write!(
        svg,
        "<text x=\"{LABELS}\" y=\"16\" font-weight=\"bold\">{}</text>",
        escape(&timeline.summary().replacen("timeline: ", "What ran: ", 1))
    );

    for (index, row) in timeline.rows.iter().enumerate() {
        let middle = TOP + ROW * index as f64 + ROW / 2.0;
        let _ = write!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", LABELS - 8.0, middle + 4.0, escape(&row.name));
        let polls: Vec<_> = timeline.polls.iter().filter(|poll| poll.row == index).collect();
        let (Some(first), Some(last)) = (
            polls.iter().map(|poll| poll.start_ms()).reduce(f64::min),
            polls.iter().map(|poll| poll.end_ms()).reduce(f64::max),
        ) else {
            continue;
        };
        // The row's life: waiting shows as the line between its bars.
        let _ = write!(
            svg,
            "<line x1=\"{:.2}\" x2=\"{:.2}\" y1=\"{middle}\" y2=\"{middle}\" stroke=\"#bbbbbb\" stroke-width=\"1\"/>",
            x(first),
            x(last)
        );
        for poll in polls {
            let thread = timeline.threads.get(poll.thread).map_or("?", String::as_str);
            let left = x(poll.start_ms());
            let width = (x(poll.end_ms()) - left).max(1.0);
            let _ = write!(
                svg,
                "<rect class=\"poll\" x=\"{left:.2}\" y=\"{:.2}\" width=\"{width:.2}\" height=\"{BAR}\" fill=\"{}\" \
                 data-row=\"{index}\" data-thread=\"{}\" data-start-ms=\"{:.3}\" data-end-ms=\"{:.3}\">\
                 <title>{}: {:.2}–{:.2} ms on {}</title></rect>",
                middle - BAR / 2.0,
                COLOURS[poll.thread % COLOURS.len()],
                escape(thread),
                poll.start_ms(),
                poll.end_ms(),
                escape(&row.name),
                poll.start_ms(),
                poll.end_ms(),
                escape(thread),
            );
        }
    }

    // The time axis.
    let _ = write!(
        svg,
        "<line x1=\"{LABELS}\" x2=\"{}\" y1=\"{axis_top}\" y2=\"{axis_top}\" stroke=\"#333333\"/>",
        LABELS + plot
    );
    let mut tick = 0.0;
    while tick <= length_ms + step * 1e-9 {
        let at = x(tick);
        let _ = write!(
            svg,
            "<line x1=\"{at:.2}\" x2=\"{at:.2}\" y1=\"{axis_top}\" y2=\"{}\" stroke=\"#333333\"/>\
             <text x=\"{at:.2}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333333\">{}</text>",
            axis_top + 4.0,
            axis_top + 16.0,
            tick_label(tick, step)
        );
        tick += step;
    }
    let _ = write!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#333333\">ms</text>", LABELS - 8.0, axis_top + 16.0);

    // The legend: threads, then where each row comes from.
    let mut line_y = axis_top + AXIS;
    let mut legend_x = LABELS;
    let _ = write!(svg, "<text x=\"{}\" y=\"{line_y}\" text-anchor=\"end\">threads</text>", LABELS - 8.0);
    for (index, thread) in timeline.threads.iter().enumerate() {
        let _ = write!(
            svg,
            "<rect x=\"{legend_x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{line_y}\">{}</text>",
            line_y - 9.0,
            COLOURS[index % COLOURS.len()],
            legend_x + 14.0,
            escape(thread)
        );
        legend_x += 24.0 + 7.0 * thread.len() as f64;
    }
    for row in &timeline.rows {
        line_y += LEGEND_LINE;
        let what = match row.kind {
            RowKind::Recorded => "recorded",
            RowKind::Task => "spawned",
            RowKind::Blocking => "started",
        };
        let text = match row.spawned_at.as_str() {
            "" => row.name.clone(),
            place => format!("{} {what} at {place}", row.name),
        };
        let _ = write!(svg, "<text x=\"{LABELS}\" y=\"{line_y}\" fill=\"#333333\">{}</text>", escape(&text));
    }
    if let Some(why) = &timeline.not_recorded {
        line_y += LEGEND_LINE;
        let _ = write!(svg, "<text x=\"{LABELS}\" y=\"{line_y}\" fill=\"#a00000\">not recorded: {}</text>", escape(why));
    } else if timeline.dropped > 0 {
        line_y += LEGEND_LINE;
        let _ = write!(
            svg,
            "<text x=\"{LABELS}\" y=\"{line_y}\" fill=\"#a00000\">{} more polls were counted but not drawn (the first {} are)</text>",
            timeline.dropped,
            crate::timeline::MAX_POLLS
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A round step for about 5-10 ticks over `length` ms: 1, 2 or 5 times a power of ten.
fn tick_step(length: f64) -> f64 {
    let rough = length / 6.0;
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|factor| factor * power).find(|step| *step >= rough).unwrap_or(10.0 * power)
}

fn tick_label(tick: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{tick:.0}")
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{tick:.decimals$}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
