//! A small column formatter for human-readable output: left-aligned columns separated by
//! two spaces, a header row, cells cut at [`MAX_CELL`] characters with `…`.

/// Longest cell shown; longer values are truncated.
pub const MAX_CELL: usize = 60;

/// A table being built row by row.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in `\n`.
    pub fn render(&self) -> String {
        let n = self.header.len();
        let cell = |row: &[String], i: usize| truncate(row.get(i).map_or("", String::as_str));
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(cell(r, i).chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate().take(n) {
                let c = cell(r, i);
                line.push_str(&c);
                if i + 1 < n {
                    line.push_str(&" ".repeat(w - c.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn truncate(s: &str) -> String {
    let one_line = s.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= MAX_CELL {
        one_line
    } else {
        let mut t: String = one_line.chars().take(MAX_CELL - 1).collect();
        t.push('…');
        t
    }
}

/// Prints `key: value` lines with the keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<w$}  {v}\n", w = w + 1, k = format!("{k}:")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_and_truncates() {
        let mut t = Table::new(&["ID", "STATUS"]);
        t.row(vec!["a".into(), "queued".into()]);
        t.row(vec!["x".repeat(70), "ok".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], format!("ID{}STATUS", " ".repeat(MAX_CELL)));
        assert_eq!(lines[1], format!("a{}queued", " ".repeat(MAX_CELL + 1)));
        assert!(lines[2].contains('…'));
        assert_eq!(lines[2].chars().count(), MAX_CELL + 2 + 2);
    }

    #[test]
    fn fields_align_keys() {
        let s = fields(&[("id", "1".into()), ("status", "ok".into())]);
        assert_eq!(s, "id:      1\nstatus:  ok\n");
    }
}
