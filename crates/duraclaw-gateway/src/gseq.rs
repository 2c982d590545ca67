//! The gseqs a gateway's link sends, from its log's seqs.
//!
//! The orchestrator takes a session's events in gseq order, one number
//! after the other, and drops any gseq it holds already as a resend. The
//! gseq is the gateway log's seq, with one exception: a machine crash
//! (power loss, a kernel panic) can roll back the last commits of the
//! gateway's log (SQLite in WAL mode with `synchronous=NORMAL` survives the
//! process's death, not the machine's), while the orchestrator, elsewhere
//! or on a log that kept more, holds those events already. The gateway's
//! next events would then take gseqs the orchestrator has, and be dropped
//! as resends: lost, silently.
//!
//! So the first time a loaded session is forwarded, from the gseq the
//! orchestrator attached after, the gateway checks it against its log's
//! last event *as loaded* (before anything this process logged): when the
//! orchestrator is ahead, every event after that point (those this process
//! logged since its start, which no orchestrator has seen) is numbered
//! after the orchestrator's last gseq. The shift is kept in the session's
//! metadata ([`GseqShift`]), in the same database as the events: a crash
//! that rolls it back rolls back every event after it too, and the next
//! attach finds the orchestrator ahead again.
//!
//! The other way round, an orchestrator that lost part of its own log (a
//! crash of its machine, a backup restored) may attach after a gseq in a
//! stretch the shift skipped: no seq has the next gseq, and it would wait
//! for it forever (it takes gseqs one after the other, and re-attaches at
//! a hole). Its `after_gseq` is its highest, so it holds nothing above it:
//! the seqs that follow go out right after it.

use duraclaw_core::protocol::{Gseq, Seq};
use duraclaw_core::store::GseqShift;

/// A session's seq → gseq mapping: the identity, shifted after each
/// [`GseqShift`]. Strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gseqs {
    /// By `after_seq`, strictly increasing, each `after_gseq` beyond the
    /// gseq its `after_seq` had before it.
    shifts: Vec<GseqShift>,
}

impl Gseqs {
    /// The mapping `shifts` record (as a session's metadata keeps them).
    /// An entry that would not keep the mapping strictly increasing (not
    /// one the gateway writes) is left out.
    pub fn new(shifts: &[GseqShift]) -> Self {
        let mut gseqs = Gseqs::default();
        for s in shifts {
            let last = gseqs.shifts.last().map_or(0, |l| l.after_seq);
            if (gseqs.shifts.is_empty() || s.after_seq > last)
                && s.after_gseq > gseqs.gseq_of(s.after_seq)
            {
                gseqs.shifts.push(*s);
            } else {
                tracing::warn!(
                    after_seq = s.after_seq,
                    after_gseq = s.after_gseq,
                    "a gseq shift out of order is ignored"
                );
            }
        }
        gseqs
    }

    /// The shifts, for the session's metadata.
    pub fn shifts(&self) -> &[GseqShift] {
        &self.shifts
    }

    /// The gseq of the event at `seq` (0 for none).
    pub fn gseq_of(&self, seq: Seq) -> Gseq {
        match self.shifts.iter().rev().find(|s| s.after_seq < seq) {
            Some(s) => s.after_gseq.saturating_add(seq - s.after_seq),
            None => seq,
        }
    }

    /// The last seq whose gseq is at most `gseq`: where a link that holds
    /// everything up to `gseq` resumes.
    pub fn seq_upto(&self, gseq: Gseq) -> Seq {
        // Each run of seqs: (after_seq, after_gseq) up to the next shift.
        let mut seq = 0;
        let mut from = (0, 0);
        for next in self.shifts.iter().map(|s| (s.after_seq, s.after_gseq)) {
            let run = next.0 - from.0;
            let taken = gseq.saturating_sub(from.1).min(run);
            if taken < run {
                return from.0 + taken;
            }
            seq = next.0;
            if gseq <= next.1 {
                return seq;
            }
            from = next;
        }
        seq.max(from.0 + gseq.saturating_sub(from.1))
    }

    /// The orchestrator's highest gseq is `held`, and seq `head`'s gseq
    /// is at most that: seqs after `head` go out after `held`. For the
    /// first forwarder of a loaded session, `head` is the log's end as
    /// loaded and `held` beyond its gseq (a crash took back what the
    /// orchestrator has); for any forwarder, `head` is
    /// [`Gseqs::seq_upto`]`(held)` and `held` inside a stretch of gseqs no
    /// seq has (the orchestrator lost what it had of it: it holds nothing
    /// above `held`, so nothing it holds is renumbered). Returns whether
    /// anything changed.
    pub fn realign(&mut self, head: Seq, held: Gseq) -> bool {
        let at_head = self.gseq_of(head);
        if held < at_head || self.gseq_of(head + 1) == held + 1 {
            return false;
        }
        // A shift at or after `head` describes seqs renumbered now.
        self.shifts.retain(|s| s.after_seq < head);
        if held > at_head {
            self.shifts.push(GseqShift {
                after_seq: head,
                after_gseq: held,
            });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn shift(after_seq: Seq, after_gseq: Gseq) -> GseqShift {
        GseqShift {
            after_seq,
            after_gseq,
        }
    }

    #[test]
    fn without_shifts_the_gseq_is_the_seq() {
        let g = Gseqs::default();
        for seq in [0, 1, 2, 1000] {
            assert_eq!(g.gseq_of(seq), seq);
            assert_eq!(g.seq_upto(seq), seq);
        }
    }

    #[test]
    fn a_shift_numbers_what_follows_after_the_orchestrators_last() {
        let mut g = Gseqs::default();
        assert!(!g.realign(10, 10), "not ahead: nothing to do");
        assert!(!g.realign(10, 7), "behind: nothing to do");
        assert!(g.realign(10, 25));
        assert_eq!(g.gseq_of(10), 10);
        assert_eq!(g.gseq_of(11), 26);
        assert_eq!(g.gseq_of(14), 29);
        // The orchestrator's own gseqs 11..=25 are no seq of ours: it
        // resumes after seq 10 anywhere in them.
        assert_eq!(g.seq_upto(10), 10);
        assert_eq!(g.seq_upto(11), 10);
        assert_eq!(g.seq_upto(25), 10);
        assert_eq!(g.seq_upto(26), 11);
        assert_eq!(g.seq_upto(29), 14);
        assert_eq!(g.seq_upto(5), 5);
    }

    #[test]
    fn a_second_crash_shifts_again_and_one_before_the_last_shift_replaces_it() {
        let mut g = Gseqs::default();
        assert!(g.realign(10, 25));
        // Seq 20 went out as 35; the orchestrator got up to 40.
        assert!(g.realign(20, 40));
        assert_eq!(g.gseq_of(20), 35);
        assert_eq!(g.gseq_of(21), 41);
        assert_eq!(g.seq_upto(38), 20);
        // A crash took back the first shift's commit and what followed:
        // the log is at seq 8 again.
        assert!(g.realign(8, 50));
        assert_eq!(g.shifts(), &[shift(8, 50)]);
        assert_eq!(g.gseq_of(9), 51);
    }

    #[test]
    fn an_orchestrator_inside_a_stretch_no_seq_has_gets_what_follows_next() {
        let mut g = Gseqs::default();
        assert!(g.realign(10, 25));
        assert!(g.realign(20, 40));
        // It holds up to 30 (of seq 15..=20's 30..=35): nothing to do.
        assert!(!g.realign(g.seq_upto(30), 30));
        // It holds up to 37, in the stretch 36..=40: seq 21 goes out as 38.
        assert!(g.realign(g.seq_upto(37), 37));
        assert_eq!(g.gseq_of(21), 38);
        assert_eq!(g.gseq_of(20), 35);
        // It holds up to 10 only: back to the identity.
        assert!(g.realign(g.seq_upto(10), 10));
        assert_eq!(g.shifts(), &[]);
        assert_eq!(g.gseq_of(11), 11);
    }

    #[test]
    fn shifts_out_of_order_are_left_out() {
        let g = Gseqs::new(&[shift(10, 25), shift(5, 100), shift(20, 30)]);
        assert_eq!(g.shifts(), &[shift(10, 25)]);
        let g = Gseqs::new(&[shift(3, 2)]);
        assert_eq!(g.shifts(), &[]);
    }

    proptest! {
        #[test]
        fn the_mapping_increases_and_seq_upto_inverts_it(
            steps in proptest::collection::vec((0u64..50, 1u64..50, 0u64..300), 0..6),
            probe in 0u64..600,
        ) {
            let mut g = Gseqs::default();
            let mut head = 0;
            for (grow, ahead, lost_to) in steps {
                // A crash: the orchestrator ahead of the loaded end.
                head += grow;
                let held = g.gseq_of(head) + ahead;
                g.realign(head, held);
                prop_assert_eq!(g.gseq_of(head + 1), held + 1);
                // An orchestrator that lost what it had after `lost_to`.
                let at = g.seq_upto(lost_to);
                g.realign(at, lost_to);
                if lost_to >= g.gseq_of(at) {
                    prop_assert_eq!(g.gseq_of(at + 1), lost_to + 1);
                }
            }
            let g = Gseqs::new(g.shifts());
            for seq in 1..400 {
                prop_assert!(g.gseq_of(seq) > g.gseq_of(seq - 1));
                prop_assert_eq!(g.seq_upto(g.gseq_of(seq)), seq);
            }
            // The last seq at or under the probe, by brute force.
            let expected = (0..700).take_while(|s| g.gseq_of(*s) <= probe).last().unwrap();
            prop_assert_eq!(g.seq_upto(probe), expected);
        }
    }
}
