//! Rewrites, redirects and proxies in Netlify's `_redirects` syntax, from `DIR/_redirects` and
//! `[[redirects]]` in fnhost.toml (the file's rules first, as on Netlify).
//!
//! A line is `FROM TO [STATUS][!]`; `#` starts a comment line. `FROM` is a path whose segments
//! may be `:name` placeholders and whose last segment may be `*`; `TO` may use those
//! placeholders anywhere and `:splat` for what `*` matched. Status `200` rewrites to a local
//! path (routed again inside fnhost, once) or, when `TO` is an `http(s)://` URL, proxies to it;
//! `301`, `302`, `303`, `307`, `308` redirect with `Location`; the default is `301`. The request's
//! query string is passed on. Rules are tried in order and the first that applies wins; a rule
//! applies to a path some function route answers only when forced with `!` (shadowing).
//!
//! This module parses and validates rules (pure); `http::rules` applies them to requests and
//! `http::proxy` forwards proxied ones.

use std::path::{Path, PathBuf};

use super::pattern::Pattern;

/// The placeholder in `TO` for what `*` matched.
pub const SPLAT: &str = "splat";

/// Statuses a rule may have.
pub const STATUSES: &[u16] = &[200, 301, 302, 303, 307, 308];

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `FROM`, parsed once.
    pub from: Pattern,
    /// `TO`, with `:name` / `:splat` placeholders.
    pub to: String,
    /// `200` (rewrite or proxy) or a redirect status.
    pub status: u16,
    /// Applies even where a function route answers the path.
    pub force: bool,
    /// Requests per client (or domain) and window this rule serves (`[[redirects]]` only, as
    /// in netlify.toml); past it, `429` or the limit's own rewrite.
    pub rate_limit: Option<super::rate::RateLimitConfig>,
}

impl Rule {
    /// Builds a rule, checking `from`, `to` and `status`.
    pub fn new(from: &str, to: &str, status: u16, force: bool) -> Result<Rule, String> {
        let from_pattern = parse_from(from)?;
        if !STATUSES.contains(&status) {
            return Err(format!(
                "status {status} is not supported (fnhost serves functions, not static pages): \
                 use 200 (rewrite or proxy) or 301, 302, 303, 307, 308"
            ));
        }
        let absolute = to.starts_with("http://") || to.starts_with("https://");
        if !absolute && !to.starts_with('/') {
            return Err(format!(
                "`to` {to:?} must be a path starting with `/` or an http:// or https:// URL"
            ));
        }
        for name in placeholders(to) {
            let known = if name == SPLAT {
                from_pattern.has_rest()
            } else {
                from_pattern.params().any(|p| p == name)
            };
            if !known {
                return Err(if name == "splat" {
                    format!("`:splat` in {to:?} needs `from` to end in `/*`")
                } else {
                    format!("`:{name}` in {to:?} is not a placeholder of `from` {from:?}")
                });
            }
        }
        Ok(Rule {
            from: from_pattern,
            to: to.to_string(),
            status,
            force,
            rate_limit: None,
        })
    }

    /// Parses one `_redirects` line; `None` for a blank or comment line.
    pub fn parse_line(line: &str) -> Result<Option<Rule>, String> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(None);
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            return Err("expected `FROM TO [STATUS][!]`".into());
        }
        let is_target = |f: &str| f.starts_with('/') || f.contains("://");
        if fields[1].contains('=') && !is_target(fields[1]) {
            return Err(format!(
                "query-parameter matching ({:?}) is not supported",
                fields[1]
            ));
        }
        let (from, to) = (fields[0], fields[1]);
        let (status, force) = match fields.get(2) {
            None => (301, false),
            Some(s) => {
                let (num, force) = match s.strip_suffix('!') {
                    Some(n) => (n, true),
                    None => (*s, false),
                };
                let status = num.parse::<u16>().map_err(|_| {
                    format!("{s:?} is not a status: expected e.g. `200`, `301` or `200!`")
                })?;
                (status, force)
            }
        };
        if let Some(extra) = fields.get(3) {
            return Err(if extra.contains('=') {
                format!("conditions ({extra:?}: Country, Language, Role, ...) are not supported")
            } else {
                format!("unexpected {extra:?} after the status")
            });
        }
        Rule::new(from, to, status, force).map(Some)
    }
}

/// The `[A-Za-z_][A-Za-z0-9_]*` name at the start of `s`, or "".
pub fn placeholder_name(s: &str) -> &str {
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return "";
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every `:name` in `to`.
fn placeholders(to: &str) -> Vec<&str> {
    to.match_indices(':')
        .map(|(i, _)| placeholder_name(&to[i + 1..]))
        .filter(|n| !n.is_empty())
        .collect()
}

fn parse_from(from: &str) -> Result<Pattern, String> {
    if from.starts_with("http://") || from.starts_with("https://") {
        return Err(format!(
            "`from` {from:?}: domain-level rules are not supported; use a path"
        ));
    }
    if !from.starts_with('/') {
        return Err(format!("`from` {from:?} must be a path starting with `/`"));
    }
    if from.contains('?') {
        return Err(format!(
            "`from` {from:?}: query-parameter matching is not supported"
        ));
    }
    let pattern = Pattern::parse(from).map_err(|e| format!("`from` {from:?}: {}", e.why))?;
    if pattern.params().any(|p| p == SPLAT) {
        return Err(format!(
            "`from` {from:?}: `:splat` is what `*` matched; name the placeholder otherwise"
        ));
    }
    Ok(pattern)
}

/// A bad `_redirects` line (or a file that cannot be read at all).
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), at_line(*line))]
pub struct RedirectsError {
    /// The file.
    pub file: PathBuf,
    /// Line number, from 1; 0 when the fault is the whole file's.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// `:N` for a line number, nothing for 0 (the whole file).
fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

/// The text of a `_redirects` file; invalid UTF-8 is reported at its line.
fn utf8<'a>(bytes: &'a [u8], file: &Path) -> Result<&'a str, RedirectsError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let before = &bytes[..e.valid_up_to()];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        RedirectsError {
            file: file.to_owned(),
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            message: format!(
                "not UTF-8 (invalid byte at column {}); save the file as UTF-8",
                e.valid_up_to() - line_start + 1
            ),
        }
    })
}

/// The rules of a site, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Parses the text of a `_redirects` file; `file` labels errors.
    pub fn parse(text: &str, file: &Path) -> Result<Vec<Rule>, RedirectsError> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            match Rule::parse_line(line) {
                Ok(Some(rule)) => rules.push(rule),
                Ok(None) => {}
                Err(message) => {
                    return Err(RedirectsError {
                        file: file.to_owned(),
                        line: i + 1,
                        message,
                    });
                }
            }
        }
        Ok(rules)
    }

    /// `dir/_redirects` when present, then `more` (fnhost.toml's `[[redirects]]`).
    pub fn load(dir: &Path, more: impl IntoIterator<Item = Rule>) -> Result<Rules, RedirectsError> {
        let file = dir.join("_redirects");
        let mut rules = match std::fs::read(&file) {
            Ok(bytes) => Rules::parse(utf8(&bytes, &file)?, &file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(RedirectsError {
                    file,
                    line: 0,
                    message: format!("cannot read: {e}"),
                });
            }
        };
        rules.extend(more);
        Ok(Rules { rules })
    }

    /// The rules of a `_redirects` text (`file` labels errors), then `more`.
    pub fn from_text(
        text: &str,
        file: &Path,
        more: impl IntoIterator<Item = Rule>,
    ) -> Result<Rules, RedirectsError> {
        let mut rules = Rules::parse(text, file)?;
        rules.extend(more);
        Ok(Rules { rules })
    }

    /// Rules in order.
    pub fn new(rules: Vec<Rule>) -> Rules {
        Rules { rules }
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (security item 7): invalid UTF-8 in `_redirects` was reported at line 0.
    #[test]
    fn invalid_utf8_is_reported_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("_redirects"),
            b"/a /b 301\n# fine\n/c /d\xff 301\n",
        )
        .unwrap();
        let e = Rules::load(dir.path(), []).unwrap_err();
        assert_eq!(e.line, 3);
        let text = e.to_string();
        assert!(
            text.ends_with(
                "_redirects:3: not UTF-8 (invalid byte at column 6); save the file as UTF-8"
            ),
            "{text}"
        );
    }

    fn err(text: &str) -> String {
        Rules::parse(text, Path::new("functions/_redirects"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        assert_eq!(
            err("/ok /fine\n\nnope /x\n"),
            "functions/_redirects:3: `from` \"nope\" must be a path starting with `/`"
        );
        assert!(err("/a\n").contains(":1: expected `FROM TO"));
        assert!(err("/a /b 404\n").contains("status 404 is not supported"));
        assert!(err("/a /b two\n").contains("is not a status"));
        assert!(err("/a /b/:splat\n").contains("needs `from` to end in `/*`"));
        assert!(err("/a/:x /b/:y\n").contains("`:y`"));
        assert!(err("/a/*/b /c\n").contains("last segment"));
        assert!(err("/a /b 302 Country=us\n").contains("conditions"));
        assert!(err("/store id=:id /b/:id 301\n").contains("query-parameter"));
        assert!(err("/a ftp://x 200\n").contains("must be a path"));
        assert!(err("https://x.test/* /b 301\n").contains("domain-level"));
        assert!(err("/a/:splat/* /b\n").contains("`:splat` is what `*` matched"));
        assert!(err("/a/:1x /b\n").contains("needs a name"));
    }
}
