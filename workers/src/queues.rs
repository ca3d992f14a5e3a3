//! Which queues a worker serves (`CHRONOS_QUEUES`, `CHRONOS_QUEUES_STRICT`) and the order one
//! claim round visits them in.
//!
//! - `a,b,c`: those queues, taken in turn (each round starts one queue further on).
//! - `critical=6,default=3,low=1`: weighted fairness, as asynq does it: each round orders the
//!   queues by weighted random choice without replacement, so the queue claimed from first is
//!   `critical` in 6 rounds of 10, and over time picks are proportional to the weights while
//!   no queue starves.
//! - `a,b,c` with `CHRONOS_QUEUES_STRICT=1`: strict priority, always the order listed; a later
//!   queue gets a slot only while every earlier one has nothing ready.
//! - `*`: every queue, including those that appear while the worker runs (taken in turn).

use chronos_core::model::validate_queue_name;

/// The largest weight accepted: more would only make the arithmetic of the pick overflow-prone
/// without changing the proportions anyone can observe.
pub const MAX_WEIGHT: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Each round starts one queue further on.
    Rotate,
    /// Each round in weighted random order.
    Weighted,
    /// Always the order given.
    Strict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// `*`: every queue, discovered as queues appear.
    all: bool,
    /// Named queues with their weights (1 when none is given), in the order given.
    named: Vec<(String, u32)>,
    order: Order,
}

impl QueueSpec {
    /// Every queue (`*`).
    pub fn all() -> Self {
        QueueSpec { all: true, named: Vec::new(), order: Order::Rotate }
    }

    /// These queues, taken in turn.
    pub fn named(queues: Vec<String>) -> Self {
        QueueSpec { all: false, named: queues.into_iter().map(|q| (q, 1)).collect(), order: Order::Rotate }
    }

    /// Parse the value of `CHRONOS_QUEUES`; `strict` is `CHRONOS_QUEUES_STRICT`. The error says
    /// what to change.
    pub fn parse(spec: &str, strict: bool) -> Result<Self, String> {
        let entries: Vec<&str> = spec.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
        if entries.is_empty() {
            return Err("names no queue: give queue names (`default,reports`), weights (`critical=6,default=3,low=1`) \
                        or `*` for every queue"
                .into());
        }
        if entries.contains(&"*") {
            if entries.len() > 1 {
                return Err("`*` already serves every queue: give `*` alone, or list the queues".into());
            }
            if strict {
                return Err("CHRONOS_QUEUES_STRICT=1 needs an order: list the queues (`critical,default,low`) instead of `*`".into());
            }
            return Ok(Self::all());
        }
        let mut named: Vec<(String, u32)> = Vec::with_capacity(entries.len());
        let mut with_weight = 0;
        for e in entries.iter().copied() {
            let (name, weight) = match e.split_once('=') {
                Some((n, w)) => {
                    with_weight += 1;
                    let w = w
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|w| (1..=MAX_WEIGHT).contains(w))
                        .ok_or_else(|| format!("`{e}`: a weight is a whole number from 1 to {MAX_WEIGHT} (`{}=3`)", n.trim()))?;
                    (n.trim(), w)
                }
                None => (e, 1),
            };
            validate_queue_name(name).map_err(|err| format!("`{e}`: {err}"))?;
            if named.iter().any(|(n, _)| n == name) {
                return Err(format!("`{name}` is listed twice"));
            }
            named.push((name.to_owned(), weight));
        }
        let weighted = with_weight > 0;
        if weighted && with_weight < entries.len() {
            return Err("give every queue a weight (`critical=6,default=3,low=1`) or none".into());
        }
        let order = match (strict, weighted) {
            (true, true) => {
                return Err("CHRONOS_QUEUES_STRICT=1 drains the queues in the order listed; drop the weights \
                            (`critical,default,low`) or unset CHRONOS_QUEUES_STRICT"
                    .into());
            }
            (true, false) => Order::Strict,
            (false, true) => Order::Weighted,
            (false, false) => Order::Rotate,
        };
        Ok(QueueSpec { all: false, named, order })
    }

    /// Serves every queue (`*`).
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// The named queues in the order given (empty for `*`).
    pub fn names(&self) -> Vec<String> {
        self.named.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn order(&self) -> Order {
        self.order
    }

    /// The weight of each named queue, in the order of [`QueueSpec::names`].
    pub fn weights(&self) -> Vec<u32> {
        self.named.iter().map(|(_, w)| *w).collect()
    }

    /// The setting written back in its canonical form (`*`, `a,b`, `a=6,b=1`, `a,b (strict)`).
    pub fn describe(&self) -> String {
        if self.all {
            return "*".into();
        }
        let list: Vec<String> =
            self.named.iter().map(|(n, w)| if self.order == Order::Weighted { format!("{n}={w}") } else { n.clone() }).collect();
        let list = list.join(",");
        if self.order == Order::Strict { format!("{list} (strict)") } else { list }
    }
}

/// The order in which one claim round visits `n` queues: indices into the served list.
/// `weights` belongs to [`Order::Weighted`] (one per queue); `round` counts rounds (rotation);
/// `rand01` gives uniform numbers in [0, 1) (the weighted pick).
pub fn round_order(order: Order, n: usize, weights: &[u32], round: usize, mut rand01: impl FnMut() -> f64) -> Vec<usize> {
    match order {
        Order::Strict => (0..n).collect(),
        Order::Rotate => (0..n).map(|i| (i + round) % n.max(1)).collect(),
        Order::Weighted => {
            // Weighted choice without replacement: pick one by weight, remove it, repeat.
            let mut left: Vec<(usize, u64)> = (0..n).map(|i| (i, weights.get(i).copied().unwrap_or(1) as u64)).collect();
            let mut out = Vec::with_capacity(n);
            while !left.is_empty() {
                let total: u64 = left.iter().map(|(_, w)| w).sum();
                let mut x = (rand01() * total as f64) as u64;
                let mut pick = left.len() - 1;
                for (j, (_, w)) in left.iter().enumerate() {
                    if x < *w {
                        pick = j;
                        break;
                    }
                    x -= w;
                }
                out.push(left.remove(pick).0);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_of_chronos_queues_parse() {
        assert_eq!(QueueSpec::parse("*", false).unwrap(), QueueSpec::all());
        assert_eq!(QueueSpec::parse(" a , b ", false).unwrap(), QueueSpec::named(vec!["a".into(), "b".into()]));
        let w = QueueSpec::parse("critical=6,default=3,low=1", false).unwrap();
        assert_eq!(
            (w.names(), w.weights(), w.order()),
            (vec!["critical".into(), "default".into(), "low".into()], vec![6, 3, 1], Order::Weighted)
        );
        assert_eq!(w.describe(), "critical=6,default=3,low=1");
        let s = QueueSpec::parse("high,low", true).unwrap();
        assert_eq!((s.order(), s.describe()), (Order::Strict, "high,low (strict)".to_owned()));
    }

    #[test]
    fn a_bad_chronos_queues_says_what_to_change() {
        for (spec, strict, says) in [
            ("", false, "names no queue"),
            (" , ", false, "names no queue"),
            ("*,a", false, "`*` alone"),
            ("*", true, "list the queues"),
            ("a=0", false, "from 1 to 1000"),
            ("a=x", false, "`a=x`: a weight"),
            ("a=1001", false, "from 1 to 1000"),
            ("a=2,b", false, "every queue a weight"),
            ("a,a", false, "`a` is listed twice"),
            ("a=2,b=1", true, "drop the weights"),
            ("bad name", false, "`bad name`"),
        ] {
            let e = QueueSpec::parse(spec, strict).unwrap_err();
            assert!(e.contains(says), "{spec:?} strict={strict}: {e}");
        }
    }

    #[test]
    fn strict_and_rotating_orders_are_fixed_and_turn() {
        assert_eq!(round_order(Order::Strict, 3, &[], 5, || 0.0), vec![0, 1, 2]);
        assert_eq!(round_order(Order::Rotate, 3, &[], 0, || 0.0), vec![0, 1, 2]);
        assert_eq!(round_order(Order::Rotate, 3, &[], 4, || 0.0), vec![1, 2, 0]);
        assert!(round_order(Order::Rotate, 0, &[], 4, || 0.0).is_empty());
    }

    #[test]
    fn weighted_rounds_start_with_each_queue_in_proportion_to_its_weight() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand01 = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut first = [0u32; 3];
        for round in 0..10_000 {
            let o = round_order(Order::Weighted, 3, &[6, 3, 1], round, &mut rand01);
            let mut sorted = o.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2], "every queue once per round");
            first[o[0]] += 1;
        }
        for (got, want) in first.iter().zip([6000.0, 3000.0, 1000.0]) {
            assert!((*got as f64 - want).abs() < want * 0.1, "{first:?}");
        }
    }
}
