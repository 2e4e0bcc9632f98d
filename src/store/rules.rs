//! The rules every backend applies the same way, kept in one place so a backend states only
//! how it reads and writes: which refusal a claim gets ([`claim_refusal`]). The compare of an
//! acquisition is [`super::Observed::still`] and what it writes [`super::Acquire::record`].
use super::{Claim, Requests, RunRecord};

/// What a claim found, read atomically with its insert (or with the decision not to insert).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClaimFacts {
    /// The job's lease is held by the claiming node, in its session, with its term.
    pub fenced_ok: bool,
    /// The run is requested (`cronlease trigger`, `backfill`), not scheduled.
    pub requested: bool,
    /// The job is paused.
    pub paused: bool,
    /// The run's request is pending in the lease record (requested runs only).
    pub pending: bool,
    /// The fire time is at or before the job's pruned watermark.
    pub too_old: bool,
    /// A record of this fire time existed before the claim.
    pub existed: bool,
}

impl ClaimFacts {
    /// The facts of a claim by the job's holder (the fence already passed), from the lease's
    /// pause and pending requests as read with the claim.
    pub fn of_holder(
        run: &RunRecord,
        paused: bool,
        requests: &Requests,
        too_old: bool,
        existed: bool,
    ) -> ClaimFacts {
        ClaimFacts {
            fenced_ok: true,
            requested: run.trigger.is_some(),
            paused,
            pending: run
                .trigger
                .as_ref()
                .is_some_and(|t| requests.has(&t.request)),
            too_old,
            existed,
        }
    }
}

/// Why a claim with these facts is refused, or `None` when it may insert its record. In this
/// order: the fence first (a node that lost the lease learns so whatever else holds); then a
/// requested run is already run, withdrawn or too old, and a scheduled one paused, too old or
/// already run. A claim that found nothing to refuse and still did not insert lost the insert
/// to a concurrent claim of the same fire time: [`Claim::AlreadyRun`].
pub fn claim_refusal(f: &ClaimFacts) -> Option<Claim> {
    if !f.fenced_ok {
        return Some(Claim::Fenced);
    }
    if f.requested {
        if f.existed {
            return Some(Claim::AlreadyRun);
        }
        if !f.pending {
            return Some(Claim::Withdrawn);
        }
        if f.too_old {
            return Some(Claim::TooOld);
        }
    } else {
        if f.paused {
            return Some(Claim::Paused);
        }
        if f.too_old {
            return Some(Claim::TooOld);
        }
        if f.existed {
            return Some(Claim::AlreadyRun);
        }
    }
    None
}

/// The claim's result: the refusal if there is one, else [`Claim::Won`] if the record was
/// inserted, else [`Claim::AlreadyRun`] (a concurrent claim inserted it first).
pub fn claim_result(f: &ClaimFacts, inserted: bool) -> Claim {
    match claim_refusal(f) {
        Some(refused) => refused,
        None if inserted => Claim::Won,
        None => Claim::AlreadyRun,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> ClaimFacts {
        ClaimFacts {
            fenced_ok: true,
            ..Default::default()
        }
    }

    #[test]
    fn the_fence_comes_first() {
        let f = ClaimFacts {
            fenced_ok: false,
            paused: true,
            too_old: true,
            existed: true,
            ..Default::default()
        };
        assert_eq!(claim_refusal(&f), Some(Claim::Fenced));
    }

    #[test]
    fn a_scheduled_run_is_refused_while_paused_then_when_too_old_then_when_run() {
        let paused = ClaimFacts {
            paused: true,
            too_old: true,
            existed: true,
            ..ok()
        };
        assert_eq!(claim_refusal(&paused), Some(Claim::Paused));
        let old = ClaimFacts {
            too_old: true,
            existed: true,
            ..ok()
        };
        assert_eq!(claim_refusal(&old), Some(Claim::TooOld));
        let run = ClaimFacts {
            existed: true,
            ..ok()
        };
        assert_eq!(claim_refusal(&run), Some(Claim::AlreadyRun));
        assert_eq!(claim_result(&ok(), true), Claim::Won);
        assert_eq!(claim_result(&ok(), false), Claim::AlreadyRun);
    }

    #[test]
    fn a_requested_run_ignores_the_pause_and_needs_its_request() {
        let req = ClaimFacts {
            requested: true,
            paused: true,
            pending: true,
            ..ok()
        };
        assert_eq!(claim_refusal(&req), None);
        let gone = ClaimFacts {
            pending: false,
            ..req
        };
        assert_eq!(claim_refusal(&gone), Some(Claim::Withdrawn));
        let done = ClaimFacts {
            existed: true,
            ..gone
        };
        assert_eq!(claim_refusal(&done), Some(Claim::AlreadyRun));
    }
}
