//! The inputs executed in this session, for `history_request` (tail, range and search).

/// One executed input: its execution count, its code, and its result as text (if any).
pub type Entry = (usize, String, Option<String>);

pub struct History {
    /// In execution order.
    entries: Vec<Entry>,
}

/// Session number reported for this session's entries (Jupyter counts sessions from 1).
pub const SESSION: usize = 1;

impl History {
    pub fn new() -> History {
        History { entries: Vec::new() }
    }

    pub fn record(&mut self, count: usize, code: &str) {
        self.entries.push((count, code.to_owned(), None));
    }

    /// Remembers the text result of the execution `count`.
    pub fn record_output(&mut self, count: usize, output: String) {
        if let Some(entry) = self.entries.iter_mut().rev().find(|entry| entry.0 == count) {
            entry.2 = Some(output);
        }
    }

    pub fn tail(&self, n: usize) -> Vec<Entry> {
        let start = self.entries.len().saturating_sub(n);
        self.entries[start..].to_vec()
    }

    /// Entries with `start <= count < stop` (stop 0 or negative: to the end).
    pub fn range(&self, start: i32, stop: i32) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|(count, _, _)| *count as i32 >= start && (stop <= 0 || (*count as i32) < stop))
            .cloned()
            .collect()
    }

    /// Entries matching a glob pattern (`*` any text, `?` one character), the last `n` of them
    /// (`n` 0: all); with `unique`, each code once (its latest run).
    pub fn search(&self, pattern: &str, n: usize, unique: bool) -> Vec<Entry> {
        let mut found: Vec<Entry> = self
            .entries
            .iter()
            .filter(|(_, code, _)| glob_matches(pattern, code))
            .cloned()
            .collect();
        if unique {
            let mut seen = std::collections::HashSet::new();
            found.reverse();
            found.retain(|(_, code, _)| seen.insert(code.clone()));
            found.reverse();
        }
        if n > 0 && found.len() > n {
            found.drain(..found.len() - n);
        }
        found
    }
}

fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // matches[j]: pattern[..i] matches text[..j]
    let mut matches = vec![false; text.len() + 1];
    matches[0] = true;
    for &symbol in &pattern {
        let mut next = vec![false; text.len() + 1];
        for j in 0..=text.len() {
            next[j] = match symbol {
                '*' => matches[j] || (j > 0 && next[j - 1]),
                '?' => j > 0 && matches[j - 1],
                literal => j > 0 && matches[j - 1] && text[j - 1] == literal,
            };
        }
        matches = next;
    }
    matches[text.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut history = History::new();
        history.record(1, "let a = 1;");
        history.record(2, "println!(\"{a}\");");
        history.record(3, "let a = 1;");
        history
    }

    #[test]
    fn tail_range_and_search() {
        let history = sample();
        assert_eq!(history.tail(1), vec![(3, "let a = 1;".to_owned(), None)]);
        assert_eq!(history.range(2, 3).len(), 1);
        assert_eq!(history.range(1, 0).len(), 3);
        assert_eq!(history.search("*println*", 0, false).len(), 1);
        assert_eq!(history.search("let*", 0, true), vec![(3, "let a = 1;".to_owned(), None)]);
        assert!(history.search("nothing*", 0, false).is_empty());
    }
}
