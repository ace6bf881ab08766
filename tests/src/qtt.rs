//! Reading ksqlDB's query-validation test files: JSON with comments, as Jackson's
//! ALLOW_COMMENTS reads it.

/// The text without its `//` and `/* */` comments, wherever they stand (also after a value at
/// the end of a line), leaving strings untouched. Line breaks inside a block comment are kept,
/// so a JSON error's line number is still the file's.
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('/', Some('/')) => while chars.next_if(|&n| n != '\n').is_some() {},
            ('/', Some('*')) => {
                chars.next();
                let mut star = false;
                for n in chars.by_ref() {
                    if star && n == '/' {
                        break;
                    }
                    star = n == '*';
                    if n == '\n' {
                        out.push('\n');
                    }
                }
            }
            _ => {
                in_string = c == '"';
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_comments;

    #[test]
    fn comments_go_strings_stay() {
        let text = r#"{
  // a whole line
  "a": "http://x//y", // after a value
  "b": "say \"//\" /* not a comment */", /* a block
  over two lines */ "c": [1, 2]
}"#;
        let value: serde_json::Value = serde_json::from_str(&strip_comments(text)).unwrap();
        assert_eq!(value["a"], "http://x//y");
        assert_eq!(value["b"], r#"say "//" /* not a comment */"#);
        assert_eq!(value["c"], serde_json::json!([1, 2]));
        assert_eq!(strip_comments(text).lines().count(), text.lines().count());
    }
}
