//! Text helpers every capability shares: cutting strings at a character
//! boundary, quoting guest-supplied names in errors, and checking names.

/// Cuts `text` to at most `max` bytes without splitting a character.
pub(crate) fn truncate_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Quotes a guest-supplied name in an error, cut so that a hostile guest
/// cannot make the host echo megabytes back.
pub(crate) fn quote(value: &str) -> String {
    format!("{:?}", truncate_at_char_boundary(value, 80))
}

/// Checks a binding or tool name: 1 to `max` bytes of `[A-Za-z0-9_.-]`.
pub(crate) fn validate_name(what: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!(
            "{what} {} must be 1 to {max} bytes long",
            quote(name)
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "{what} {} may only contain letters, digits, `_`, `-` and `.`",
            quote(name)
        ));
    }
    Ok(())
}
