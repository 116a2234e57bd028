//! Property tests: the parsers fed by operators and clients — fnhost.toml, `_redirects`, route
//! patterns, CORS tables, request paths — never panic on any input, and their errors name the
//! file, line or value at fault.

use std::path::Path;

use fnhost::config::Config;
use fnhost::config::pattern::Pattern;
use fnhost::config::redirects::Rules;
use fnhost::http::rules::check_path;
use proptest::prelude::*;

/// Text that looks enough like the real thing to reach deep into the parsers.
fn toml_like() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "listen",
        "timeout",
        "memory",
        "path",
        "method",
        "background",
        "retry_delays",
        "allowed_outbound_hosts",
        "allowed_origins",
        "max_age",
        "header_timeout",
        "max_log",
        "retention",
        "env",
        "fuel",
        "on_success",
        "from",
        "to",
        "status",
        "force",
        "bogus",
    ]);
    let table = prop::sample::select(vec![
        "[server]",
        "[defaults]",
        "[functions.a]",
        "[functions.a.cors]",
        "[cors]",
        "[[redirects]]",
        "[functions]",
        "",
    ]);
    let value = prop_oneof![
        "\"[^\"\\\\]{0,12}\"".prop_map(|s| s),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("[\"1s\", \"x\"]".to_string()),
        Just("\"99999999999999999999h\"".to_string()),
        Just("{ A = \"1\" }".to_string()),
        ".{0,8}",
    ];
    prop::collection::vec((table, key, value), 0..8).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(t, k, v)| format!("{t}\n{k} = {v}\n"))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn fnhost_toml_never_panics_and_names_the_file(text in prop_oneof![toml_like(), ".{0,200}"]) {
        if let Err(e) = Config::from_str(&text, Path::new("site/fnhost.toml")) {
            prop_assert!(e.to_string().starts_with("site/fnhost.toml"), "{e}");
        }
    }

    #[test]
    fn redirects_never_panic_and_name_the_line(
        lines in prop::collection::vec(
            prop_oneof![
                "/[a-z:*/.%]{0,10} +/[a-z:*/]{0,10}( +[0-9!]{0,4})?",
                ".{0,40}",
            ],
            0..6,
        )
    ) {
        let text = lines.join("\n");
        if let Err(e) = Rules::parse(&text, Path::new("functions/_redirects")) {
            let shown = e.to_string();
            prop_assert!(shown.starts_with(&format!("functions/_redirects:{}:", e.line)), "{shown}");
            prop_assert!(e.line >= 1 && e.line <= lines.len(), "{shown}");
        }
    }

    #[test]
    fn route_patterns_never_panic_and_quote_the_pattern(text in "[/a-z:*_0-9.?#%]{0,16}") {
        if let Err(e) = Pattern::parse(&text) {
            prop_assert!(e.to_string().contains(&format!("{text:?}")), "{e}");
        }
    }

    #[test]
    fn cors_tables_never_panic_and_name_the_key(
        origin in ".{0,20}",
        method in ".{0,8}",
        credentials in any::<bool>(),
        age in ".{0,6}",
    ) {
        let text = format!(
            "[cors]\nallowed_origins = [{origin:?}]\nallowed_methods = [{method:?}]\n\
             allow_credentials = {credentials}\nmax_age = {age:?}\n"
        );
        if let Err(e) = Config::from_str(&text, Path::new("fnhost.toml")) {
            prop_assert!(e.to_string().starts_with("fnhost.toml"), "{e}");
        }
    }

    #[test]
    fn request_paths_never_panic(path in ".{0,40}") {
        let _ = check_path(&path);
    }
}
