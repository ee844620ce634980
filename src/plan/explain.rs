//! `switchyard explain`: a route's call graph in words.

use super::template::{Piece, Template};
use super::{Aggregate, Plan, RouteKind, RoutePlan, graph};
use std::fmt::Write;

/// Describes a route: what starts at once, what waits for what, and the
/// critical path by timeouts.
pub fn explain(plan: &Plan, route: &RoutePlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  (deadline {})",
        route.label,
        humantime::format_duration(route.timeout)
    );
    super::limit::explain(plan, route, &mut out);
    match &route.kind {
        RouteKind::Proxy(p) => {
            let u = &plan.upstreams[p.upstream];
            let _ = writeln!(
                out,
                "proxy to upstream `{}` ({}{}) path {}",
                u.name,
                u.authority,
                u.base_path,
                template_text(&p.path)
            );
        }
        RouteKind::Aggregate(agg) => explain_aggregate(plan, agg, &mut out),
    }
    out
}

fn explain_aggregate(plan: &Plan, agg: &Aggregate, out: &mut String) {
    let name = |i: usize| agg.calls[i].name.as_str();
    let describe = |i: usize| {
        let c = &agg.calls[i];
        let u = &plan.upstreams[c.upstream];
        let mut s = format!(
            "{:<14} {} {}:{}  timeout {}",
            c.name,
            c.method,
            u.name,
            template_text(&c.url),
            humantime::format_duration(c.timeout)
        );
        if let Some(f) = &c.for_each {
            let _ = write!(
                s,
                "  for each of {} (at most {} at once)",
                f.list.text, f.concurrency
            );
        }
        if c.optional {
            s.push_str("  optional");
        }
        s
    };
    let _ = writeln!(out, "start at once:");
    for &r in &agg.roots {
        let _ = writeln!(out, "  {}", describe(r));
    }
    // Group the waiting calls by what they wait for, in config order.
    let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    for (i, c) in agg
        .calls
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.deps.is_empty())
    {
        let mut deps = c.deps.clone();
        deps.sort_unstable();
        match groups.iter_mut().find(|(d, _)| *d == deps) {
            Some((_, members)) => members.push(i),
            None => groups.push((deps, vec![i])),
        }
    }
    for (deps, members) in groups {
        let waits: Vec<&str> = deps.iter().map(|&d| name(d)).collect();
        let _ = writeln!(out, "after {}:", waits.join(" and "));
        for m in members {
            let _ = writeln!(out, "  {}", describe(m));
        }
    }
    let deps: Vec<Vec<usize>> = agg.calls.iter().map(|c| c.deps.clone()).collect();
    let (path, worst) = graph::critical_path(&deps, &|i| agg.calls[i].timeout);
    let chain: Vec<&str> = path.iter().map(|&i| name(i)).collect();
    let _ = writeln!(
        out,
        "critical path: {} ({} call{} in sequence; at most {} by timeouts)",
        chain.join(" → "),
        path.len(),
        if path.len() == 1 { "" } else { "s" },
        humantime::format_duration(worst)
    );
}

/// A template written back as the user wrote it.
pub fn template_text(t: &Template) -> String {
    t.pieces
        .iter()
        .map(|p| match p {
            Piece::Lit(l) => l.replace('{', "{{").replace('}', "}}"),
            Piece::Slot(e, _) => format!("{{{}}}", e.text),
        })
        .collect()
}
