//! The smallest JSON value that satisfies a JSON schema, for side requests
//! with `output_config.format` (e.g. the CLI's title generation).

use serde_json::{Map, Value, json};

/// How deep nested schemas are followed; deeper ones become `null`.
const MAX_DEPTH: usize = 16;

/// A minimal value matching `schema` (the common subset of JSON Schema the
/// CLI uses: `type`, `properties`, `required`, `enum`, `const`, `anyOf`,
/// `oneOf`, `items`, `minItems`, `minLength`, `minimum`).
pub fn minimal_value(schema: &Value) -> Value {
    minimal(schema, 0)
}

fn minimal(schema: &Value, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    let Some(obj) = schema.as_object() else {
        return Value::Null;
    };
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(first) = obj
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = obj
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return minimal(first, depth + 1);
        }
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if obj.contains_key("properties") => "object",
        _ => "null",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            let props = obj.get("properties").and_then(Value::as_object);
            let required = obj
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                .unwrap_or_default();
            for name in required {
                let sub = props.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                out.insert(name.to_owned(), minimal(sub, depth + 1));
            }
            Value::Object(out)
        }
        "array" => {
            let n = obj.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let item = obj
                .get("items")
                .map_or(Value::Null, |i| minimal(i, depth + 1));
            Value::Array((0..n.min(16)).map(|_| item.clone()).collect())
        }
        "string" => {
            let min = obj.get("minLength").and_then(Value::as_u64).unwrap_or(0);
            let min = usize::try_from(min.min(1024)).unwrap_or(0);
            let mut s = String::from("Fake");
            while s.len() < min {
                s.push('x');
            }
            Value::String(s)
        }
        "integer" | "number" => obj.get("minimum").cloned().unwrap_or(json!(0)),
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_schema() {
        let schema = json!({
            "type": "object",
            "properties": {"title": {"type": "string"}, "extra": {"type": "number"}},
            "required": ["title"],
            "additionalProperties": false
        });
        assert_eq!(minimal_value(&schema), json!({"title": "Fake"}));
    }

    #[test]
    fn nested_and_variants() {
        let schema = json!({
            "type": "object",
            "properties": {
                "a": {"enum": ["x", "y"]},
                "b": {"type": "array", "minItems": 2, "items": {"type": "integer", "minimum": 3}},
                "c": {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
                "d": {"type": ["null", "string"], "minLength": 6},
                "e": {"const": 7}
            },
            "required": ["a", "b", "c", "d", "e"]
        });
        assert_eq!(
            minimal_value(&schema),
            json!({"a": "x", "b": [3, 3], "c": false, "d": "Fakexx", "e": 7})
        );
    }

    #[test]
    fn garbage_schema_is_null() {
        assert_eq!(minimal_value(&json!("nope")), Value::Null);
        assert_eq!(minimal_value(&json!({})), Value::Null);
    }
}
