//! Property tests of what a shop's data and a webhook's configuration can
//! reach: template rendering, the template filters that escape, Ellity's
//! `#a.b#` variables, the URL a request goes to (GET data in the query), and
//! the compact form of fired JSON.
//!
//! Each property runs `PROPTEST_CASES` cases (256 unless set), which takes
//! well under a second per property; `PROPTEST_CASES=100000 cargo test -p
//! herald-core --test properties` searches longer.

use herald_core::payload::compact_json;
use herald_core::ssrf::AddressPolicy;
use herald_core::template::{EventInfo, TemplateContext, TemplateEngine};
use herald_core::webhook::{NewWebhookInput, SaveRules};
use herald_core::{Method, Payload};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Map, Value};

/// Cases: proptest's default, which reads `PROPTEST_CASES` (256 unless set).
fn config() -> ProptestConfig {
    ProptestConfig {
        // Failing inputs are kept next to this file, in
        // properties.proptest-regressions, and replayed first.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

fn event() -> EventInfo {
    EventInfo {
        name: "order.created".into(),
        tenant: "shop-1".into(),
        delivery_id: uuid::Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0001),
        attempt: 1,
        fired_at_unix_ms: 1_795_435_200_123,
    }
}

fn context(payload: &Payload) -> TemplateContext {
    TemplateContext::new(payload, event())
}

// ---------------------------------------------------------------------------
// Strategies.

/// Numbers at the edges, where filters overflow if they are going to.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        Just(Value::from(i64::MIN)),
        Just(Value::from(i64::MAX)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(0)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

/// Keys templates are likely to name, and any others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "items", "size", "first", "n", "s"])
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Any JSON document, up to a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    json_value_with_keys(6)
}

/// Like [`json_value`], with fewer than `max_keys` keys per object.
fn json_value_with_keys(max_keys: usize) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..max_keys)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// An object with the fields the generated templates name, so that
/// filters get to work on them: `s` is always a string and `n` a number.
fn shaped() -> impl Strategy<Value = Payload> {
    (
        json_value(),
        json_value(),
        prop::collection::vec(json_value(), 0..4),
        any::<String>(),
        number(),
    )
        .prop_map(|(a, b, items, s, n)| {
            let doc = serde_json::json!({ "a": a, "b": b, "items": items, "s": s, "n": n });
            Payload::Json(doc.to_string())
        })
}

/// What a shop may fire: any text, any JSON document, or [`shaped`] data.
fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        1 => any::<String>().prop_map(Payload::Text),
        1 => json_value().prop_map(|v| Payload::Json(v.to_string())),
        2 => shaped(),
    ]
}

/// Pieces of templates: markup, names, filters with edge-case arguments,
/// tags, Ellity variables and stray characters. Ranges (`(1..n)`) are left
/// out: a loop over a huge range is slow by design, not a bug found here.
fn fragment(with_clock: bool) -> impl Strategy<Value = String> {
    let mut pieces = vec![
        "{{",
        "}}",
        "{%",
        "%}",
        "{{-",
        "-}}",
        " data",
        " item",
        " event",
        ".a",
        ".b",
        ".items",
        ".s",
        ".n",
        "[0]",
        "[-1]",
        "[99]",
        ".size",
        ".first",
        ".last",
        " event.name",
        " event.attempt",
        " | json_escape",
        " | url_encode",
        " | url_decode",
        " | url_escape",
        " | url_param_escape",
        " | json",
        " | upcase",
        " | default: \"x\"",
        " | append: data.a",
        " | truncate: ",
        " | slice: ",
        " | plus: ",
        " | minus: ",
        " | times: ",
        " | divided_by: ",
        " | modulo: ",
        " | abs",
        " | at_least: ",
        " | round: ",
        " | split: \",\"",
        " | join: \"-\"",
        " | size",
        " | first",
        " | sort",
        " | reverse",
        " | escape",
        " | strip_html",
        " | newline_to_br",
        " | replace: \"a\", \"b\"",
        " | truncatewords: ",
        " | map: \"a\"",
        " | where: \"a\"",
        " 0",
        " -1",
        " 1",
        " 9223372036854775807",
        " -9223372036854775808",
        " 1e308",
        " 0.0",
        " \"s\"",
        " if",
        " elsif",
        " else",
        " endif",
        " for x in",
        " limit:",
        " offset:",
        " reversed",
        " endfor",
        " assign x =",
        " x",
        " x.a",
        " capture c",
        " endcapture",
        " case",
        " when",
        " endcase",
        " raw",
        " endraw",
        " cycle \"a\", \"b\"",
        " increment i",
        " comment",
        " endcomment",
        " unless",
        " endunless",
        " ==",
        " !=",
        " <",
        " contains",
        " and",
        " or",
        " break",
        " include \"p\"",
        "#a#",
        "#a.b#",
        "#items.0#",
        "#s#",
        "#",
        " ",
        "\n",
        "\"",
        "'",
        "x",
        ",",
        "ü",
        "}",
        "{",
        "%",
    ];
    if with_clock {
        pieces.extend([" \"now\"", " | date: \"%Y-%m-%d %s\""]);
    }
    prop_oneof![
        8 => prop::sample::select(pieces).prop_map(str::to_owned),
        1 => ".{0,3}",
    ]
}

/// A well-formed template: literal text, outputs with filter chains whose
/// arguments come from the data too, Ellity variables, `if`, `for` and
/// `assign`. Most of these compile, so rendering gets exercised.
///
/// Without `copies`, leaves out what makes Liquid copy a value into its own
/// types: `for` and `assign`, and filters on anything but the scalars of
/// [`shaped`] data (`truncate`, `default`, `first`... return their input
/// copied). See [`rendering_is_deterministic`].
fn well_formed(copies: bool) -> impl Strategy<Value = String> {
    let scalars = vec![
        "data.s",
        "data.n",
        "event.name",
        "event.attempt",
        "event.fired_at",
        "\"s\"",
        "5",
        "-1",
        "9223372036854775807",
        "1.5",
        "nil",
    ];
    let mut values = vec![
        "data",
        "item",
        "data.a",
        "data.b",
        "data.items",
        "data.items[0]",
        "data.a.b",
        "data.items.first",
        "data.size",
        "x",
    ];
    values.extend(scalars.iter().copied());
    let value = prop::sample::select(values);
    let filter = prop::sample::select(vec![
        " | json_escape",
        " | url_encode",
        " | url_decode",
        " | url_escape",
        " | url_param_escape",
        " | json",
        " | upcase",
        " | size",
        " | first",
        " | last",
        " | plus: 1",
        " | times: -1",
        " | divided_by: 3",
        " | modulo: 7",
        " | abs",
        " | ceil",
        " | truncate: 3",
        " | slice: 1, 2",
        " | split: \",\"",
        " | join: \"-\"",
        " | default: \"x\"",
        " | append: data.s",
        " | plus: data.n",
        " | minus: data.n",
        " | times: data.n",
        " | divided_by: data.n",
        " | modulo: data.n",
        " | slice: data.n",
        " | truncate: data.n",
        " | at_least: data.n",
        " | round: data.n",
        " | truncatewords: data.n",
        " | sort",
        " | reverse",
        " | map: \"a\"",
        " | where: \"a\"",
        " | escape",
        " | strip",
        " | compact",
        " | uniq",
        " | date: \"%Y-%m-%d\"",
        " | divided_by: 0",
        " | modulo: 0",
    ]);
    let filters = prop::collection::vec(filter, 0..4).prop_map(|f| f.concat());
    let output = if copies {
        (value.clone(), filters.clone())
            .prop_map(|(v, f)| format!("{{{{ {v}{f} }}}}"))
            .boxed()
    } else {
        prop_oneof![
            value.clone().prop_map(|v| format!("{{{{ {v} }}}}")),
            (prop::sample::select(scalars), filters.clone())
                .prop_map(|(v, f)| format!("{{{{ {v}{f} }}}}")),
        ]
        .boxed()
    };
    let plain = prop_oneof![
        "[^{}#%]{0,6}",
        output,
        ellity_path().prop_map(|p| format!("#{}#", p.join("."))),
        (value.clone(), "[a-z]{0,3}", "[a-z]{0,3}")
            .prop_map(|(v, a, b)| format!("{{% if {v} %}}{a}{{% else %}}{b}{{% endif %}}")),
    ];
    let copying = prop_oneof![
        (value.clone(), filters.clone()).prop_map(|(v, f)| {
            format!("{{% for x in {v} limit: 4 %}}{{{{ x{f} }}}},{{% endfor %}}")
        }),
        (value, filters).prop_map(|(v, f)| format!("{{% assign x = {v}{f} %}}{{{{ x }}}}")),
    ];
    let chunk = if copies {
        prop_oneof![3 => plain, 1 => copying].boxed()
    } else {
        plain.boxed()
    };
    prop::collection::vec(chunk, 0..6).prop_map(|c| c.concat())
}

fn template(with_clock: bool) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => well_formed(true),
        4 => prop::collection::vec(fragment(with_clock), 0..16).prop_map(|p| p.concat()),
        1 => any::<String>(),
    ]
}

/// An Ellity path: an identifier, then segments that may be indexes
/// (`items.0`) or start with a digit (`a.2fa`).
fn ellity_path() -> impl Strategy<Value = Vec<String>> {
    let first = "[A-Za-z_][A-Za-z0-9_]{0,6}";
    let rest = prop::collection::vec(
        prop_oneof![
            "[0-9]",
            "[A-Za-z_][A-Za-z0-9_]{0,6}",
            "[0-9][A-Za-z_][A-Za-z0-9_]{0,4}",
        ],
        0..4,
    );
    (first, rest).prop_map(|(first, mut rest)| {
        rest.insert(0, first);
        rest
    })
}

/// `value` at `path` of a document: digit-only segments are array indexes.
fn place(path: &[String], value: Value) -> Value {
    path.iter().rev().fold(value, |inner, segment| {
        if let Ok(index) = segment.parse::<usize>() {
            let mut items = vec![Value::Null; index + 1];
            items[index] = inner;
            Value::Array(items)
        } else {
            let mut object = Map::new();
            object.insert(segment.clone(), inner);
            Value::Object(object)
        }
    })
}

/// A valid https URL with an optional port, path and query, the query
/// possibly ending in `?` or `&`.
fn base_url() -> impl Strategy<Value = String> {
    // One hyphen at most: `xn--` would start an (invalid) IDNA label.
    let host = "[a-z][a-z0-9]{0,5}(-[a-z0-9]{1,4})?(\\.[a-z]{2,5}){1,2}";
    let port = prop::option::of(1u16..);
    let path = "(/[A-Za-z0-9._~-]{0,8}){0,3}";
    let query = prop_oneof![
        Just(String::new()),
        Just("?".to_owned()),
        "\\?[a-z]{1,5}=[a-z0-9]{0,5}(&[a-z]{1,5}=[a-z0-9]{0,5}){0,2}&?",
    ];
    (host, port, path, query).prop_map(|(host, port, path, query)| {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("https://{host}{port}{path}{query}")
    })
}

/// What the query of `url` holds once `url` crate decoded it.
fn query_pairs(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .expect("a URL")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The URL a GET request of the sender goes to: the rendered URL template,
/// with the data appended unless the template placed it (see
/// `herald-sender`'s request builder).
fn get_url(template_source: &str, payload: &Payload) -> Option<String> {
    let template = TemplateEngine::new().compile(template_source).ok()?;
    let url = template.render(&context(payload)).ok()?;
    Some(if template.uses_data() {
        url
    } else {
        payload.append_to_url(&url)
    })
}

// ---------------------------------------------------------------------------
// Template rendering.

/// `{{ data.s | <filter> }}` with `s` as the data's `s`.
fn render_filter(filter: &str, s: &str) -> String {
    let doc = serde_json::json!({ "s": s }).to_string();
    TemplateEngine::new()
        .compile(&format!("{{{{ data.s | {filter} }}}}"))
        .unwrap()
        .render(&context(&Payload::Json(doc)))
        .unwrap()
}

/// Fails unless `out` is ASCII letters, digits, the bytes of `kept` and
/// well-formed `%XX` escapes.
fn assert_only_escapes_and(out: &str, kept: &[u8]) -> Result<(), TestCaseError> {
    let bytes = out.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            prop_assert!(
                bytes.len() > i + 2
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit(),
                "stray % in {:?}",
                out
            );
            i += 3;
        } else {
            prop_assert!(
                b.is_ascii_alphanumeric() || kept.contains(&b),
                "{:?} in {:?}",
                b as char,
                out
            );
            i += 1;
        }
    }
    Ok(())
}

fn assert_deterministic(source: &str, payload: &Payload) -> Result<(), TestCaseError> {
    let engine = TemplateEngine::new();
    if let Ok(first) = engine.compile(source) {
        let once = first.render(&context(payload));
        prop_assert_eq!(&once, &first.render(&context(payload)));
        let again = engine.compile(source).expect("compiled once already");
        prop_assert_eq!(&once, &again.render(&context(payload)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Any source either compiles or is refused, and a compiled template
    /// renders or fails with an error, whatever the data: never a panic.
    #[test]
    fn rendering_never_panics(source in template(true), payload in payload()) {
        if let Ok(compiled) = TemplateEngine::new().compile(&source) {
            let ctx = context(&payload);
            let _ = compiled.render(&ctx);
            let _ = compiled.render_json(&ctx);
        }
    }

    /// The same template and data render to the same output (or the same
    /// error), also compiled again and with a context built again, as long
    /// as no object with several keys is copied into Liquid's own values.
    ///
    /// Known limit, left to the template work: `for` over an object,
    /// `assign`, and filters that return their input (`default`, `first`,
    /// `sort`...) copy the data into liquid-core's `Object`, a `HashMap`
    /// with random iteration order, so printing such a copy whole (`{{ x }}`,
    /// `{{ x | json }}`) orders its keys differently from render to render.
    /// Hence two properties: any template over data whose objects have at
    /// most one key, and any data under templates that make no copies.
    #[test]
    fn rendering_is_deterministic(
        source in template(false),
        payload in prop_oneof![
            any::<String>().prop_map(Payload::Text),
            json_value_with_keys(2).prop_map(|v| Payload::Json(v.to_string())),
        ],
    ) {
        assert_deterministic(&source, &payload)?;
    }

    /// See [`rendering_is_deterministic`].
    #[test]
    fn rendering_data_without_copies_is_deterministic(
        source in well_formed(false),
        payload in prop_oneof![any::<String>().prop_map(Payload::Text), shaped()],
    ) {
        assert_deterministic(&source, &payload)?;
    }

    /// `json_escape` of any string gives the inside of a JSON string literal
    /// that reads back as the same string; of any other value, a valid one.
    #[test]
    fn json_escape_makes_valid_json_string_content(s in any::<String>(), v in json_value()) {
        let doc = serde_json::json!({ "s": s, "v": v }).to_string();
        let ctx = context(&Payload::Json(doc));
        let engine = TemplateEngine::new();
        let escaped = engine
            .compile(r#""{{ data.s | json_escape }}""#)
            .unwrap()
            .render(&ctx)
            .unwrap();
        prop_assert_eq!(serde_json::from_str::<String>(&escaped).unwrap(), s.clone());
        let body = engine
            .compile(r#"{"v": "{{ data.v | json_escape }}"}"#)
            .unwrap()
            .render_json(&ctx);
        prop_assert!(body.is_ok(), "{:?}", body);
        // Text data is a string too.
        let text = engine
            .compile(r#""{{ data | json_escape }}""#)
            .unwrap()
            .render(&context(&Payload::Text(s.clone())))
            .unwrap();
        prop_assert_eq!(serde_json::from_str::<String>(&text).unwrap(), s);
    }

    /// `url_encode` leaves only unreserved characters, `+` (a space, as in
    /// a form body) and `%XX` escapes, and decoding it as a form value gives
    /// the value back.
    #[test]
    fn url_encode_leaves_only_url_safe_characters(s in any::<String>()) {
        let out = render_filter("url_encode", &s);
        assert_only_escapes_and(&out, b"-._~+")?;
        prop_assert_eq!(out.matches('+').count(), s.matches(' ').count());
        let spaced = out.replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8().unwrap();
        prop_assert_eq!(decoded.as_ref(), s.as_str());
    }

    /// `url_escape` and `url_param_escape` leave only the characters
    /// Shopify documents as kept (`url_param_escape` without `&`) and
    /// `%XX` escapes, and percent-decoding gives the value back.
    #[test]
    fn url_escapes_leave_only_their_characters(s in any::<String>()) {
        for (filter, kept) in [
            ("url_escape", &b"-_.!~*'();/?:@&=+$,[]"[..]),
            ("url_param_escape", &b"-_.!~*'();/?:@=+$,[]"[..]),
        ] {
            let out = render_filter(filter, &s);
            assert_only_escapes_and(&out, kept)?;
            let decoded = percent_encoding::percent_decode_str(&out).decode_utf8().unwrap();
            prop_assert_eq!(decoded.as_ref(), s.as_str(), "{}", filter);
        }
    }

    /// `#a.b#` in literal text is replaced by the value at that path, the
    /// text around it stays exactly as written, and it means the same as
    /// Liquid's `{{ data.a.b }}`.
    #[test]
    fn ellity_variables_round_trip(
        path in ellity_path(),
        value in any::<String>(),
        prefix in "[^#{}%]{0,12}",
        suffix in "[^#{}%]{0,12}",
    ) {
        let dotted = path.join(".");
        let doc = place(&path, Value::String(value.clone())).to_string();
        let ctx = context(&Payload::Json(doc));
        let engine = TemplateEngine::new();
        let ellity = engine.compile(&format!("{prefix}#{dotted}#{suffix}")).unwrap();
        prop_assert!(ellity.uses_data());
        prop_assert_eq!(ellity.render(&ctx).unwrap(), format!("{prefix}{value}{suffix}"));
        // A missing path renders empty, and the literal text stays.
        let empty = context(&Payload::Json("{}".into()));
        prop_assert_eq!(ellity.render(&empty).unwrap(), format!("{prefix}{suffix}"));
    }
}

// ---------------------------------------------------------------------------
// URL building: where GET and DELETE data go.

proptest! {
    #![proptest_config(config())]

    /// Compacting any JSON document, pretty-printed or already compact,
    /// gives what serde_json writes for it: valid, compact and the same
    /// value.
    #[test]
    fn compacting_json_equals_serde_json_compact_output(value in json_value()) {
        let compact = serde_json::to_string(&value).expect("serialise");
        let pretty = serde_json::to_string_pretty(&value).expect("serialise");
        prop_assert_eq!(compact_json(&pretty).into_owned(), compact.clone());
        prop_assert_eq!(compact_json(&compact).into_owned(), compact);
    }

    /// Any data appended to a valid URL gives a URL that both `http` (what
    /// the sender sends with) and `url` parse, with the host and path the
    /// webhook configured: data only ever lands in the query.
    #[test]
    fn appended_data_stays_in_the_query(base in base_url(), payload in payload()) {
        let url = payload.append_to_url(&base);
        let uri: http::Uri = url.parse().map_err(|e| {
            TestCaseError::fail(format!("{url:?} does not parse: {e}"))
        })?;
        let configured: http::Uri = base.parse().unwrap();
        prop_assert_eq!(uri.host(), configured.host());
        prop_assert_eq!(uri.port_u16(), configured.port_u16());
        prop_assert_eq!(uri.path(), configured.path());
        let parsed = url::Url::parse(&url);
        prop_assert!(parsed.is_ok(), "{:?}: {:?}", url, parsed);
        prop_assert!(parsed.unwrap().fragment().is_none(), "{:?} has a fragment", url);
    }

    /// A JSON object becomes one query parameter per field, after the
    /// URL's own: strings as they are, null as empty, anything else as
    /// compact JSON; decoding the query gives them back.
    #[test]
    fn json_objects_round_trip_through_the_query(
        base in base_url(),
        fields in prop::collection::vec((key(), json_value()), 0..8),
    ) {
        let object: Map<String, Value> = fields.into_iter().collect();
        let payload = Payload::Json(Value::Object(object.clone()).to_string());
        let url = payload.append_to_url(&base);
        let mut expected = query_pairs(&base);
        expected.extend(object.iter().map(|(name, value)| {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (name.clone(), value)
        }));
        prop_assert_eq!(query_pairs(&url), expected);
    }

    /// A URL template that places a value with `url_encode` gives a URL
    /// whose parameter reads back as the value.
    #[test]
    fn url_encoded_values_round_trip(base in base_url(), s in any::<String>()) {
        let separator = if base.contains('?') { if base.ends_with(['?', '&']) { "" } else { "&" } } else { "?" };
        let source = format!("{base}{separator}q={{{{ data.s | url_encode }}}}");
        let payload = Payload::Json(serde_json::json!({ "s": s }).to_string());
        let url = get_url(&source, &payload).expect("renders");
        prop_assert!(url.parse::<http::Uri>().is_ok(), "{:?}", url);
        let pairs = query_pairs(&url);
        prop_assert_eq!(pairs.last(), Some(&("q".to_owned(), s)));
    }

    /// Whatever the URL template and the data, building the GET URL ends in
    /// a URL or an error (which the sender records as the attempt's error),
    /// never a panic.
    #[test]
    fn building_a_url_never_panics(source in template(true), payload in payload()) {
        let source = format!("https://hooks.example/{source}");
        if let Some(url) = get_url(&source, &payload) {
            let _ = url.parse::<http::Uri>();
        }
    }
}

// ---------------------------------------------------------------------------
// Validation at save time.

fn with_rules<T>(f: impl FnOnce(&SaveRules<'_>) -> T) -> T {
    let templates = TemplateEngine::new();
    let addresses = AddressPolicy::default();
    f(&SaveRules {
        allow_http: false,
        templates: &templates,
        addresses: &addresses,
    })
}

/// URL-like text: a scheme and host that are often valid, then any path.
fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![Just("https://"), Just("http://"), Just("ftp://"), Just(""),];
    let host = prop_oneof![
        "[a-z]{1,8}\\.example",
        Just("10.0.0.1".to_owned()),
        Just("[::1]".to_owned()),
        ".{0,8}",
    ];
    (scheme, host, ".{0,24}").prop_map(|(s, h, rest)| format!("{s}{h}/{rest}"))
}

proptest! {
    #![proptest_config(config())]

    /// Any input is accepted or refused with an error that names a field,
    /// never a panic.
    #[test]
    fn validation_never_panics_and_names_the_field(
        url in url_like(),
        event in prop_oneof![Just("order.created".to_owned()), ".{0,12}"],
        method in prop_oneof![Just(String::new()), "[A-Za-z]{0,7}"],
        body_template in prop_oneof![Just(String::new()), template(false)],
        header in prop::option::of((".{0,8}", ".{0,12}")),
        body_mode in prop_oneof![Just(String::new()), Just("json".to_owned()), "[a-z]{0,8}"],
        timeout_ms in prop::option::of(any::<u32>()),
    ) {
        let input = NewWebhookInput {
            event,
            url,
            method,
            body_template,
            headers: header.into_iter().collect(),
            body_mode,
            timeout_ms,
            ..Default::default()
        };
        if let Err(e) = with_rules(|rules| input.validate(rules)) {
            prop_assert!(!e.field.is_empty());
            prop_assert!(e.to_string().starts_with(&format!("{}: ", e.field)), "{}", e);
        }
    }

    /// A static URL accepted at save time, with any data appended (GET),
    /// is a URL the sender can send to.
    #[test]
    fn accepted_urls_stay_sendable_with_any_data(url in url_like(), payload in payload()) {
        let input = NewWebhookInput {
            event: "order.created".into(),
            url,
            method: "GET".into(),
            ..Default::default()
        };
        let Ok(saved) = with_rules(|rules| input.validate(rules)) else {
            return Ok(());
        };
        prop_assert_eq!(saved.method, Method::Get);
        if !TemplateEngine::new().compile(&saved.url).unwrap().is_static() {
            return Ok(());
        }
        let sent = payload.append_to_url(&saved.url);
        let parsed = sent.parse::<http::Uri>();
        prop_assert!(parsed.is_ok(), "saved {:?}, sending {:?}: {:?}", saved.url, sent, parsed);
    }
}
