//! evcxr's `:fmt` and `:types`: how a cell's final value is shown. evcxr keeps them for the
//! final values it prints itself; the runtime library prints most final values
//! (`__DisplayFinalValue`) and reads them from a file the engine writes.

use crate::cell_source::CellSource;
use crate::work_dir::FINAL_VALUE_FORMAT_FILE;
use crate::Engine;

/// evcxr's `:fmt` and `:types`.
#[derive(Clone, PartialEq, Debug)]
pub(crate) struct FinalValueFormat {
    format: String,
    show_type: bool,
}

impl Default for FinalValueFormat {
    fn default() -> Self {
        FinalValueFormat { format: "{:?}".into(), show_type: false }
    }
}

impl Engine {
    /// Follows the cell's `:fmt` and `:types`; returns the format from before, to be put back
    /// if the cell fails (evcxr keeps a cell's commands only when it succeeds).
    pub(crate) fn follow_display_commands(&mut self, source: &CellSource) -> FinalValueFormat {
        let before = self.final_value_format.clone();
        let mut format = before.clone();
        for command in &source.commands {
            match command.name.as_str() {
                ":fmt" => format.format = command.args.clone().unwrap_or_else(|| "{:?}".to_owned()),
                ":types" => format.show_type = !format.show_type,
                _ => {}
            }
        }
        self.use_final_value_format(format);
        before
    }

    /// Passes `format` on to the runtime library, if it is not the one in use.
    pub(crate) fn use_final_value_format(&mut self, format: FinalValueFormat) {
        if format != self.final_value_format {
            let path = self.work_dir.path().join(FINAL_VALUE_FORMAT_FILE);
            let written = if format == FinalValueFormat::default() {
                std::fs::remove_file(&path)
            } else {
                let types = if format.show_type { "types" } else { "" };
                std::fs::write(&path, format!("{types}\n{}", format.format))
            };
            if let Err(error) = written {
                eprintln!("rust-async: could not pass `:fmt`/`:types` on to the runtime library: {error}");
            }
            self.final_value_format = format;
        }
    }
}

/// evcxr answers `:fmt` and `:types` with a line ("Output format: {:#?}", "Types: true"),
/// which it puts before the value of a cell that has code too: only the value is shown then.
pub(crate) fn without_display_notices(source: &CellSource, result: &mut serde_json::Map<String, serde_json::Value>) {
    if source.is_only_commands() {
        return; // commands alone: the notice is the answer
    }
    let Some(serde_json::Value::String(text)) = result.get_mut("text/plain") else { return };
    for command in &source.commands {
        let notice = match command.name.as_str() {
            ":fmt" => "Output format: ",
            ":types" => "Types: ",
            _ => continue,
        };
        if text.starts_with(notice) {
            let rest = text.split_once('\n').map_or("", |(_, rest)| rest);
            *text = rest.to_owned();
        }
    }
    if text.is_empty() {
        result.remove("text/plain");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notice_of_a_display_command_is_left_out_of_a_cells_value() {
        let value = |text: &str| serde_json::Map::from_iter([("text/plain".to_owned(), serde_json::Value::from(text))]);
        let mut result = value("Output format: {:#?}\n[\n    1,\n]");
        without_display_notices(&CellSource::parse(":fmt {:#?}\nvec![1]"), &mut result);
        assert_eq!(result, value("[\n    1,\n]"));
        let mut alone = value("Output format: {:#?}");
        without_display_notices(&CellSource::parse(":fmt {:#?}"), &mut alone);
        assert_eq!(alone, value("Output format: {:#?}"));
        let mut only_notice = value("Types: true");
        without_display_notices(&CellSource::parse(":types\nlet x = 1;"), &mut only_notice);
        assert!(only_notice.is_empty());
    }
}
