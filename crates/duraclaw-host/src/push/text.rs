//! Hostile-string hygiene for what a notification shows: a tool's input, a
//! question or an error message are written by the agent (and so by
//! whatever it read), and a lock screen shows them as they are.

/// The most characters of a notification's title.
pub const MAX_TITLE_CHARS: usize = 80;

/// The most characters of a notification's body.
pub const MAX_BODY_CHARS: usize = 180;

/// The most characters of a tool input's short preview.
pub const MAX_PREVIEW_CHARS: usize = 100;

/// Whether `c` is invisible or changes how the text around it is shown:
/// format characters (zero-width, direction marks, embeddings, overrides
/// and isolates, the byte-order mark, tags), soft hyphens and the like.
fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x061C
            | 0x0600..=0x0605
            | 0x06DD
            | 0x070F
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// `text` made safe to show on one line: control characters, line breaks
/// and tabs become spaces, invisible and direction characters are dropped,
/// runs of spaces become one, and it is cut to `max_chars` characters
/// (the last one then `…`).
pub fn clean(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    let mut count = 0;
    let mut space = false;
    let mut cut = false;
    for c in text.chars() {
        if is_invisible(c) {
            continue;
        }
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' {
            space = !out.is_empty();
            continue;
        }
        let needed = usize::from(space) + 1;
        if count + needed > max_chars {
            cut = true;
            break;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        out.push(c);
        count += 1;
    }
    if cut && max_chars > 0 {
        while count + 1 > max_chars {
            out.pop();
            count -= 1;
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('…');
    }
    out
}

/// A short preview of a tool's input: the command of a shell tool, the
/// path of a file tool, the URL of a fetch, or else the input as compact
/// JSON; cleaned and cut to [`MAX_PREVIEW_CHARS`].
pub fn input_preview(input: &serde_json::Value) -> String {
    let field = ["command", "file_path", "path", "url", "pattern", "query"]
        .iter()
        .find_map(|k| input.get(*k).and_then(|v| v.as_str()));
    match field {
        Some(s) => clean(s, MAX_PREVIEW_CHARS),
        None => clean(&input.to_string(), MAX_PREVIEW_CHARS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn drops_direction_and_invisible_characters() {
        // "evil" shown reversed by a right-to-left override, a zero-width
        // space and a tag character hidden in it.
        let hostile = "rm -rf /\u{202E}live\u{202C}\u{200B}x\u{E0041}\u{2066}y\u{FEFF}";
        assert_eq!(clean(hostile, 100), "rm -rf /livexy");
    }

    #[test]
    fn controls_and_line_breaks_become_one_space() {
        assert_eq!(
            clean("  a\n\n\tb\r\u{7}c\u{1b}[31m d\u{2028}e  ", 100),
            "a b c [31m d e"
        );
        assert_eq!(clean("\n\u{200B}\t", 10), "");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        assert_eq!(clean("abcdefghij", 10), "abcdefghij");
        assert_eq!(clean("abcdefghijk", 10), "abcdefghi…");
        assert_eq!(clean("abc defghijk", 5), "abc…");
        assert_eq!(clean("ééééé", 3), "éé…");
    }

    #[test]
    fn previews_take_the_telling_field() {
        let bash = serde_json::json!({"command": "ls\n-la", "description": "list"});
        assert_eq!(input_preview(&bash), "ls -la");
        let other = serde_json::json!({"a": 1});
        assert_eq!(input_preview(&other), "{\"a\":1}");
        let long = serde_json::json!({"command": "x".repeat(500)});
        assert_eq!(input_preview(&long).chars().count(), MAX_PREVIEW_CHARS);
    }

    proptest! {
        #[test]
        fn cleaned_text_is_bounded_and_shows_nothing_hidden(s in any::<String>(), max in 1usize..200) {
            let out = clean(&s, max);
            prop_assert!(out.chars().count() <= max);
            prop_assert!(!out.chars().any(|c| c.is_control() || is_invisible(c) || (c.is_whitespace() && c != ' ')));
            prop_assert!(!out.starts_with(' ') && !out.contains("  "));
        }
    }
}
