//! `--json` prints every field of every message the CLI prints, in proto
//! order, under its proto name.
//!
//! The messages are found from the proto itself (herald-proto's descriptor
//! set): the answer of every `Ingest` and `Admin` call, and every message
//! reachable through their fields. A field added to the proto therefore
//! shows up in this test, and a message the CLI would print without knowing
//! it fails here until it is listed in `printed`.

use std::collections::BTreeSet;

use herald_cli::output::{list_events_json, list_webhooks_json, to_json, webhook_json};
use herald_proto::v1::{
    ApiKey, Attempt, CreatedApiKey, DeleteWebhookResponse, Delivery, EventInfo,
    FILE_DESCRIPTOR_SET, FireResponse, ListApiKeysResponse, ListDeliveriesResponse,
    ListStoppedKeysResponse, PreviousSigningSecret, ResendResponse, ResumeOrderingKeyResponse,
    SigningSecret, StoppedKey, WebhookSummary,
};
use herald_proto::v1::{
    Caller, CircuitBreaker, RateLimit, TimelineBucket, WebhookHealth, WebhookTimeline,
};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::Value;

const PACKAGE: &str = ".herald.v1.";

/// What `--json` prints for a default (all unset) `name`, the way the CLI
/// prints it; `None` for a message this test does not know.
fn printed(name: &str) -> Option<Value> {
    Some(match name {
        "Webhook" => webhook_json(&Default::default()),
        "ListWebhooksResponse" => list_webhooks_json(&Default::default()),
        "ListEventsResponse" => list_events_json(&Default::default()),
        "EventInfo" => to_json(&EventInfo::default()),
        "FireResponse" => to_json(&FireResponse::default()),
        "DeleteWebhookResponse" => to_json(&DeleteWebhookResponse::default()),
        "SigningSecret" => to_json(&SigningSecret::default()),
        "PreviousSigningSecret" => to_json(&PreviousSigningSecret::default()),
        "Delivery" => to_json(&Delivery::default()),
        "Attempt" => to_json(&Attempt::default()),
        "ListDeliveriesResponse" => to_json(&ListDeliveriesResponse::default()),
        "WebhookSummary" => to_json(&WebhookSummary::default()),
        "ResendResponse" => to_json(&ResendResponse::default()),
        "ApiKey" => to_json(&ApiKey::default()),
        "CreatedApiKey" => to_json(&CreatedApiKey::default()),
        "ListApiKeysResponse" => to_json(&ListApiKeysResponse::default()),
        "ResumeOrderingKeyResponse" => to_json(&ResumeOrderingKeyResponse::default()),
        "ListStoppedKeysResponse" => to_json(&ListStoppedKeysResponse::default()),
        "StoppedKey" => to_json(&StoppedKey::default()),
        "WebhookTimeline" => to_json(&WebhookTimeline::default()),
        "TimelineBucket" => to_json(&TimelineBucket::default()),
        "Caller" => to_json(&Caller::default()),
        "RateLimit" => to_json(&RateLimit::default()),
        "CircuitBreaker" => to_json(&CircuitBreaker::default()),
        "WebhookHealth" => to_json(&WebhookHealth::default()),
        _ => return None,
    })
}

fn descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("herald-proto's descriptor set decodes")
}

fn message<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a DescriptorProto {
    set.file
        .iter()
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("message {name} is not in herald.proto"))
}

/// Whether `field` of `message` is a proto map (a repeated generated
/// `...Entry` message nested in `message`).
fn is_map(message: &DescriptorProto, field: &FieldDescriptorProto) -> bool {
    field.label() == Label::Repeated
        && field.r#type() == Type::Message
        && message.nested_type.iter().any(|nested| {
            nested.options.as_ref().is_some_and(|o| o.map_entry())
                && field.type_name().ends_with(&format!(".{}", nested.name()))
        })
}

/// The answers of every API call and the messages inside them.
fn printed_messages(set: &FileDescriptorSet) -> BTreeSet<String> {
    let mut todo: Vec<String> = set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .filter(|s| matches!(s.name(), "Ingest" | "Admin"))
        .flat_map(|s| &s.method)
        .map(|m| m.output_type().trim_start_matches(PACKAGE).to_owned())
        .collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let proto = message(set, &name);
        for field in &proto.field {
            if field.r#type() == Type::Message && !is_map(proto, field) {
                todo.push(field.type_name().trim_start_matches(PACKAGE).to_owned());
            }
        }
    }
    seen
}

#[test]
fn every_field_of_every_printed_message_appears_in_proto_order() {
    let set = descriptors();
    let names = printed_messages(&set);
    assert!(
        names.len() >= 16,
        "expected every answer message, found {names:?}"
    );
    for name in &names {
        let value = printed(name).unwrap_or_else(|| {
            panic!("the CLI prints {name} with --json: add it to `printed` in this test")
        });
        let Value::Object(object) = &value else {
            panic!("{name} is not printed as a JSON object: {value}");
        };
        let printed_fields: Vec<&str> = object.keys().map(String::as_str).collect();
        let proto = message(&set, name);
        let proto_fields: Vec<&str> = proto.field.iter().map(|f| f.name()).collect();
        assert_eq!(printed_fields, proto_fields, "fields of {name}");

        for field in &proto.field {
            let printed = &object[field.name()];
            let repeated = field.label() == Label::Repeated;
            let is_map =
                repeated && field.r#type() == Type::Message && field.type_name().ends_with("Entry");
            if is_map {
                assert!(printed.is_object(), "{name}.{}: {printed}", field.name());
            } else if repeated {
                assert_eq!(printed, &Value::Array(vec![]), "{name}.{}", field.name());
            } else if field.r#type() == Type::Message || field.proto3_optional() {
                assert!(
                    printed.is_null(),
                    "{name}.{}: unset is null, got {printed}",
                    field.name()
                );
            } else {
                assert!(
                    !printed.is_null(),
                    "{name}.{}: a plain field always has a value",
                    field.name()
                );
            }
        }
    }
}

#[test]
fn set_messages_print_in_full_and_maps_sorted() {
    let created = CreatedApiKey {
        key: Some(ApiKey {
            tenant: Some(String::new()),
            revoked_at_unix_ms: Some(7),
            ..Default::default()
        }),
        token: "hrk_x".into(),
    };
    let value = to_json(&created);
    let key = value["key"]
        .as_object()
        .expect("a set message is an object");
    let set = descriptors();
    let fields: Vec<&str> = message(&set, "ApiKey")
        .field
        .iter()
        .map(|f| f.name())
        .collect();
    assert_eq!(key.keys().map(String::as_str).collect::<Vec<_>>(), fields);
    assert_eq!(key["tenant"], "", "set to the default tenant, not null");
    assert_eq!(key["revoked_at_unix_ms"], 7);

    let webhook = herald_proto::v1::Webhook {
        headers: [
            ("b".to_owned(), "2".to_owned()),
            ("A".to_owned(), "1".to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_string(&webhook_json(&webhook)["headers"]).unwrap(),
        r#"{"A":"1","b":"2"}"#
    );
}
