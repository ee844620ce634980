//! Hedging: if an idempotent call has not answered after `hedge_after`, a
//! second attempt is sent; the first success wins and the other attempt's
//! future is dropped, which cancels it (its connection is closed). A failure
//! of one attempt waits for the other. Hedges draw on the retry budget, so
//! a slow upstream never gets twice the load.

use super::CallError;
use std::future::Future;
use std::time::Duration;

/// Runs `attempt`, and a second one after `delay` if `may_hedge` allows it.
pub async fn hedged<F, Fut, T>(
    delay: Option<Duration>,
    may_hedge: impl FnOnce() -> bool,
    attempt: F,
) -> Result<T, CallError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let first = attempt();
    let Some(delay) = delay else {
        return first.await;
    };
    tokio::pin!(first);
    tokio::select! {
        r = &mut first => return r,
        _ = tokio::time::sleep(delay) => {}
    }
    if !may_hedge() {
        return first.await;
    }
    let second = attempt();
    tokio::pin!(second);
    tokio::select! {
        r = &mut first => match r {
            Ok(v) => Ok(v),
            Err(_) => second.await,
        },
        r = &mut second => match r {
            Ok(v) => Ok(v),
            Err(_) => first.await,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn the_faster_attempt_wins() {
        let n = AtomicU32::new(0);
        let r = hedged(
            Some(Duration::from_millis(10)),
            || true,
            || {
                // The first attempt takes 100 ms, the hedge 5 ms.
                let i = n.fetch_add(1, Ordering::SeqCst);
                async move {
                    let d = if i == 0 { 100 } else { 5 };
                    tokio::time::sleep(Duration::from_millis(d)).await;
                    Ok::<_, CallError>(i)
                }
            },
        )
        .await;
        assert_eq!(r, Ok(1));
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_hedge_for_a_fast_answer_or_without_budget() {
        let n = AtomicU32::new(0);
        let fast = hedged(
            Some(Duration::from_millis(10)),
            || true,
            || {
                n.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, CallError>(()) }
            },
        );
        assert!(fast.await.is_ok());
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let slow = hedged(
            Some(Duration::from_millis(10)),
            || false,
            || {
                n.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, CallError>(())
                }
            },
        );
        assert!(slow.await.is_ok());
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }
}
