//! Field-by-field differences between two JSON documents (image configs, manifests,
//! indexes): each differing leaf as a path (`created`, `history[2].created`,
//! `config.Labels["org.opencontainers.image.version"]`) with both values.
//!
//! Objects are compared key by key; arrays element by element when they are as long as
//! each other or hold objects (so one changed history entry or diff_id is one
//! difference, not the whole list); arrays of plain values of different lengths (an
//! `Env` with one variable more) and scalars are leaves, reported whole.

use serde::Serialize;
use serde_json::Value;

/// One place where two JSON documents differ. `None` on a side: absent there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueDifference {
    pub path: String,
    pub left: Option<Value>,
    pub right: Option<Value>,
}

/// Every leaf where `left` and `right` differ, in document order (object keys sorted).
pub fn diff_json(left: &Value, right: &Value) -> Vec<ValueDifference> {
    let mut out = Vec::new();
    diff_at(String::new(), Some(left), Some(right), &mut out);
    out
}

fn diff_at(path: String, left: Option<&Value>, right: Option<&Value>, out: &mut Vec<ValueDifference>) {
    if left == right {
        return;
    }
    match (left, right) {
        (Some(Value::Object(l)), Some(Value::Object(r))) => {
            let mut keys: Vec<&String> = l.keys().chain(r.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                diff_at(child_key(&path, k), l.get(k), r.get(k), out);
            }
        }
        (Some(Value::Array(l)), Some(Value::Array(r)))
            if l.len() == r.len() || has_structure(l) || has_structure(r) =>
        {
            for i in 0..l.len().max(r.len()) {
                diff_at(format!("{path}[{i}]"), l.get(i), r.get(i), out);
            }
        }
        _ => out.push(ValueDifference {
            path: if path.is_empty() { "(document)".to_string() } else { path },
            left: left.cloned(),
            right: right.cloned(),
        }),
    }
}

/// Does an array hold objects or arrays (compared element by element)?
fn has_structure(items: &[Value]) -> bool {
    items.iter().any(|v| v.is_object() || v.is_array())
}

/// `parent.key`, or `parent["key"]` when the key is not a plain identifier.
fn child_key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", Value::String(key.to_string())),
    }
}

/// A value as the human report shows it: compact JSON, or `(absent)`.
pub fn show_value(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(d: &[ValueDifference]) -> Vec<&str> {
        d.iter().map(|d| d.path.as_str()).collect()
    }

    #[test]
    fn reports_leaf_paths_with_both_values() {
        let left = json!({
            "created": "2023-11-14T22:13:20Z",
            "config": {"Env": ["PATH=/bin", "A=1"], "Labels": {"org.example.v": "1"}},
            "history": [{"created": "x", "created_by": "RUN a"}, {"created": "x", "created_by": "RUN b"}],
            "os": "linux"
        });
        let right = json!({
            "created": "2023-11-14T22:13:21Z",
            "config": {"Env": ["PATH=/bin", "A=2"], "Labels": {"org.example.v": "2"}},
            "history": [{"created": "x", "created_by": "RUN a"}, {"created": "y", "created_by": "RUN b"}],
            "os": "linux"
        });
        let d = diff_json(&left, &right);
        assert_eq!(paths(&d), ["config.Env[1]", "config.Labels[\"org.example.v\"]", "created", "history[1].created"]);
        assert_eq!(d[2].left, Some(json!("2023-11-14T22:13:20Z")));
        assert_eq!(d[2].right, Some(json!("2023-11-14T22:13:21Z")));
        assert_eq!(d[0].right, Some(json!("A=2")));
        let longer = diff_json(&json!({"Env": ["A=1"]}), &json!({"Env": ["A=1", "B=2"]}));
        assert_eq!(paths(&longer), ["Env"]);
        assert_eq!(longer[0].right, Some(json!(["A=1", "B=2"])));
    }

    #[test]
    fn absent_fields_and_extra_array_entries() {
        let left = json!({"history": [{"created_by": "a"}], "author": "me"});
        let right = json!({"history": [{"created_by": "a"}, {"created_by": "b"}]});
        let d = diff_json(&left, &right);
        assert_eq!(paths(&d), ["author", "history[1]"]);
        assert_eq!(d[0].right, None);
        assert_eq!(d[1].left, None);
        assert_eq!(show_value(d[1].left.as_ref()), "(absent)");
        assert!(diff_json(&left, &left).is_empty());
    }

    #[test]
    fn different_documents_at_the_top() {
        let d = diff_json(&json!(1), &json!("1"));
        assert_eq!(paths(&d), ["(document)"]);
    }
}
