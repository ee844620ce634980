//! Compiled response shapes: the tree a response (or a request body) is built from.

use super::Diagnostic;
use super::expr::{self, Expr, Scope};
use crate::config::{RawShape, ShapeNode};
use serde_json::Value;

/// A compiled shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// The value of an expression.
    Expr(Expr),
    /// A literal value.
    Literal(Value),
    /// An object, keys in written order.
    Map(Vec<(String, Shape)>),
    /// A list.
    List(Vec<Shape>),
}

impl Shape {
    /// Calls every expression in the shape.
    pub fn visit_exprs<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        match self {
            Shape::Expr(e) => f(e),
            Shape::Literal(_) => {}
            Shape::Map(entries) => entries.iter().for_each(|(_, s)| s.visit_exprs(f)),
            Shape::List(items) => items.iter().for_each(|s| s.visit_exprs(f)),
        }
    }
}

/// Compiles a raw shape, collecting every error.
pub fn compile(raw: &RawShape, scope: &dyn Scope, errors: &mut Vec<Diagnostic>) -> Shape {
    match &raw.value {
        ShapeNode::Expr(text) => match expr::parse(text, scope) {
            Ok(e) => Shape::Expr(e),
            Err(message) => {
                errors.push(Diagnostic::new(raw.pos, message));
                Shape::Literal(Value::Null)
            }
        },
        ShapeNode::Literal(v) => Shape::Literal(v.clone()),
        ShapeNode::Map(entries) => Shape::Map(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), compile(v, scope, errors)))
                .collect(),
        ),
        ShapeNode::List(items) => {
            Shape::List(items.iter().map(|v| compile(v, scope, errors)).collect())
        }
    }
}
