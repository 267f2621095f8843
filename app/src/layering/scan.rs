//! Reading Rust source as text, well enough to find `crate::` paths: blank
//! out comments and literals, drop `#[cfg(test)]` items, list the paths.

/// The source with comments and string/char literals replaced by spaces
/// (line breaks kept, so line numbers stay right).
pub(super) fn blank_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !is_ident(c[i - 1]))
        {
            // r"…" or r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let rest: String = c[j + 1..].iter().collect();
            let len = rest.find(&close).map_or(rest.len(), |p| p + close.len());
            let end = j + 1 + rest[..len].chars().count();
            for &ch in &c[i..end.min(c.len())] {
                blank(&mut out, ch);
            }
            i = end;
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            if i < c.len() {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            let lit_end = if next == Some('\\') {
                (i + 3..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match lit_end {
                Some(e) => {
                    for &ch in &c[i..=e] {
                        blank(&mut out, ch);
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c[i]);
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// The code without items under `#[cfg(test)]`, and the names of the
/// test-only modules declared as `mod name;`.
pub(super) fn without_tests(code: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut mods = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(ATTR) {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let end = item_end(item, ATTR.len());
        let skipped = &item[..end];
        let decl = skipped.trim_end();
        if decl.ends_with(';') {
            if let Some(name) = decl
                .rsplit_once("mod ")
                .map(|(_, n)| n.trim_end_matches(';').trim())
            {
                if !name.is_empty() && name.chars().all(is_ident) {
                    mods.push(name.to_string());
                }
            }
        }
        out.extend(skipped.chars().filter(|&c| c == '\n'));
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, mods)
}

/// The byte length of the item starting with an attribute of `attr_len`
/// bytes: further attributes, then up to a `;` or a balanced `{…}` outside
/// parentheses.
fn item_end(item: &str, attr_len: usize) -> usize {
    let bytes = item.as_bytes();
    let mut i = attr_len;
    let mut parens = 0i32;
    let mut brackets = 0i32;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => parens += 1,
            b')' => parens -= 1,
            b'[' => brackets += 1,
            b']' => brackets -= 1,
            b';' if parens == 0 && brackets == 0 => return i + 1,
            b'{' if parens == 0 && brackets == 0 => {
                let mut depth = 0;
                while i < bytes.len() {
                    match bytes[i] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                return i + 1;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                return bytes.len();
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

/// Every `crate::name` (and each name of a `crate::{…}` group) with its line.
pub(super) fn references(code: &str) -> Vec<(String, usize)> {
    const KEY: &str = "crate::";
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find(KEY) {
        let at = from + pos;
        from = at + KEY.len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        push_first_segment(&group[start..i], line, &mut out);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_first_segment(&group[start..i], line, &mut out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            push_first_segment(rest, line, &mut out);
        }
    }
    out
}

fn push_first_segment(path: &str, line: usize, out: &mut Vec<(String, usize)>) {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|&c| is_ident(c))
        .collect();
    if !name.is_empty() && name != "self" {
        out.push((name, line));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_scanner_sees_paths_and_groups_but_not_comments_strings_or_tests() {
        let code = r##"
            use crate::a::X;
            use crate::{b, c::Y as Z};
            // crate::commented
            /* crate::block /* nested */ crate::block2 */
            const S: &str = "crate::string";
            const R: &str = r#"crate::raw"#;
            const C: char = '"';
            fn f<'a>(x: &'a str) -> usize { crate::d::g(x) }
            #[cfg(test)]
            mod tests { use crate::tested; }
            #[cfg(test)]
            #[allow(dead_code)]
            fn helper() { crate::helper_only(); }
            fn h() { $crate::e::i() }
        "##;
        let (stripped, test_mods) = without_tests(&blank_literals(code));
        let names: BTreeSet<String> = references(&stripped).into_iter().map(|(m, _)| m).collect();
        let want: BTreeSet<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
        assert_eq!(names, want);
        assert!(test_mods.is_empty());
        let (_, mods) = without_tests("#[cfg(test)]\npub(crate) mod rbac_tests;\n");
        assert_eq!(mods, vec!["rbac_tests".to_string()]);
    }
}
