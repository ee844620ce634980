//! Which parts of each call's body a route reads, worked out once per plan,
//! so that a body is parsed only as far as expressions look into it.
//!
//! Why: `orders.body[*].product_id` needs one field of each order, yet a full
//! tree of the body (every key and string allocated) was the largest single
//! cost of an aggregated request. A whole body copied into the response
//! (`orders: orders.body`) reads nothing: its text is copied as it came.

use super::expr::{Expr, Root, Step};
use super::{Aggregate, Respond, Shape};

/// What is read of one JSON value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Reads {
    /// Nothing: the value is only counted (as an element of a list) or copied as text.
    #[default]
    Nothing,
    /// All of it.
    Whole,
    /// Some fields (of an object) and what is read of each, and what is read
    /// of every element (of a list).
    Parts {
        /// By field name.
        fields: Vec<(String, Reads)>,
        /// Of every element.
        items: Box<Reads>,
    },
}

impl Reads {
    /// Adds what following `steps` and then using the value reads.
    fn add(&mut self, steps: &[Step]) {
        let Some((first, rest)) = steps.split_first() else {
            *self = Reads::Whole;
            return;
        };
        match self {
            Reads::Whole => return,
            Reads::Nothing => {
                *self = Reads::Parts {
                    fields: Vec::new(),
                    items: Box::new(Reads::Nothing),
                }
            }
            Reads::Parts { .. } => {}
        }
        let Reads::Parts { fields, items } = self else {
            return;
        };
        match first {
            Step::Field(f) => match fields.iter_mut().find(|(k, _)| k == f) {
                Some((_, r)) => r.add(rest),
                None => {
                    let mut r = Reads::Nothing;
                    r.add(rest);
                    fields.push((f.clone(), r));
                }
            },
            Step::Index(_) | Step::All => items.add(rest),
        }
    }

    /// The reads of field `name`, if any.
    pub fn field(&self, name: &str) -> Option<&Reads> {
        match self {
            Reads::Parts { fields, .. } => fields.iter().find(|(k, _)| k == name).map(|(_, r)| r),
            _ => None,
        }
    }
}

/// What each call's body is read for, by call id.
pub fn body_reads(agg: &Aggregate) -> Vec<Reads> {
    let mut reads = vec![Reads::Nothing; agg.calls.len()];
    for call in &agg.calls {
        call.url.exprs().for_each(|e| note(&mut reads, e));
        for e in call.headers.iter().flat_map(|(_, t)| t.exprs()) {
            note(&mut reads, e);
        }
        if let Some(b) = &call.body {
            note_shape(&mut reads, b);
        }
        if let Some(f) = &call.for_each {
            note(&mut reads, &f.list);
        }
        for e in call
            .cache
            .iter()
            .flat_map(|c| &c.tags)
            .flat_map(|t| t.exprs())
        {
            note(&mut reads, e);
        }
    }
    match &agg.respond {
        Respond::Shape(s) => note_shape(&mut reads, s),
        Respond::Merge(ids) => ids.iter().for_each(|&i| reads[i] = Reads::Whole),
    }
    for e in agg
        .cache
        .iter()
        .flat_map(|c| &c.tags)
        .flat_map(|t| t.exprs())
    {
        note(&mut reads, e);
    }
    reads
}

fn note(reads: &mut [Reads], e: &Expr) {
    if let Root::CallBody(c) = e.root {
        // Filters use the whole value the steps lead to.
        reads[c].add(&e.steps);
    }
}

fn note_shape(reads: &mut [Reads], s: &Shape) {
    s.visit_exprs(&mut |e| {
        // A whole body in a shape is copied as text, not read.
        if e.whole_body().is_none() {
            note(reads, e);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(paths: &[&[Step]]) -> Reads {
        let mut r = Reads::Nothing;
        paths.iter().for_each(|p| r.add(p));
        r
    }

    fn field(s: &str) -> Step {
        Step::Field(s.into())
    }

    #[test]
    fn steps_become_a_tree_and_whole_absorbs_parts() {
        let r = reads(&[
            &[Step::All, field("product_id")],
            &[Step::Index(-1), field("id")],
        ]);
        let Reads::Parts { fields, items } = &r else {
            panic!("{r:?}")
        };
        assert!(fields.is_empty());
        assert_eq!(items.field("product_id"), Some(&Reads::Whole));
        assert_eq!(items.field("id"), Some(&Reads::Whole));
        assert_eq!(items.field("status"), None);

        assert_eq!(reads(&[&[field("a")], &[]]), Reads::Whole);
        assert_eq!(reads(&[&[], &[field("a")]]), Reads::Whole);
        let nested = reads(&[&[field("a"), field("b")], &[field("a")]]);
        assert_eq!(nested.field("a"), Some(&Reads::Whole));
    }
}
