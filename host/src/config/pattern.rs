//! The one path-pattern type, used by function routes and by `_redirects` rules alike: parsed
//! and validated once, where the configuration is read, and kept.
//!
//! A pattern is `/`-separated segments: a literal, `:name` (captures one non-empty segment;
//! the name is `[A-Za-z_][A-Za-z0-9_]*`), or — last only — `*` (captures the rest of the path,
//! possibly empty). A trailing slash is not a segment: `/api/` is the pattern `/api`, and a
//! request path's trailing slash is ignored the same way, so both match `/api` and `/api/`.

use std::fmt;

/// One parsed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches itself.
    Literal(String),
    /// `:name`: one non-empty segment.
    Param(String),
    /// `*`, last only: the rest of the path.
    Rest,
}

/// The capture name of `*` in [`Pattern::matches`]' result.
pub const REST: &str = "*";

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

/// Why a pattern was refused; the message quotes the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {pattern:?}: {why}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Pattern {
    /// Parses a pattern such as `/api/items/:id` or `/files/*`.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let invalid = |why| PatternError {
            pattern: text.to_string(),
            why,
        };
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| invalid("must start with `/`"))?;
        if text.contains(['?', '#']) {
            return Err(invalid("a path has no query (`?`) or fragment (`#`)"));
        }
        let mut parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        if parts.last() == Some(&"") {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = if *part == "*" {
                if i + 1 != parts.len() {
                    return Err(invalid("`*` may only be the last segment"));
                }
                Segment::Rest
            } else if let Some(name) = part.strip_prefix(':') {
                if !is_name(name) {
                    return Err(invalid(
                        "a `:param` needs a name of letters, digits or `_`, not starting with a digit",
                    ));
                }
                Segment::Param(name.to_string())
            } else if part.contains('*') {
                return Err(invalid("`*` must be a whole segment (`/path/*`)"));
            } else if part.is_empty() {
                return Err(invalid("empty segment (`//`)"));
            } else {
                Segment::Literal((*part).to_string())
            };
            segments.push(segment);
        }
        Ok(Pattern {
            text: text.to_string(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The names of its `:param` segments, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Whether it ends in `*`.
    pub fn has_rest(&self) -> bool {
        self.segments.last() == Some(&Segment::Rest)
    }

    /// Orders patterns from most to least specific: more literal segments, then more
    /// parameters, then no `*`, then more segments.
    pub fn specificity(&self) -> (usize, usize, bool, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (
            literals,
            self.params().count(),
            !self.has_rest(),
            self.segments.len(),
        )
    }

    /// Same shape: would match exactly the same paths.
    pub fn same_shape(&self, other: &Pattern) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Segment::Literal(x), Segment::Literal(y)) => x == y,
                    (Segment::Param(_), Segment::Param(_)) | (Segment::Rest, Segment::Rest) => true,
                    _ => false,
                })
    }

    /// Matches `path` (no query): the captures in pattern order, `:name` by its name and `*`
    /// as [`REST`].
    pub fn matches(&self, path: &str) -> Option<Vec<(&str, String)>> {
        let path = path.strip_prefix('/')?;
        let mut parts = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect::<Vec<_>>()
        };
        if parts.last() == Some(&"") {
            parts.pop();
        }
        let mut captures = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Rest => {
                    captures.push((REST, parts.get(i..).unwrap_or(&[]).join("/")));
                    return Some(captures);
                }
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = parts.get(i).filter(|v| !v.is_empty())?;
                    captures.push((name.as_str(), (*value).to_string()));
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(captures)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captures(p: &str, path: &str) -> Option<Vec<(String, String)>> {
        Pattern::parse(p)
            .unwrap()
            .matches(path)
            .map(|c| c.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn literals_params_and_rest() {
        assert_eq!(captures("/a/:id", "/a/42"), Some(pairs(&[("id", "42")])));
        assert_eq!(captures("/a/:id", "/a/"), None);
        assert_eq!(captures("/a/:id", "/a/42/x"), None);
        assert_eq!(captures("/f/*", "/f/x/y"), Some(pairs(&[("*", "x/y")])));
        assert_eq!(captures("/f/*", "/f"), Some(pairs(&[("*", "")])));
        assert_eq!(captures("/", "/"), Some(vec![]));
        assert_eq!(captures("/", "/x"), None);
        assert_eq!(captures("/a", "a"), None);
    }

    /// Regression: `path = "/api/"` passed validation, then never matched, because the pattern
    /// kept a trailing empty segment while the request path's was stripped.
    #[test]
    fn trailing_slash_route_api_matches_with_and_without_the_slash() {
        let p = Pattern::parse("/api/").unwrap();
        assert_eq!(p.as_str(), "/api/");
        assert!(p.matches("/api").is_some());
        assert!(p.matches("/api/").is_some());
        assert!(p.same_shape(&Pattern::parse("/api").unwrap()));
    }

    /// Regression: the router accepted `:1x` while `_redirects` refused it; one rule now.
    #[test]
    fn param_names_follow_one_rule() {
        for bad in ["/a/:", "/a/:1x", "/a/:x-y"] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.to_string().contains("needs a name"), "{bad}: {e}");
        }
        assert!(Pattern::parse("/a/:_x1").is_ok());
    }

    #[test]
    fn malformed_patterns_quote_the_pattern_and_say_why() {
        let why = |p: &str| Pattern::parse(p).unwrap_err().to_string();
        assert_eq!(why("a/b"), "invalid path \"a/b\": must start with `/`");
        assert!(why("/a/*/b").contains("last segment"));
        assert!(why("/a//b").contains("empty segment"));
        assert!(why("/a*").contains("whole segment"));
        assert!(why("/a?x=1").contains("no query"));
    }

    #[test]
    fn specificity_orders_literal_param_rest() {
        let s = |p: &str| Pattern::parse(p).unwrap().specificity();
        assert!(s("/a/b") > s("/a/:x"));
        assert!(s("/a/:x") > s("/a/*"));
    }
}
