//! The evaluation context: a JSON-like value tree (resolve.md §4.1).
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<Value>),
    Struct(BTreeMap<String, Value>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// The evaluation context (always a struct at the top).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    pub fields: BTreeMap<String, Value>,
}

impl Context {
    /// Walks a dotted path `a.b.c` through nested structs. A missing field or a
    /// non-struct on the way gives `None` (= null).
    pub fn lookup(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let first = parts.next()?;
        let mut cur = self.fields.get(first)?;
        for p in parts {
            match cur {
                Value::Struct(m) => cur = m.get(p)?,
                _ => return None,
            }
        }
        Some(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_lookup() {
        let mut inner = BTreeMap::new();
        inner.insert("b".to_string(), Value::Number(1.0));
        let mut ctx = Context::default();
        ctx.fields.insert("a".into(), Value::Struct(inner));
        ctx.fields.insert("s".into(), Value::String("x".into()));
        ctx.fields.insert("x.y".into(), Value::Bool(true));
        assert_eq!(ctx.lookup("a.b"), Some(&Value::Number(1.0)));
        assert_eq!(ctx.lookup("a.c"), None);
        assert_eq!(ctx.lookup("s.b"), None);
        assert_eq!(ctx.lookup("s"), Some(&Value::String("x".into())));
        // a key containing a dot cannot be addressed
        assert_eq!(ctx.lookup("x.y"), None);
    }
}
