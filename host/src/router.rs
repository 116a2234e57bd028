//! Routing: maps a method and a path to a target. Pure: no hyper, no wasmtime.
//!
//! Patterns are `/`-separated segments; a segment is a literal, `:name` (captures one segment),
//! or — last only — `*` (captures the rest, as `*`). The most specific route wins: more literal
//! segments first, then more parameters, then no wildcard. Two routes with the same shape and
//! overlapping methods are rejected when added.

use std::fmt;

/// One parsed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest,
}

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

/// Why a pattern or a route was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The pattern is malformed.
    #[error("invalid route {pattern:?}: {why}")]
    Invalid {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Another route already answers the same paths and methods.
    #[error("route {pattern:?} of {target} duplicates the route of {other}")]
    Duplicate {
        /// The pattern as written.
        pattern: String,
        /// The route being added.
        target: String,
        /// The route already there.
        other: String,
    },
}

impl Pattern {
    /// Parses a pattern such as `/api/items/:id` or `/files/*`.
    pub fn parse(text: &str) -> Result<Pattern, RouteError> {
        let invalid = |why| RouteError::Invalid {
            pattern: text.to_string(),
            why,
        };
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| invalid("must start with `/`"))?;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = if *part == "*" {
                if i + 1 != parts.len() {
                    return Err(invalid("`*` may only be the last segment"));
                }
                Segment::Rest
            } else if let Some(name) = part.strip_prefix(':') {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(invalid("a `:param` needs a name of letters, digits or `_`"));
                }
                Segment::Param(name.to_string())
            } else if part.is_empty() && i + 1 != parts.len() {
                return Err(invalid("empty segment (`//`)"));
            } else {
                Segment::Literal((*part).to_string())
            };
            segments.push(seg);
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

    fn specificity(&self) -> (usize, usize, bool, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let params = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Param(_)))
            .count();
        let no_rest = !matches!(self.segments.last(), Some(Segment::Rest));
        (literals, params, no_rest, self.segments.len())
    }

    /// Same shape: would match exactly the same paths.
    fn same_shape(&self, other: &Pattern) -> bool {
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

    /// Matches `path` (no query), returning captured parameters.
    fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let mut parts = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect::<Vec<_>>()
        };
        // A trailing slash is ignored: `/a/` matches `/a`.
        if parts.len() > 1 && parts.last() == Some(&"") {
            parts.pop();
        }
        let mut params = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Rest => {
                    params.push(("*".to_string(), parts.get(i..).unwrap_or(&[]).join("/")));
                    return Some(params);
                }
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = parts.get(i).filter(|v| !v.is_empty())?;
                    params.push((name.clone(), (*value).to_string()));
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

struct Route<T> {
    pattern: Pattern,
    /// Upper-case method names; empty = any method.
    methods: Vec<String>,
    target: T,
}

/// The result of routing one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Match<'a, T> {
    /// A route answers: its target and the captured parameters, in pattern order.
    Found(&'a T, Vec<(String, String)>),
    /// Some route has the path, none allows the method; the methods that are allowed.
    MethodNotAllowed(Vec<String>),
    /// No route has the path.
    NotFound,
}

/// A table of routes.
pub struct Router<T> {
    routes: Vec<Route<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { routes: Vec::new() }
    }
}

impl<T: fmt::Display> Router<T> {
    /// Adds a route; refuses one that duplicates an existing route's shape and methods.
    pub fn add(
        &mut self,
        pattern: Pattern,
        methods: Vec<String>,
        target: T,
    ) -> Result<(), RouteError> {
        if let Some(other) = self.routes.iter().find(|r| {
            r.pattern.same_shape(&pattern)
                && (r.methods.is_empty()
                    || methods.is_empty()
                    || r.methods.iter().any(|m| methods.contains(m)))
        }) {
            return Err(RouteError::Duplicate {
                pattern: pattern.text.clone(),
                target: target.to_string(),
                other: other.target.to_string(),
            });
        }
        self.routes.push(Route {
            pattern,
            methods,
            target,
        });
        // Most specific first; stable, so equal specificity keeps insertion order.
        self.routes
            .sort_by_key(|r| std::cmp::Reverse(r.pattern.specificity()));
        Ok(())
    }
}

impl<T> Router<T> {
    /// Finds the route for `method` and `path`.
    pub fn route(&self, method: &str, path: &str) -> Match<'_, T> {
        let mut allowed: Vec<String> = Vec::new();
        for route in &self.routes {
            let Some(params) = route.pattern.matches(path) else {
                continue;
            };
            if route.methods.is_empty() || route.methods.iter().any(|m| m == method) {
                return Match::Found(&route.target, params);
            }
            allowed.extend(route.methods.iter().cloned());
        }
        if allowed.is_empty() {
            Match::NotFound
        } else {
            allowed.sort();
            allowed.dedup();
            Match::MethodNotAllowed(allowed)
        }
    }

    /// Every route: pattern, methods, target.
    pub fn iter(&self) -> impl Iterator<Item = (&Pattern, &[String], &T)> {
        self.routes
            .iter()
            .map(|r| (&r.pattern, r.methods.as_slice(), &r.target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &[&str], &'static str)]) -> Router<&'static str> {
        let mut r = Router::default();
        for (p, m, t) in routes {
            r.add(
                Pattern::parse(p).unwrap(),
                m.iter().map(|s| s.to_string()).collect(),
                *t,
            )
            .unwrap();
        }
        r
    }

    fn params(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn literal_param_and_rest() {
        let r = router(&[
            ("/.netlify/functions/hello", &[], "hello"),
            ("/api/items/:id", &["GET"], "items"),
            ("/files/*", &[], "files"),
        ]);
        assert_eq!(
            r.route("GET", "/.netlify/functions/hello"),
            Match::Found(&"hello", vec![])
        );
        assert_eq!(
            r.route("GET", "/.netlify/functions/hello/"),
            Match::Found(&"hello", vec![])
        );
        assert_eq!(
            r.route("GET", "/api/items/42"),
            Match::Found(&"items", params(&[("id", "42")]))
        );
        assert_eq!(
            r.route("GET", "/files/a/b.txt"),
            Match::Found(&"files", params(&[("*", "a/b.txt")]))
        );
        assert_eq!(
            r.route("GET", "/files"),
            Match::Found(&"files", params(&[("*", "")]))
        );
        assert_eq!(r.route("GET", "/api/items"), Match::NotFound);
        assert_eq!(r.route("GET", "/api/items/42/x"), Match::NotFound);
        assert_eq!(r.route("GET", "/nope"), Match::NotFound);
    }

    #[test]
    fn method_filter_reports_allowed_methods() {
        let r = router(&[
            ("/api/items/:id", &["GET", "PUT"], "items"),
            ("/api/items/:id", &["DELETE"], "del"),
        ]);
        assert_eq!(
            r.route("DELETE", "/api/items/1"),
            Match::Found(&"del", params(&[("id", "1")]))
        );
        assert_eq!(
            r.route("POST", "/api/items/1"),
            Match::MethodNotAllowed(vec!["DELETE".into(), "GET".into(), "PUT".into()])
        );
    }

    #[test]
    fn most_specific_route_wins_regardless_of_order() {
        let r = router(&[
            ("/a/*", &[], "rest"),
            ("/a/:x", &[], "param"),
            ("/a/b", &[], "literal"),
        ]);
        assert_eq!(r.route("GET", "/a/b"), Match::Found(&"literal", vec![]));
        assert_eq!(
            r.route("GET", "/a/c"),
            Match::Found(&"param", params(&[("x", "c")]))
        );
        assert_eq!(
            r.route("GET", "/a/c/d"),
            Match::Found(&"rest", params(&[("*", "c/d")]))
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let mut r = router(&[("/a/:x", &["GET"], "one")]);
        let e = r
            .add(Pattern::parse("/a/:y").unwrap(), vec!["GET".into()], "two")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "route \"/a/:y\" of two duplicates the route of one"
        );
        // Disjoint methods on the same shape are fine.
        r.add(
            Pattern::parse("/a/:y").unwrap(),
            vec!["POST".into()],
            "three",
        )
        .unwrap();
    }

    #[test]
    fn malformed_patterns() {
        assert!(
            Pattern::parse("a/b")
                .unwrap_err()
                .to_string()
                .contains("must start with `/`")
        );
        assert!(
            Pattern::parse("/a/*/b")
                .unwrap_err()
                .to_string()
                .contains("last segment")
        );
        assert!(
            Pattern::parse("/a/:")
                .unwrap_err()
                .to_string()
                .contains("needs a name")
        );
        assert!(
            Pattern::parse("/a//b")
                .unwrap_err()
                .to_string()
                .contains("empty segment")
        );
    }
}
