//! Routing: maps a method and a path to a target. Pure: no hyper, no wasmtime.
//!
//! Routes are [`Pattern`]s (the same type `_redirects` uses); `*` captures the rest as `*`.
//! The most specific route wins: more literal segments first, then more parameters, then no
//! wildcard. Two routes with the same shape and overlapping methods are rejected when added.

use std::fmt;

use crate::config::pattern::Pattern;

/// Another route already answers the same paths and methods.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {pattern:?} of {target} duplicates the route of {other}")]
pub struct DuplicateRoute {
    /// The pattern as written.
    pub pattern: String,
    /// The route being added.
    pub target: String,
    /// The route already there.
    pub other: String,
}

struct Route<T> {
    pattern: Pattern,
    /// Upper-case method names; empty = any method.
    methods: Vec<String>,
    /// Paths this route leaves to the next one that matches (`excluded_path`).
    excluded: std::sync::Arc<[Pattern]>,
    target: T,
}

/// The result of routing one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Match<'a, T> {
    /// A route answers: its target, the captured parameters in pattern order, and its pattern
    /// as written (a trace's `http.route`).
    Found(&'a T, Vec<(String, String)>, &'a str),
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
    ) -> Result<(), DuplicateRoute> {
        self.add_excluding(pattern, methods, std::sync::Arc::new([]), target)
    }

    /// [`Router::add`] a route that does not answer the `excluded` paths: a request for one
    /// goes on to the next route that matches, or `404`.
    pub fn add_excluding(
        &mut self,
        pattern: Pattern,
        methods: Vec<String>,
        excluded: std::sync::Arc<[Pattern]>,
        target: T,
    ) -> Result<(), DuplicateRoute> {
        if let Some(other) = self.routes.iter().find(|r| {
            r.pattern.same_shape(&pattern)
                && (r.methods.is_empty()
                    || methods.is_empty()
                    || r.methods.iter().any(|m| methods.contains(m)))
        }) {
            return Err(DuplicateRoute {
                pattern: pattern.as_str().to_string(),
                target: target.to_string(),
                other: other.target.to_string(),
            });
        }
        self.routes.push(Route {
            pattern,
            methods,
            excluded,
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
            let Some(captures) = route.pattern.matches(path) else {
                continue;
            };
            if route.excluded.iter().any(|e| e.matches(path).is_some()) {
                continue;
            }
            if route.methods.is_empty() || route.methods.iter().any(|m| m == method) {
                let params = captures
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                return Match::Found(&route.target, params, route.pattern.as_str());
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
            Match::Found(&"hello", vec![], "/.netlify/functions/hello")
        );
        assert_eq!(
            r.route("GET", "/.netlify/functions/hello/"),
            Match::Found(&"hello", vec![], "/.netlify/functions/hello")
        );
        assert_eq!(
            r.route("GET", "/api/items/42"),
            Match::Found(&"items", params(&[("id", "42")]), "/api/items/:id")
        );
        assert_eq!(
            r.route("GET", "/files/a/b.txt"),
            Match::Found(&"files", params(&[("*", "a/b.txt")]), "/files/*")
        );
        assert_eq!(
            r.route("GET", "/files"),
            Match::Found(&"files", params(&[("*", "")]), "/files/*")
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
            Match::Found(&"del", params(&[("id", "1")]), "/api/items/:id")
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
        assert_eq!(
            r.route("GET", "/a/b"),
            Match::Found(&"literal", vec![], "/a/b")
        );
        assert_eq!(
            r.route("GET", "/a/c"),
            Match::Found(&"param", params(&[("x", "c")]), "/a/:x")
        );
        assert_eq!(
            r.route("GET", "/a/c/d"),
            Match::Found(&"rest", params(&[("*", "c/d")]), "/a/*")
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
    fn excluded_paths_fall_through_to_the_next_route_or_404() {
        let mut r = Router::default();
        let p = |s: &str| Pattern::parse(s).unwrap();
        r.add_excluding(
            p("/api/*"),
            vec![],
            vec![p("/api/health"), p("/api/static/*")].into(),
            "api",
        )
        .unwrap();
        r.add(p("/api/health"), vec![], "health").unwrap();
        assert_eq!(
            r.route("GET", "/api/items"),
            Match::Found(&"api", params(&[("*", "items")]), "/api/*")
        );
        assert_eq!(
            r.route("GET", "/api/health"),
            Match::Found(&"health", vec![], "/api/health")
        );
        assert_eq!(r.route("GET", "/api/static/a.css"), Match::NotFound);
        assert_eq!(r.route("GET", "/api/static"), Match::NotFound);
        // A less specific route takes what the more specific one leaves.
        r.add(p("/*"), vec![], "site").unwrap();
        assert_eq!(
            r.route("GET", "/api/static/a.css"),
            Match::Found(&"site", params(&[("*", "api/static/a.css")]), "/*")
        );
    }

    /// Regression: a function declaring `path = "/api/"` was listed but never answered.
    #[test]
    fn trailing_slash_route_api_answers() {
        let r = router(&[("/api/", &[], "api")]);
        assert_eq!(
            r.route("GET", "/api/"),
            Match::Found(&"api", vec![], "/api/")
        );
        assert_eq!(
            r.route("GET", "/api"),
            Match::Found(&"api", vec![], "/api/")
        );
    }
}
