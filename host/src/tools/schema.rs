//! Validation of tool inputs against the JSON Schemas the host publishes.
//!
//! The schemas are the host's own (each connector's action table), never a
//! guest's, so this implements exactly the subset they use: `type`
//! (`object`, `array`, `string`, `integer`, `boolean`), `properties`,
//! `required`, `additionalProperties: false`, `items`, `minItems`/
//! `maxItems`, `minLength`/`maxLength`, `minimum`/`maximum`, `enum`, and
//! `oneOf` of object schemas. A unit test checks that every published
//! schema uses nothing else, so a schema can never silently validate less
//! than it says.

use serde_json::Value;

/// The keywords this validator understands.
#[cfg(test)]
pub(crate) const KEYWORDS: &[&str] = &[
    "type",
    "description",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "enum",
    "oneOf",
];

/// Checks `value` against `schema`; the error names the offending path.
pub(crate) fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "input")
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|option| check(option, value, path).is_ok())
            .count();
        if matching != 1 {
            let reasons: Vec<String> = options
                .iter()
                .filter_map(|option| check(option, value, path).err())
                .collect();
            return Err(format!(
                "{path} must match exactly one of {} forms ({})",
                options.len(),
                reasons.join("; ")
            ));
        }
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "number" => value.is_number(),
            _ => false,
        };
        if !ok {
            return Err(format!("{path} must be of type {kind}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!(
            "{path} must be one of {}",
            Value::Array(allowed.clone())
        ));
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(name) {
                        return Err(format!("{path}.{name} is required"));
                    }
                }
            }
            for (name, item) in map {
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => check(property, item, &format!("{path}.{name}"))?,
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{path}.{name} is not an accepted field"));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            let bound = |key: &str| schema.get(key).and_then(Value::as_u64);
            if let Some(min) = bound("minItems")
                && (items.len() as u64) < min
            {
                return Err(format!("{path} must have at least {min} items"));
            }
            if let Some(max) = bound("maxItems")
                && items.len() as u64 > max
            {
                return Err(format!("{path} must have at most {max} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{index}]"))?;
                }
            }
        }
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && length < min
            {
                return Err(format!("{path} must be at least {min} characters"));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && length > max
            {
                return Err(format!("{path} must be at most {max} characters"));
            }
        }
        Value::Number(number) => {
            if let (Some(min), Some(n)) = (
                schema.get("minimum").and_then(Value::as_f64),
                number.as_f64(),
            ) && n < min
            {
                return Err(format!("{path} must be at least {min}"));
            }
            if let (Some(max), Some(n)) = (
                schema.get("maximum").and_then(Value::as_f64),
                number.as_f64(),
            ) && n > max
            {
                return Err(format!("{path} must be at most {max}"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every keyword `schema` uses that [`validate`] does not understand
/// (checked over every connector's schemas by the tests).
#[cfg(test)]
pub(crate) fn unknown_keywords(schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Some(map) = schema.as_object() {
        for (key, value) in map {
            if !KEYWORDS.contains(&key.as_str()) {
                unknown.push(key.clone());
            }
            match key.as_str() {
                "properties" => {
                    for property in value.as_object().into_iter().flat_map(|m| m.values()) {
                        unknown.extend(unknown_keywords(property));
                    }
                }
                "items" => unknown.extend(unknown_keywords(value)),
                "oneOf" => {
                    for option in value.as_array().into_iter().flatten() {
                        unknown.extend(unknown_keywords(option));
                    }
                }
                _ => {}
            }
        }
    }
    unknown
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_checked_and_errors_name_the_path() {
        let schema = json!({
            "type": "object",
            "required": ["repo", "labels"],
            "additionalProperties": false,
            "properties": {
                "repo": {"type": "string", "minLength": 3, "maxLength": 100},
                "number": {"type": "integer", "minimum": 1},
                "labels": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string", "maxLength": 5}},
                "state": {"type": "string", "enum": ["open", "closed"]}
            }
        });
        assert!(validate(&schema, &json!({"repo": "a/b", "labels": ["bug"]})).is_ok());
        for (input, error) in [
            (json!({"labels": ["x"]}), "input.repo is required"),
            (
                json!({"repo": "a/b", "labels": []}),
                "input.labels must have at least 1",
            ),
            (
                json!({"repo": "a/b", "labels": ["toolong"]}),
                "input.labels[0] must be at most 5",
            ),
            (
                json!({"repo": "a/b", "labels": ["x"], "number": 0}),
                "input.number must be at least 1",
            ),
            (
                json!({"repo": "a/b", "labels": ["x"], "number": 1.5}),
                "input.number must be of type integer",
            ),
            (
                json!({"repo": "a/b", "labels": ["x"], "state": "all"}),
                "input.state must be one of",
            ),
            (
                json!({"repo": "a/b", "labels": ["x"], "extra": 1}),
                "input.extra is not an accepted field",
            ),
            (json!([1]), "input must be of type object"),
        ] {
            let got = validate(&schema, &input).unwrap_err();
            assert!(got.contains(error), "{input}: {got}");
        }
    }

    #[test]
    fn one_of_needs_exactly_one_match() {
        let schema = json!({"oneOf": [
            {"type": "object", "required": ["page_id"], "additionalProperties": false, "properties": {"page_id": {"type": "string"}}},
            {"type": "object", "required": ["database_id"], "additionalProperties": false, "properties": {"database_id": {"type": "string"}}}
        ]});
        assert!(validate(&schema, &json!({"page_id": "x"})).is_ok());
        assert!(validate(&schema, &json!({"page_id": "x", "database_id": "y"})).is_err());
        assert!(validate(&schema, &json!({})).is_err());
        assert_eq!(
            unknown_keywords(&json!({"type": "string", "pattern": "x"})),
            vec!["pattern"]
        );
    }
}
