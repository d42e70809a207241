//! Error templates: an error message with its variable parts masked, so variations group.
//!
//! Masks, in this order: quoted strings → `<str>`; then per whitespace-separated token (with
//! surrounding punctuation kept): URLs → `<url>`, UUIDs → `<uuid>`, ULIDs → `<ulid>`,
//! IPv4 (with optional port) and IPv6 addresses → `<ip>`, paths → `<path>`, emails →
//! `<email>`, `0x…` and long hex ids → `<hex>`; finally every remaining run of digits (with a
//! decimal part) → `<num>`, so `30s` becomes `<num>s` and `player-42` becomes `player-<num>`.

use rmpv::Value;
use trace_core::TraceEntry;

/// The error message of an entry: `data.message`, `data.error`, `data.msg` (the first string
/// among them), or `data` itself when it is a string.
pub fn error_message(entry: &TraceEntry) -> Option<&str> {
    match &entry.data {
        Value::String(s) => s.as_str(),
        Value::Map(pairs) => ["message", "error", "msg"].iter().find_map(|wanted| {
            pairs.iter().find_map(|(k, v)| {
                if k.as_str() == Some(wanted) {
                    v.as_str()
                } else {
                    None
                }
            })
        }),
        _ => None,
    }
}

/// The message with its variable parts masked (see the module docs).
pub fn mask_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let Some(start) = rest.find(|c: char| !c.is_whitespace()) else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        // A quoted string may contain spaces: take it whole.
        let first = rest.chars().next().unwrap_or(' ');
        if first == '"' || first == '\'' || first == '`' {
            if let Some(close) = rest[1..].find(first) {
                out.push_str("<str>");
                rest = &rest[close + 2..];
                continue;
            }
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        mask_token(&rest[..end], &mut out);
        rest = &rest[end..];
    }
    out
}

fn mask_token(token: &str, out: &mut String) {
    let lead = token
        .find(|c: char| !matches!(c, '(' | '[' | '{' | '<' | '=' | ','))
        .unwrap_or(token.len());
    let core_end = token
        .rfind(|c: char| !matches!(c, ')' | ']' | '}' | '>' | ',' | ';' | '.' | ':' | '!' | '?'))
        .map_or(lead, |i| {
            i + token[i..].chars().next().map_or(1, char::len_utf8)
        })
        .max(lead);
    let (prefix, core, suffix) = (&token[..lead], &token[lead..core_end], &token[core_end..]);
    out.push_str(prefix);
    // `key=value` masks the value only.
    if let Some(eq) = core.find('=') {
        if eq > 0
            && core[..eq]
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            out.push_str(&core[..=eq]);
            mask_core(&core[eq + 1..], out);
            out.push_str(suffix);
            return;
        }
    }
    mask_core(core, out);
    out.push_str(suffix);
}

fn mask_core(core: &str, out: &mut String) {
    let placeholder = if core.contains("://") {
        Some("<url>")
    } else if is_uuid(core) {
        Some("<uuid>")
    } else if is_ulid(core) {
        Some("<ulid>")
    } else if is_ipv4(core) || is_ipv6(core) {
        Some("<ip>")
    } else if is_path(core) {
        Some("<path>")
    } else if is_email(core) {
        Some("<email>")
    } else if is_hex_id(core) {
        Some("<hex>")
    } else {
        None
    };
    match placeholder {
        Some(p) => out.push_str(p),
        None => mask_digits(core, out),
    }
}

fn mask_digits(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let mut j = i;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            if j + 1 < bytes.len() && bytes[j] == b'.' && bytes[j + 1].is_ascii_digit() {
                j += 1;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
            }
            out.push_str("<num>");
            i = j;
        } else {
            let next = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + next]);
            i += next;
        }
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_ulid(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        && s.bytes().any(|b| b.is_ascii_digit())
        && !s.bytes().any(|b| matches!(b, b'I' | b'L' | b'O' | b'U'))
}

fn is_ipv4(s: &str) -> bool {
    let host = match s.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => s,
    };
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u16>().is_ok_and(|n| n <= 255))
}

fn is_ipv6(s: &str) -> bool {
    let s = s.trim_start_matches('[').split(']').next().unwrap_or("");
    s.matches(':').count() >= 2
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        && s.bytes().any(|b| b.is_ascii_hexdigit())
}

fn is_path(s: &str) -> bool {
    let unix = (s.starts_with('/') || s.starts_with("./") || s.starts_with("~/"))
        && s.len() > 1
        && s[1..].contains(|c: char| c.is_alphanumeric());
    let windows = s.len() > 3 && s.as_bytes()[1] == b':' && s.as_bytes()[2] == b'\\';
    let relative = s.matches('/').count() >= 2 && !s.contains("//");
    unix || windows || relative
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => !user.is_empty() && domain.contains('.') && !domain.contains('@'),
        None => false,
    }
}

fn is_hex_id(s: &str) -> bool {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    s.len() >= 8
        && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variations_share_a_template() {
        let a = mask_message("timeout after 30s talking to 10.0.0.7");
        let b = mask_message("timeout after 5s talking to 192.168.1.20:4222");
        assert_eq!(a, "timeout after <num>s talking to <ip>");
        assert_eq!(a, b);
    }

    #[test]
    fn masks_ids_paths_and_quotes() {
        assert_eq!(
            mask_message(
                "user 'bob smith' (id=42) failed on /var/lib/x.db: 550e8400-e29b-41d4-a716-446655440000"
            ),
            "user <str> (id=<num>) failed on <path>: <uuid>"
        );
        assert_eq!(
            mask_message("event 01ARZ3NDEKTSV4RRFFQ69G5FAV dropped at 0xdeadbeef, 3.5 ms"),
            "event <ulid> dropped at <hex>, <num> ms"
        );
        assert_eq!(mask_message("player-42 left"), "player-<num> left");
        assert_eq!(mask_message("can't connect"), "can't connect");
    }
}
