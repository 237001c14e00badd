//! The OpenAPI 3.0 document of the JSON door, derived from the same
//! descriptors the door transcodes with, so that it cannot drift from the
//! proto: every route of [`ROUTES`], every message it reaches as a schema
//! in the proto3 canonical JSON mapping, and the proto's comments as the
//! descriptions. `docs/openapi.json` is this document, checked by a test;
//! ingest serves it at `GET /v1/openapi.json`.
//!
//! No crate turns protobuf descriptors into OpenAPI in Rust (grpc-gateway's
//! `protoc-gen-openapiv2` is a Go plugin), and the mapping is small and
//! fixed by the proto3 JSON specification, so it is written out here.

use std::collections::BTreeMap;

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};
use serde_json::{Map, Value, json};

use crate::json_door::{ROUTES, descriptors};

/// Where ingest serves the document.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The refusals a route may answer, with what each means to a caller.
const REFUSALS: &[(&str, &str)] = &[
    (
        "400",
        "INVALID_ARGUMENT or OUT_OF_RANGE: the request is wrong; the message says what to fix.",
    ),
    (
        "401",
        "UNAUTHENTICATED: no API key, or one that is unknown or revoked.",
    ),
    (
        "403",
        "PERMISSION_DENIED: the key lacks the scope, or is limited to another tenant.",
    ),
    ("404", "NOT_FOUND: no such delivery or webhook."),
    (
        "409",
        "ALREADY_EXISTS or FAILED_PRECONDITION: for example an idempotency key repeated \
         with other data.",
    ),
    (
        "413",
        "OUT_OF_RANGE: the body is larger than the door reads (HERALD_MAX_PAYLOAD_BYTES).",
    ),
    (
        "415",
        "INVALID_ARGUMENT: the body is not sent as `Content-Type: application/json`.",
    ),
    (
        "429",
        "RESOURCE_EXHAUSTED: a limit was reached; try again later.",
    ),
    (
        "503",
        "UNAVAILABLE: the broker or Postgres cannot be reached; try again (with the same \
         idempotency key for Fire).",
    ),
];

/// The OpenAPI document of the JSON door.
pub fn document() -> Value {
    let pool = descriptors();
    let mut schemas = BTreeMap::new();
    let mut paths = Map::new();
    for route in ROUTES {
        let method = method(&pool, route.grpc_path);
        collect(&method.input(), &mut schemas);
        collect(&method.output(), &mut schemas);
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({
                "description": "The answer, in the canonical JSON of the response message.",
                "content": {"application/json": {"schema": reference(&method.output())}},
            }),
        );
        for (status, _) in REFUSALS {
            responses.insert(
                (*status).into(),
                json!({"$ref": format!("#/components/responses/Refusal{status}")}),
            );
        }
        let name = method.name();
        paths.insert(
            route.path.into(),
            json!({"post": {
                "operationId": lower_camel(name),
                "tags": [method.parent_service().name()],
                "summary": format!("{name} ({})", route.grpc_path),
                "description": comments(method.path(), &method.parent_file())
                    .unwrap_or_default(),
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": reference(&method.input())}},
                },
                "responses": responses,
            }}),
        );
    }
    paths.insert(
        OPENAPI_PATH.into(),
        json!({"get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": {
                "description": "The OpenAPI document of the JSON door.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }},
        }}),
    );
    let mut responses = Map::new();
    for (status, meaning) in REFUSALS {
        responses.insert(
            format!("Refusal{status}"),
            json!({
                "description": meaning,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Refusal"}}},
            }),
        );
    }
    let mut components = Map::new();
    components.insert(
        "Refusal".into(),
        json!({
            "type": "object",
            "description": "A refused call: the gRPC status the same call over gRPC gets.",
            "properties": {
                "code": {"type": "integer", "description": "The gRPC status code, e.g. 3."},
                "status": {"type": "string", "description": "Its name, e.g. INVALID_ARGUMENT."},
                "message": {"type": "string", "description": "What to fix, in the words gRPC callers get."},
            },
            "required": ["code", "status", "message"],
        }),
    );
    components.extend(schemas);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Herald HTTP/JSON door",
            "version": "v1",
            "description": "The JSON mapping of Herald's gRPC API (proto/herald/v1/herald.proto) on \
                ingest's gRPC port: each route takes the request message and answers the response \
                message in the proto3 canonical JSON mapping (lowerCamelCase names; the proto's \
                snake_case names are accepted too; 64-bit integers are strings, numbers are \
                accepted). Generated from the proto; see docs/api.md.",
        },
        "security": [{"bearerKey": []}, {"headerKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer hrk_…`, an API key with the route's scope.",
                },
                "headerKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
            "responses": responses,
            "schemas": components,
        },
    })
}

fn method(pool: &DescriptorPool, grpc_path: &str) -> MethodDescriptor {
    let (service, method) = grpc_path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or_else(|| panic!("{grpc_path} is /service/method"));
    pool.get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method))
        .unwrap_or_else(|| panic!("{grpc_path} is a method of herald.proto"))
}

/// The schema name of a message or enum: its full name without the package.
fn schema_name(full_name: &str, package: &str) -> String {
    full_name
        .strip_prefix(package)
        .and_then(|n| n.strip_prefix('.'))
        .unwrap_or(full_name)
        .to_owned()
}

fn reference(message: &MessageDescriptor) -> Value {
    json!({"$ref": format!(
        "#/components/schemas/{}",
        schema_name(message.full_name(), message.package_name())
    )})
}

fn enum_reference(descriptor: &EnumDescriptor) -> Value {
    json!({"$ref": format!(
        "#/components/schemas/{}",
        schema_name(descriptor.full_name(), descriptor.package_name())
    )})
}

/// Adds `message` and every message and enum it reaches to `schemas`.
fn collect(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) {
    let name = schema_name(message.full_name(), message.package_name());
    if schemas.contains_key(&name) {
        return;
    }
    // Reserved first, so that a message that reaches itself stops here.
    schemas.insert(name.clone(), Value::Null);
    let mut properties = Map::new();
    for field in message.fields() {
        let mut schema = field_schema(&field, schemas);
        let mut description = comments(field.path(), &field.parent_file()).unwrap_or_default();
        if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
            let others: Vec<_> = oneof
                .fields()
                .map(|f| format!("`{}`", f.json_name()))
                .collect();
            if !description.is_empty() {
                description.push(' ');
            }
            description.push_str(&format!("At most one of {}.", others.join(", ")));
        }
        if !description.is_empty() {
            // A sibling of `$ref` is ignored in OpenAPI 3.0: wrap it.
            if schema.get("$ref").is_some() {
                schema = json!({"allOf": [schema]});
            }
            schema["description"] = Value::String(description);
        }
        properties.insert(field.json_name().to_owned(), schema);
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if let Some(description) = comments(message.path(), &message.parent_file()) {
        schema["description"] = Value::String(description);
    }
    schemas.insert(name, schema);
}

/// The schema of one field's value in the canonical JSON mapping.
fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            unreachable!("a map field's kind is its entry message");
        };
        let value = entry.map_entry_value_field();
        return json!({
            "type": "object",
            "additionalProperties": kind_schema(&value.kind(), schemas),
        });
    }
    let item = kind_schema(&field.kind(), schemas);
    if field.is_list() {
        json!({"type": "array", "items": item})
    } else {
        item
    }
}

fn kind_schema(kind: &Kind, schemas: &mut BTreeMap<String, Value>) -> Value {
    match kind {
        Kind::Double => json!({"type": "number", "format": "double"}),
        Kind::Float => json!({"type": "number", "format": "float"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
        }
        // The canonical mapping writes 64-bit integers as strings, because
        // JavaScript's numbers cannot hold them all.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Message(message) => {
            collect(message, schemas);
            reference(message)
        }
        Kind::Enum(descriptor) => {
            let name = schema_name(descriptor.full_name(), descriptor.package_name());
            let values: Vec<_> = descriptor.values().map(|v| v.name().to_owned()).collect();
            schemas
                .entry(name)
                .or_insert_with(|| json!({"type": "string", "enum": values}));
            enum_reference(descriptor)
        }
    }
}

/// The leading (or else trailing) comment of the element at `path` in
/// `file`, as one paragraph.
fn comments(path: &[i32], file: &prost_reflect::FileDescriptor) -> Option<String> {
    let location = file
        .file_descriptor_proto()
        .source_code_info
        .as_ref()?
        .location
        .iter()
        .find(|l| l.path == path)?;
    let text = location
        .leading_comments
        .as_deref()
        .or(location.trailing_comments.as_deref())?;
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!joined.is_empty()).then_some(joined)
}

fn lower_camel(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_a_path_with_its_messages_as_schemas() {
        let document = document();
        for route in ROUTES {
            let post = &document["paths"][route.path]["post"];
            let request = schema_name(route.request, "herald.v1");
            assert_eq!(
                post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
                format!("#/components/schemas/{request}"),
                "{}",
                route.path
            );
            assert!(document["components"]["schemas"][&request].is_object());
        }
        let fire = &document["components"]["schemas"]["FireRequest"]["properties"];
        assert_eq!(fire["idempotencyKey"]["type"], "string");
        assert!(
            fire["json"]["description"]
                .as_str()
                .unwrap()
                .contains("At most one of `text`, `json`"),
            "{fire}"
        );
        let summary = &document["components"]["schemas"]["WebhookSummary"]["properties"];
        assert_eq!(summary["fired"]["type"], "string", "uint64 is a string");
        // No schema was left reserved.
        let schemas = document["components"]["schemas"].as_object().unwrap();
        assert!(schemas.values().all(Value::is_object), "{schemas:?}");
    }

    #[test]
    fn proto_comments_become_descriptions() {
        let document = document();
        let fire = &document["paths"]["/v1/fire"]["post"];
        assert!(
            fire["description"]
                .as_str()
                .unwrap()
                .starts_with("Fires an event"),
            "{fire}"
        );
        assert_eq!(lower_camel("GetDelivery"), "getDelivery");
    }
}
