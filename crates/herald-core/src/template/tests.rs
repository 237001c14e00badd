use super::*;
use crate::Payload;

fn engine() -> TemplateEngine {
    TemplateEngine::new()
}

fn event() -> EventInfo {
    EventInfo {
        name: "order.created".into(),
        tenant: "shop-1".into(),
        delivery_id: uuid::Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0001),
        attempt: 2,
        fired_at_unix_ms: 1_795_435_200_123,
    }
}

fn json_ctx(doc: &str) -> TemplateContext {
    TemplateContext::new(&Payload::Json(doc.into()), event())
}

fn render(src: &str, ctx: &TemplateContext) -> String {
    engine()
        .compile(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .render(ctx)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
}

#[test]
fn ellity_url() {
    let src = "https://x.example/hook?id=#customer.id#&email=#customer.email#";
    let ctx = json_ctx(r#"{"customer":{"id":7,"email":"a@b.cz"}}"#);
    assert_eq!(
        render(src, &ctx),
        "https://x.example/hook?id=7&email=a@b.cz"
    );
    let ctx = json_ctx(r#"{"customer":{"id":7}}"#);
    assert_eq!(render(src, &ctx), "https://x.example/hook?id=7&email=");
    let ctx = json_ctx(r#"{}"#);
    assert_eq!(render(src, &ctx), "https://x.example/hook?id=&email=");
}

#[test]
fn ellity_json_body() {
    let src = r##"{"email": "#customer.email#", "custom": "#custom.field#"}"##;
    let ctx = json_ctx(r#"{"customer":{"email":"a@b.cz"}}"#);
    let t = engine().compile(src).unwrap();
    assert_eq!(
        t.render_json(&ctx).unwrap(),
        r#"{"email": "a@b.cz", "custom": ""}"#
    );
}

#[test]
fn ellity_only_takes_identifier_paths() {
    let ctx = json_ctx(r#"{"a":{"b":"X"},"items":[{"n":"first"}],"2fa":"on"}"#);
    for literal in [
        "https://x.example/p#fragment",
        "# 1",
        "##",
        "a # b",
        "#a.#",
        "#.a#",
        "#1a#",
        "#a..b#",
        "#a b#",
    ] {
        let t = engine().compile(literal).unwrap();
        assert!(t.is_static(), "{literal}");
        assert_eq!(t.render(&ctx).unwrap(), literal);
    }
    assert_eq!(render("#a.b#", &ctx), "X");
    assert_eq!(render("##a.b##", &ctx), "#X#");
    assert_eq!(render("#a#b#", &ctx), r#"{"b":"X"}b#"#);
    assert_eq!(render("#items.0.n#", &ctx), "first");
    assert_eq!(render("#_x#|#a.2fa#", &ctx), "|");
    // Not replaced inside Liquid markup or raw blocks.
    assert_eq!(render(r##"{{ "#a.b#" }}"##, &ctx), "#a.b#");
    assert_eq!(render("{% raw %}#a.b#{% endraw %}#a.b#", &ctx), "#a.b#X");
    // A URL whose fragment looks like a variable is a variable.
    assert_eq!(
        render("https://x.example/#a.b#", &ctx),
        "https://x.example/X"
    );
}

#[test]
fn parts_soft_lead_body_url_encode() {
    let src = "phone={{ item.phone | url_encode }}&name={{ item.name | url_encode }}";
    let ctx = json_ctx(r#"{"phone":"+7 900 123-45-67","name":"Иван Петров"}"#);
    // As python-liquid 2.3.6 renders it: a space is `+`, a `+` is `%2B`.
    assert_eq!(
        render(src, &ctx),
        "phone=%2B7+900+123-45-67&name=%D0%98%D0%B2%D0%B0%D0%BD+%D0%9F%D0%B5%D1%82%D1%80%D0%BE%D0%B2"
    );
}

/// Inputs of the URL filter tables, with what each filter writes.
/// `url_encode`'s column is python-liquid 2.3.6's output (the Liquid
/// reference, the same as Ruby's `CGI.escape`); the other two follow
/// the character sets Shopify documents for `url_escape` and
/// `url_param_escape` (Ruby's `URI::DEFAULT_PARSER.escape`).
const URL_FILTER_CASES: &[(&str, &str, &str, &str)] = &[
    // (input, url_encode, url_escape, url_param_escape)
    (
        "Tetsuro Takara",
        "Tetsuro+Takara",
        "Tetsuro%20Takara",
        "Tetsuro%20Takara",
    ),
    (
        "john@liquid.com",
        "john%40liquid.com",
        "john@liquid.com",
        "john@liquid.com",
    ),
    ("a+b", "a%2Bb", "a+b", "a+b"),
    ("a&b=c", "a%26b%3Dc", "a&b=c", "a%26b=c"),
    (
        "Привет мир",
        "%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82+%D0%BC%D0%B8%D1%80",
        "%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82%20%D0%BC%D0%B8%D1%80",
        "%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82%20%D0%BC%D0%B8%D1%80",
    ),
    (
        "🎉 party",
        "%F0%9F%8E%89+party",
        "%F0%9F%8E%89%20party",
        "%F0%9F%8E%89%20party",
    ),
    ("/path/to?x", "%2Fpath%2Fto%3Fx", "/path/to?x", "/path/to?x"),
    ("q?x#frag", "q%3Fx%23frag", "q?x%23frag", "q?x%23frag"),
    ("100% sure", "100%25+sure", "100%25%20sure", "100%25%20sure"),
    ("~_.-*", "~_.-%2A", "~_.-*", "~_.-*"),
    ("tab\there", "tab%09here", "tab%09here", "tab%09here"),
    (
        "it's (ok)!",
        "it%27s+%28ok%29%21",
        "it's%20(ok)!",
        "it's%20(ok)!",
    ),
    // Shopify's documentation examples of url_escape and
    // url_param_escape.
    (
        "<p>Health & Love potions</p>",
        "%3Cp%3EHealth+%26+Love+potions%3C%2Fp%3E",
        "%3Cp%3EHealth%20&%20Love%20potions%3C/p%3E",
        "%3Cp%3EHealth%20%26%20Love%20potions%3C/p%3E",
    ),
    ("", "", "", ""),
];

#[test]
fn url_filters_match_the_liquid_reference_byte_for_byte() {
    for &(input, encoded, escaped, param_escaped) in URL_FILTER_CASES {
        let ctx = json_ctx(&serde_json::json!({ "s": input }).to_string());
        for (filter, expected) in [
            ("url_encode", encoded),
            ("url_escape", escaped),
            ("url_param_escape", param_escaped),
        ] {
            assert_eq!(
                render(&format!("{{{{ data.s | {filter} }}}}"), &ctx),
                expected,
                "{input:?} | {filter}"
            );
        }
        // Text data goes through the same filters.
        let text = TemplateContext::new(&Payload::Text(input.into()), event());
        assert_eq!(render("{{ data | url_encode }}", &text), encoded);
    }
    // A literal in the template, as Shopify's documentation writes it.
    let ctx = json_ctx("{}");
    assert_eq!(
        render("{{ '<p>Health & Love potions</p>' | url_escape }}", &ctx),
        "%3Cp%3EHealth%20&%20Love%20potions%3C/p%3E"
    );
    assert_eq!(
        render(
            "{{ '<p>Health & Love potions</p>' | url_param_escape }}",
            &ctx
        ),
        "%3Cp%3EHealth%20%26%20Love%20potions%3C/p%3E"
    );
    // Numbers are encoded as they render; nil renders empty.
    let ctx = json_ctx(r#"{"n": 12.50, "i": -3}"#);
    assert_eq!(
        render(
            "{{ data.n | url_encode }}|{{ data.i | url_escape }}|{{ data.missing | url_encode }}|{{ data.missing | url_escape }}|{{ data.missing | url_param_escape }}|{{ nil | url_encode }}",
            &ctx
        ),
        "12.5|-3||||"
    );
}

#[test]
fn url_decode_undoes_url_encode() {
    for &(input, encoded, escaped, param_escaped) in URL_FILTER_CASES {
        let ctx = json_ctx(
            &serde_json::json!({ "e": encoded, "u": escaped, "p": param_escaped, "s": input })
                .to_string(),
        );
        assert_eq!(render("{{ data.e | url_decode }}", &ctx), input);
        assert_eq!(
            render("{{ data.s | url_encode | url_decode }}", &ctx),
            input
        );
        // url_decode reads `+` as a space, so the escapes that keep a
        // `+` as it is only round-trip when the value has none.
        if !input.contains('+') {
            assert_eq!(render("{{ data.u | url_decode }}", &ctx), input);
            assert_eq!(render("{{ data.p | url_decode }}", &ctx), input);
        }
    }
    assert_eq!(
        render("{{ 'a+b%2Bc' | url_decode }}", &json_ctx("{}")),
        "a b+c"
    );
}

#[test]
fn json_escape_keeps_the_body_valid() {
    let note = "He said \"hi\"\\ then\nleft\ttab \u{1} end ünï";
    let doc = serde_json::json!({ "note": note }).to_string();
    let ctx = json_ctx(&doc);
    let t = engine()
        .compile(r#"{"note": "{{ data.note | json_escape }}"}"#)
        .unwrap();
    let out = t.render_json(&ctx).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["note"], note);
    assert!(out.contains("\\u0001"), "{out}");
    assert_eq!(render("{{ data.missing | json_escape }}", &ctx), "");
}

#[test]
fn json_filter() {
    let doc = r#"{"o":{"b":2,"a":[1,2.5,"x",null,true]},"s":"q\"","n":12.50,"big":18446744073709551615,"e":1e300}"#;
    let ctx = json_ctx(doc);
    assert_eq!(
        render("{{ data.o | json }}", &ctx),
        r#"{"b":2,"a":[1,2.5,"x",null,true]}"#
    );
    assert_eq!(render("{{ data.s | json }}", &ctx), r#""q\"""#);
    // Fractions are written as serde_json writes them (shortest form).
    assert_eq!(render("{{ data.n | json }}", &ctx), "12.5");
    assert_eq!(render("{{ data.n }}", &ctx), "12.5");
    assert_eq!(render("{{ data.e }}", &ctx), "1e+300");
    assert_eq!(render("{{ data.big }}", &ctx), "18446744073709551615");
    assert_eq!(render("{{ data.missing | json }}", &ctx), "null");
    assert_eq!(render("{{ 5 | json }}", &ctx), "5");
    assert_eq!(
        render("{{ data | json }}", &ctx),
        doc.replace("12.50", "12.5").replace("1e300", "1e+300")
    );
    // Nested data renders as JSON without the filter too.
    assert_eq!(render("{{ data.o.a }}", &ctx), r#"[1,2.5,"x",null,true]"#);
    let t = engine()
        .compile(r#"{"payload": {{ data | json }}}"#)
        .unwrap();
    assert!(t.render_json(&ctx).is_ok());
}

#[test]
fn event_and_text_data() {
    let ctx = json_ctx("{}");
    assert_eq!(
        render(
            "{{ event.name }}/{{ event.attempt }}/{{ event.delivery_id }}/{{ event.tenant }}",
            &ctx
        ),
        "order.created/2/01920000-0000-7000-8000-000000000001/shop-1"
    );
    assert_eq!(
        render("{{ event.fired_at }}", &ctx),
        "2026-11-23T12:00:00.123Z"
    );
    let text = TemplateContext::new(&Payload::Text("userid=42&x=1".into()), event());
    assert_eq!(
        render("{{ data }}|{{ item }}", &text),
        "userid=42&x=1|userid=42&x=1"
    );
    assert_eq!(render("{{ data.x }}", &text), "");
    assert_eq!(render("[{{ nope.x }}][{{ nope }}]", &ctx), "[][]");
}

#[test]
fn missing_values_are_empty_and_nil() {
    let ctx = json_ctx(r#"{"a":{"b":1},"list":[1,2],"orders":[{"n":1},{}],"empty":"","t":true}"#);
    assert_eq!(render("[{{ data.missing }}]", &ctx), "[]");
    assert_eq!(render("[{{ data.x.y.z }}]", &ctx), "[]");
    assert_eq!(render("[{{ data.a.c.d }}]", &ctx), "[]");
    assert_eq!(render("[{{ data.a.b.c }}]", &ctx), "[]");
    assert_eq!(
        render("[{{ data.list[5] }}][{{ data.list[5].x }}]", &ctx),
        "[][]"
    );
    assert_eq!(render("[{{ data.list[-1] }}]", &ctx), "[2]");
    assert_eq!(render(r#"{{ data.missing | default: "x" }}"#, &ctx), "x");
    assert_eq!(render(r#"{{ data.a.b | default: "x" }}"#, &ctx), "1");
    assert_eq!(render(r#"{{ data.empty | default: "x" }}"#, &ctx), "x");
    assert_eq!(
        render("{% if data.missing %}y{% else %}n{% endif %}", &ctx),
        "n"
    );
    assert_eq!(
        render("{% if data.missing == nil %}nil{% endif %}", &ctx),
        "nil"
    );
    assert_eq!(render("{% if data.t %}t{% endif %}", &ctx), "t");
    assert_eq!(
        render(
            r#"{% if data contains "a" %}a{% endif %}{% if data contains "zz" %}zz{% endif %}"#,
            &ctx
        ),
        "a"
    );
    assert_eq!(
        render(
            "{% for o in data.orders %}{{ o.n }}{{ o.nope.deeper }},{% endfor %}",
            &ctx
        ),
        "1,,"
    );
    assert_eq!(
        render("{% for x in data.list %}{{ x }},{% endfor %}", &ctx),
        "1,2,"
    );
    assert_eq!(
        render("{% for x in data.nope %}{{ x }}{% endfor %}.", &ctx),
        "."
    );
    assert_eq!(
        render("{{ data.list.size }}/{{ data.a.size }}", &ctx),
        "2/1"
    );
    assert_eq!(
        render(
            "{{ data.missing | upcase }}|{{ data.missing | url_encode }}",
            &ctx
        ),
        "|"
    );
    // A key named `size` wins over the count.
    let ctx = json_ctx(r#"{"size":"XL"}"#);
    assert_eq!(render("{{ data.size }}", &ctx), "XL");
}

#[test]
fn syntax_errors_say_where() {
    // An unclosed variable is reported where it opens.
    let err = engine().compile("{{ data.x ").unwrap_err();
    assert_eq!(
        err,
        TemplateError::Syntax {
            line: Some(1),
            column: Some(1),
            message: r#""{{" is not closed; end the variable with "}}""#.into(),
        }
    );
    let err = engine().compile("{% if %}").unwrap_err();
    assert!(matches!(err, TemplateError::Syntax { .. }), "{err:?}");
    let err = engine().compile("ok\n{{ data.x ").unwrap_err();
    assert!(err.to_string().contains("line 2, column 1"), "{err}");
    // Some Liquid errors carry no position, only what is wrong.
    let err = engine().compile("{{ data.x | nosuchfilter }}").unwrap_err();
    assert!(
        matches!(err, TemplateError::Syntax { line: None, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nosuchfilter"), "{err}");
    // Positions point into the source as written, past Ellity variables.
    let err = engine().compile("#a.b# #c# {{ data.x | }}").unwrap_err();
    let TemplateError::Syntax { line, column, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*line, Some(1));
    let column = column.expect("a column");
    assert!((11..=24).contains(&column), "{err}");
    let err = engine()
        .compile(&"x".repeat(MAX_TEMPLATE_BYTES + 1))
        .unwrap_err();
    assert!(matches!(err, TemplateError::TooLong { .. }), "{err:?}");
}

#[test]
fn static_and_data_use() {
    let e = engine();
    let t = e.compile("https://x.example/hook#top").unwrap();
    assert!(t.is_static());
    assert!(!t.uses_data());
    let t = e.compile("https://x.example/{{ event.name }}").unwrap();
    assert!(!t.is_static());
    assert!(!t.uses_data());
    for src in [
        "#customer.id#",
        "{{ data }}",
        "{{item.x}}",
        "{% if data.x %}{% endif %}",
        "{{ event.name | append: data.x }}",
        "{%- for i in item -%}{%- endfor -%}",
    ] {
        assert!(e.compile(src).unwrap().uses_data(), "{src}");
    }
    for src in [
        r#"{{ "data" }}"#,
        "{{ event.data }}",
        "{{ metadata }}",
        "{% raw %}{{ data }}{% endraw %}",
        "data item",
    ] {
        assert!(!e.compile(src).unwrap().uses_data(), "{src}");
    }
}

#[test]
fn json_bodies_must_render_json() {
    let ctx = json_ctx(r#"{"x":"a\"b"}"#);
    let t = engine().compile(r#"{"x": "{{ data.x }}"}"#).unwrap();
    let err = t.render_json(&ctx).unwrap_err();
    assert!(matches!(err, TemplateError::NotJson { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("the rendered body is not valid JSON: "),
        "{msg}"
    );
    assert!(msg.contains(r#"{"x": "a"b"}"#), "{msg}");
    assert!(render_json_body(&t, &json_ctx(r#"{"x":"ok"}"#)).is_ok());
}

#[test]
fn syntax_error_messages() {
    for (src, message) in [
        (
            "{{ data.x ",
            r#"template syntax error at line 1, column 1: "{{" is not closed; end the variable with "}}""#,
        ),
        (
            "{% if %}",
            "template syntax error at line 1, column 6: Value expected.",
        ),
        (
            "#a.b# #c# {{ data.x | }}",
            "template syntax error at line 1, column 23: expected Identifier",
        ),
        (
            "{% foo %}",
            "template syntax error at line 1, column 4: Unknown tag. (requested=foo)",
        ),
        (
            "{{ x | nosuch }}",
            "template syntax error: Unknown filter (requested filter=nosuch)",
        ),
    ] {
        assert_eq!(engine().compile(src).unwrap_err().to_string(), message);
    }
}

#[test]
fn unclosed_markup_is_named_where_it_opens() {
    let unclosed_variable = r#""{{" is not closed; end the variable with "}}""#;
    let unclosed_tag = r#""{%" is not closed; end the tag with "%}""#;
    for (src, line, column, message) in [
        ("{{ data.x ", 1, 1, unclosed_variable),
        ("{{- data.x -}", 1, 1, unclosed_variable),
        // The example in docs/requests.md, "Templates".
        (r#"{"id": {{ data.id }"#, 1, 8, unclosed_variable),
        // Closed by the other kind of delimiter.
        ("{{ data.x %}", 1, 1, unclosed_variable),
        ("{% if data.x }}y{% endif %}", 1, 1, unclosed_tag),
        ("{% if data.x ", 1, 1, unclosed_tag),
        ("  {%- if data.x ", 1, 3, unclosed_tag),
        // The next markup starts before this one ends.
        ("{{ data.a {{ data.b }}", 1, 1, unclosed_variable),
        ("{% if data.a {% endif %}", 1, 1, unclosed_tag),
        // After closed markup, on a later line, past multi-byte text.
        ("{{ data.a }}{{", 1, 13, unclosed_variable),
        (
            "first {{ data.a }}\nsecond\n  ünï {{ data.b | upcase ",
            3,
            7,
            unclosed_variable,
        ),
        ("ok\n\n{% if data.a %}x{% endif ", 3, 17, unclosed_tag),
        // Columns in the source as written, past Ellity variables.
        ("#a.b# #c# {{ data.x ", 1, 11, unclosed_variable),
    ] {
        let err = engine().compile(src).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Syntax {
                line: Some(line),
                column: Some(column),
                message: message.into(),
            },
            "{src:?}"
        );
    }
    // Errors in closed markup keep Liquid's message, also when a
    // string literal holds a delimiter.
    for src in [
        "{{ data.a | }}",
        "{{}}",
        r#"{{ "{{" }} {{ | }}"#,
        "{{ | }} {{ x",
    ] {
        let err = engine().compile(src).unwrap_err();
        let TemplateError::Syntax { message, .. } = &err else {
            panic!("{src:?}: {err:?}");
        };
        assert!(!message.contains("is not closed"), "{src:?}: {err}");
    }
    // Closed markup compiles.
    for src in [
        "{{ data.a }}{% if data.b %}{{ data.b }}{% endif %}",
        "{{- data.a -}}\n{%- if data.b -%}x{%- endif -%}",
        r#"{{ "{{" }}{{ "%}" }}"#,
    ] {
        assert!(engine().compile(src).is_ok(), "{src:?}");
    }
}

#[test]
fn render_errors_are_errors() {
    let ctx = json_ctx("{}");
    let t = engine().compile("{{ 1 | divided_by: 0 }}").unwrap();
    assert!(matches!(t.render(&ctx), Err(TemplateError::Render { .. })));
    // Found by the property tests: Liquid's integer filters panic on
    // overflow; the panic must come back as an error.
    let ctx = json_ctx(r#"{"n": -9223372036854775808}"#);
    for src in ["{{ data.n | divided_by: -1 }}", "{{ data.n | modulo: -1 }}"] {
        let t = engine().compile(src).unwrap();
        assert!(
            matches!(t.render(&ctx), Err(TemplateError::Render { .. })),
            "{src}"
        );
    }
}

#[test]
fn shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TemplateEngine>();
    assert_send_sync::<CompiledTemplate>();
    assert_send_sync::<TemplateContext>();
}

#[test]
fn rfc3339() {
    assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339_millis(1_795_435_200_123),
        "2026-11-23T12:00:00.123Z"
    );
    assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(
        rfc3339_millis(-1),
        "1970-01-01T00:00:00.000Z",
        "clamped to the epoch"
    );
}
