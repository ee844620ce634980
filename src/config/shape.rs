//! Response shapes as written: a YAML tree whose strings are expressions.
//!
//! Hand-written `Deserialize` because serde's untagged enums buffer the input
//! and would lose the source position of every string.

use super::Sp;
use indexmap::IndexMap;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A shape node with its position.
pub type RawShape = Sp<ShapeNode>;

/// One node of a response shape.
#[derive(Debug, Clone, PartialEq)]
pub enum ShapeNode {
    /// An expression, e.g. `orders.body[*].id`.
    Expr(String),
    /// A literal number, boolean or null.
    Literal(serde_json::Value),
    /// An object whose values are shapes.
    Map(IndexMap<String, RawShape>),
    /// A list of shapes.
    List(Vec<RawShape>),
}

impl<'de> Deserialize<'de> for ShapeNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = ShapeNode;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a response shape (expression string, map, list or literal)")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ShapeNode, E> {
        Ok(ShapeNode::Expr(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<ShapeNode, E> {
        Ok(ShapeNode::Expr(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ShapeNode, E> {
        Ok(ShapeNode::Literal(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ShapeNode, E> {
        Ok(ShapeNode::Literal(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ShapeNode, E> {
        Ok(ShapeNode::Literal(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ShapeNode, E> {
        serde_json::Number::from_f64(v)
            .map(|n| ShapeNode::Literal(serde_json::Value::Number(n)))
            .ok_or_else(|| E::custom("a response shape number must be finite"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<ShapeNode, E> {
        Ok(ShapeNode::Literal(serde_json::Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<ShapeNode, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<ShapeNode, D::Error> {
        ShapeNode::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ShapeNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<RawShape>()? {
            items.push(item);
        }
        Ok(ShapeNode::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ShapeNode, A::Error> {
        let mut entries = IndexMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<RawShape>()?;
            entries.insert(key, value);
        }
        Ok(ShapeNode::Map(entries))
    }
}
