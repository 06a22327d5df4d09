//! CSV: numbers separated by commas (or whitespace), one row per line, one column the target.

use std::path::Path;

use super::Dataset;
use crate::error::{KilnError, Result};

/// Whether the first line holds column names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Header {
    /// A header if no field of the first line is a number; a first line that mixes numbers
    /// and text is an error (a data row with a typo must not vanish as a header).
    #[default]
    Auto,
    /// The first line is a header.
    Yes,
    /// Every line is data.
    No,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// How to read a CSV file.
pub struct CsvOptions {
    /// Whether the first line holds column names.
    pub header: Header,
    /// The target column; negative counts from the end (−1, the default, is the last).
    pub label_column: i64,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: Header::Auto,
            label_column: -1,
        }
    }
}

/// Reads a CSV file; errors name the file and the line.
pub fn read(path: &Path, options: &CsvOptions) -> Result<Dataset> {
    let text = crate::weights::read_input_text(path)?;
    parse(&path.display().to_string(), &text, options)
}

/// Said where a line or field holds a semicolon: European spreadsheets separate fields with
/// them (and write decimal commas).
fn semicolon_hint(text: &str) -> &'static str {
    if text.contains(';') {
        " (fields are separated by commas or whitespace, not semicolons)"
    } else {
        ""
    }
}

fn fields(line: &str) -> Vec<&str> {
    if line.contains(',') {
        line.split(',').map(str::trim).collect()
    } else {
        line.split_whitespace().collect()
    }
}

/// Parses CSV text; `source` names it in errors, with the line number.
pub fn parse(source: &str, text: &str, options: &CsvOptions) -> Result<Dataset> {
    // Spreadsheet exports often start with a UTF-8 byte-order mark; it is not data.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .peekable();
    let skip = match options.header {
        Header::Yes => true,
        Header::No => false,
        Header::Auto => match lines.peek() {
            None => false,
            Some((i, l)) if l.contains(';') => {
                return Err(KilnError::file(
                    source,
                    format!("line {}: a semicolon{}", i + 1, semicolon_hint(l)),
                ));
            }
            Some((i, l)) => {
                let f = fields(l);
                let text: Vec<&&str> = f.iter().filter(|f| f.parse::<f32>().is_err()).collect();
                if !text.is_empty() && text.len() < f.len() {
                    return Err(KilnError::file(
                        source,
                        format!(
                            "line {}: field {:?} is not a number, but the line's other fields are: \
                             is it a header (then say header = true) or a data row with a typo?",
                            i + 1,
                            text[0]
                        ),
                    ));
                }
                !text.is_empty()
            }
        },
    };
    if skip {
        lines.next();
    }
    let mut width = None;
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut label_at = 0;
    let mut line_numbers = Vec::new();
    for (i, line) in lines {
        line_numbers.push(i + 1);
        let at = |what: String| KilnError::file(source, format!("line {}: {what}", i + 1));
        let f = fields(line);
        match width {
            None => {
                let n = f.len() as i64;
                let col = if options.label_column < 0 {
                    n + options.label_column
                } else {
                    options.label_column
                };
                if n < 2 || !(0..n).contains(&col) {
                    return Err(at(format!(
                        "label_column {} does not exist in {n} columns{}",
                        options.label_column,
                        semicolon_hint(line)
                    )));
                }
                label_at = col as usize;
                width = Some(f.len());
            }
            Some(w) if w != f.len() => return Err(at(format!("{} fields, expected {w}", f.len()))),
            _ => {}
        }
        for (j, field) in f.iter().enumerate() {
            let v: f32 = field.parse().map_err(|_| {
                at(format!(
                    "field {} ({field:?}) is not a number{}",
                    j + 1,
                    semicolon_hint(field)
                ))
            })?;
            if !v.is_finite() {
                return Err(at(format!("field {} ({field:?}) is not finite", j + 1)));
            }
            if j == label_at { y.push(v) } else { x.push(v) }
        }
    }
    let width = width.ok_or_else(|| KilnError::file(source, "no data rows"))?;
    let mut d = Dataset::new(source, width - 1, x, 1, y)?;
    d.origin = line_numbers;
    d.origin_unit = "line";
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_label_columns_and_separators() {
        let d = parse("a.csv", "x1,x2,y\n1,2,0\n3,4,1\n", &CsvOptions::default()).unwrap();
        assert_eq!((d.x, d.y), (vec![1.0, 2.0, 3.0, 4.0], vec![0.0, 1.0]));
        let opts = CsvOptions {
            label_column: 0,
            ..Default::default()
        };
        let d = parse("b.csv", "5 1 2\n6 3 4\n", &opts).unwrap();
        assert_eq!((d.x, d.y), (vec![1.0, 2.0, 3.0, 4.0], vec![5.0, 6.0]));
    }

    #[test]
    fn broken_csv_names_the_line() {
        let opts = CsvOptions::default();
        let e = parse("f.csv", "1,2,0\n1,x,1\n", &opts)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "f.csv: line 2: field 2 (\"x\") is not a number");
        let e = parse("f.csv", "1,2,0\n1,1\n", &opts)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "f.csv: line 2: 2 fields, expected 3");
        let e = parse("f.csv", "1,2,0\n1,inf,1\n", &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: field 2 (\"inf\") is not finite"), "{e}");
        let e = parse("f.csv", "a,b\n", &opts).unwrap_err().to_string();
        assert_eq!(e, "f.csv: no data rows");
        let e = parse(
            "f.csv",
            "1,2\n",
            &CsvOptions {
                label_column: 5,
                ..opts
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("label_column 5 does not exist in 2 columns"),
            "{e}"
        );
    }

    /// With the header guessed, a first line of numbers with one bad field is an error naming
    /// it, not a header that silently takes a data row away; one all text is a header.
    #[test]
    fn a_first_row_with_a_typo_is_not_taken_for_a_header() {
        let opts = CsvOptions::default();
        for text in ["NA,2,0\n3,4,1\n", "1,2,0,\n3,4,1,\n", "1,2,O\n3,4,1\n"] {
            let e = parse("f.csv", text, &opts).unwrap_err().to_string();
            assert!(
                e.starts_with("f.csv: line 1: field") && e.contains("header = true"),
                "{text:?}: {e}"
            );
        }
        let d = parse(
            "f.csv",
            "NA,2,0\n3,4,1\n",
            &CsvOptions {
                header: Header::Yes,
                ..opts
            },
        )
        .unwrap();
        assert_eq!(d.y, vec![1.0]);
        let d = parse("f.csv", "a, b ,\"y\"\n3,4,1\n", &opts).unwrap();
        assert_eq!(d.y, vec![1.0]);
        for (text, header) in [
            ("1;2;0\n3;4;1\n", Header::Auto),
            ("1,5;2,3;0\n3,5;4;1\n", Header::No),
            ("a;b;y\n3;4;1\n", Header::Yes),
        ] {
            let e = parse("f.csv", text, &CsvOptions { header, ..opts })
                .unwrap_err()
                .to_string();
            assert!(e.contains("not semicolons"), "{text:?}: {e}");
        }
        let e = parse("f.csv", "1;2;0\n3;4;1\n", &opts)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.csv: line 1:"), "{e}");
    }

    #[test]
    fn a_truncated_file_is_an_error() {
        // The last line cut mid-row.
        let e = parse("t.csv", "1,2,3\n4,5,6\n7,8", &CsvOptions::default())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.csv: line 3: 2 fields, expected 3");
    }
}
