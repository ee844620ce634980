//! Call-graph analysis done once at load time: cycles, start order and the
//! critical path. `deps[i]` lists the calls call `i` waits for.

use std::time::Duration;

/// A dependency cycle as a list of call indices, first repeated at the end;
/// `None` when the graph is acyclic.
pub fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    fn visit(
        n: usize,
        deps: &[Vec<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        marks[n] = Mark::OnStack;
        stack.push(n);
        for &d in &deps[n] {
            match marks[d] {
                Mark::OnStack => {
                    let start = stack.iter().position(|&s| s == d).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(d);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(d, deps, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[n] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; deps.len()];
    let mut stack = Vec::new();
    (0..deps.len()).find_map(|n| {
        if marks[n] == Mark::New {
            visit(n, deps, &mut marks, &mut stack)
        } else {
            None
        }
    })
}

/// The chain of calls with the largest summed weight (e.g. timeouts), in
/// execution order, and that sum. The graph must be acyclic.
pub fn critical_path(
    deps: &[Vec<usize>],
    weight: &dyn Fn(usize) -> Duration,
) -> (Vec<usize>, Duration) {
    // Longest path ending at each node, memoised; graphs are small (a route's calls).
    fn longest(
        n: usize,
        deps: &[Vec<usize>],
        weight: &dyn Fn(usize) -> Duration,
        memo: &mut [Option<(Duration, Option<usize>)>],
    ) -> Duration {
        if let Some((d, _)) = memo[n] {
            return d;
        }
        let mut best = (Duration::ZERO, None);
        for &d in &deps[n] {
            let l = longest(d, deps, weight, memo);
            if best.1.is_none() || l > best.0 {
                best = (l, Some(d));
            }
        }
        let total = best.0 + weight(n);
        memo[n] = Some((total, best.1));
        total
    }
    let mut memo = vec![None; deps.len()];
    let mut end = None;
    let mut best = Duration::ZERO;
    for n in 0..deps.len() {
        let l = longest(n, deps, weight, &mut memo);
        if end.is_none() || l > best {
            best = l;
            end = Some(n);
        }
    }
    let mut path = Vec::new();
    let mut at = end;
    while let Some(n) = at {
        path.push(n);
        at = memo[n].and_then(|(_, prev)| prev);
    }
    path.reverse();
    (path, best)
}

/// Inverts `deps`: for each call, the calls waiting for it.
pub fn dependents(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); deps.len()];
    for (n, ds) in deps.iter().enumerate() {
        for &d in ds {
            out[d].push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_with_their_path() {
        assert_eq!(find_cycle(&[vec![], vec![0], vec![1]]), None);
        assert_eq!(
            find_cycle(&[vec![2], vec![0], vec![1]]),
            Some(vec![0, 2, 1, 0])
        );
        assert_eq!(find_cycle(&[vec![0]]), Some(vec![0, 0]));
    }

    #[test]
    fn critical_path_follows_the_heaviest_chain() {
        // 0 and 1 are roots; 2 waits for 1; 3 waits for 0 and 2.
        let deps = vec![vec![], vec![], vec![1], vec![0, 2]];
        let ms = |n: usize| Duration::from_millis([50, 10, 10, 5][n]);
        let (path, total) = critical_path(&deps, &ms);
        assert_eq!(path, vec![0, 3]);
        assert_eq!(total, Duration::from_millis(55));
        let equal = |_| Duration::from_millis(10);
        assert_eq!(critical_path(&deps, &equal).0, vec![1, 2, 3]);
        assert_eq!(dependents(&deps), vec![vec![3], vec![2], vec![3], vec![]]);
    }
}
