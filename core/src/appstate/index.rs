//! The mutation index: a JSON array of strings (`["pin_v1","123@s.whatsapp.net"]`). Its exact
//! bytes are MACed, so outgoing indexes are written the way WhatsApp Web's `JSON.stringify`
//! writes them (no spaces; `"`, `\` and control characters escaped, everything else as is).

/// Longest index accepted, in strings.
const MAX_PARTS: usize = 64;

/// Writes `parts` as a compact JSON array of strings.
pub fn encode_index<S: AsRef<str>>(parts: &[S]) -> Vec<u8> {
    let mut out =
        String::with_capacity(2 + parts.iter().map(|p| p.as_ref().len() + 3).sum::<usize>());
    out.push('[');
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in p.as_ref().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out.into_bytes()
}

/// Reads a JSON array of strings; `None` if it is anything else.
pub fn decode_index(bytes: &[u8]) -> Option<Vec<String>> {
    let s = std::str::from_utf8(bytes).ok()?;
    let mut it = s.chars().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while it.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            it.next();
        }
    };
    let mut parts = Vec::new();
    skip_ws(&mut it);
    if it.next()? != '[' {
        return None;
    }
    skip_ws(&mut it);
    if it.peek() == Some(&']') {
        it.next();
    } else {
        loop {
            skip_ws(&mut it);
            if it.next()? != '"' {
                return None;
            }
            let mut cur = String::new();
            loop {
                match it.next()? {
                    '"' => break,
                    '\\' => match it.next()? {
                        '"' => cur.push('"'),
                        '\\' => cur.push('\\'),
                        '/' => cur.push('/'),
                        'b' => cur.push('\u{8}'),
                        'f' => cur.push('\u{c}'),
                        'n' => cur.push('\n'),
                        'r' => cur.push('\r'),
                        't' => cur.push('\t'),
                        'u' => {
                            let hi = hex4(&mut it)?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if it.next()? != '\\' || it.next()? != 'u' {
                                    return None;
                                }
                                let lo = hex4(&mut it)?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            cur.push(char::from_u32(code)?);
                        }
                        _ => return None,
                    },
                    c if (c as u32) < 0x20 => return None,
                    c => cur.push(c),
                }
            }
            parts.push(cur);
            if parts.len() > MAX_PARTS {
                return None;
            }
            skip_ws(&mut it);
            match it.next()? {
                ',' => continue,
                ']' => break,
                _ => return None,
            }
        }
    }
    skip_ws(&mut it);
    if it.next().is_some() {
        return None;
    }
    Some(parts)
}

fn hex4(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<u32> {
    let mut v = 0;
    for _ in 0..4 {
        v = v * 16 + it.next()?.to_digit(16)?;
    }
    Some(v)
}
